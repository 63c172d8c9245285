"""AdamW's moments through a growth step (`optimizer: carry`): the recipes of the grown member's moments.

The source stage's final moments (familyc.backend.moments: `state.<fqn>.exp_avg`, `.exp_avg_sq`, `.step`)
go through the same index maps as the weights (familyc.expand.operators, with `moment` 1 and 2):

    an entry the weights copy unchanged      its moments copied unchanged
    an entry the weights scale by s          exp_avg x s, exp_avg_sq x s^2 (s: 1/c for fpi, aki and exact;
                                             the share for split, paired and zero; the RMSNorm rescale)
    an entry the weights make new            both moments zero (random readers, zero writers, the
                                             paired perturbations, noise, a zero_insert block)
    the step count                           each tensor keeps the count of the tensor it is read from

Scaling the first moment by s and the second by s^2 keeps Adam's normalised update m / sqrt(v) of an entry
what it was in the source: the grown entry moves by as much as its source would have, while its weight is s
times its source's (so, relative to its weight, 1/s times as much). An entry the weights make new starts with
zero moments but the kept step count, so bias correction is about 1 and its first update is
(1 - beta1) / sqrt(1 - beta2) x lr (0.45 lr at betas 0.9, 0.95) where a fresh AdamW's is lr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from familyc.backend.moments import MOMENT_NAMES, STEP_NAME, moment_key
from familyc.checkpoint.writer import Getter, TensorRecipe
from familyc.expand.operators import Expansion
from familyc.shape import ModelShape

STEP_FALLBACK = "tok_embeddings.weight"
"""The tensor whose step count a target with no source (a zero_insert block's zero writers) takes: every
parameter of one AdamW group takes every step, so any tensor's count is the same."""


class MomentRecipes:
    """The growth step's recipes for AdamW's state (familyc.expand.stream.Recipes)."""

    def __init__(self, src: ModelShape, dst: ModelShape, *, width: str, depth: str, seed: int) -> None:
        self._weights = Expansion(src, dst, width=width, depth=depth, seed=seed)
        self._moments = {name: Expansion(src, dst, width=width, depth=depth, seed=seed, moment=order)
                         for order, name in enumerate(MOMENT_NAMES, start=1)}

    def source_keys(self) -> dict[str, tuple[int, ...]]:
        return _state_keys(self._weights.source_keys())

    def target_keys(self) -> dict[str, tuple[int, ...]]:
        return _state_keys(self._weights.target_keys())

    def targets(self, dtype: torch.dtype) -> Iterator[TensorRecipe]:
        """Per parameter, in the target's key order: its step count, then its two moments."""
        moments = {name: {t.key: t for t in e.targets(dtype)} for name, e in self._moments.items()}
        for weight in self._weights.targets(dtype):
            counted = moment_key(weight.sources[0] if weight.sources else STEP_FALLBACK, STEP_NAME)
            yield TensorRecipe(key=moment_key(weight.key, STEP_NAME), shape=(), sources=(counted,),
                               compute=_copied(counted))
            for name in MOMENT_NAMES:
                recipe = moments[name][weight.key]
                yield TensorRecipe(key=moment_key(weight.key, name), shape=recipe.shape,
                                   sources=tuple(moment_key(k, name) for k in recipe.sources),
                                   compute=_renamed(recipe, name))


def _state_keys(weights: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for fqn, shape in weights.items():
        out[moment_key(fqn, STEP_NAME)] = ()
        for name in MOMENT_NAMES:
            out[moment_key(fqn, name)] = shape
    return out


def _copied(key: str) -> Callable[[Getter], torch.Tensor]:
    return lambda get: get(key).clone()


def _renamed(recipe: TensorRecipe, name: str) -> Callable[[Getter], torch.Tensor]:
    """The weight recipe, reading the moment `name` of each source parameter instead of the parameter."""
    return lambda get: recipe.compute(lambda fqn: get(moment_key(fqn, name)))
