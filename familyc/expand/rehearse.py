"""A growth step rehearsed (`familyc rehearse`): the keys and shapes it reads against what its source stage
saves, and those it writes against what the grown stage loads, on fake tensors; the moments too with
`optimizer: carry`. The stages' keys come from their own rehearsal (familyc.backend.rehearse), which reads them
off torchtitan's model and optimizer as its checkpoint saves and loads them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from familyc.backend.rehearse import TrainRehearsal
from familyc.expand.moments import MomentRecipes
from familyc.expand.operators import Expansion
from familyc.plan.ir import Plan
from familyc.plan.steps import ExpandStep


@dataclass(frozen=True, kw_only=True, slots=True)
class GrowthRehearsal:
    """One growth step rehearsed on fake tensors: what it reads against what the source stage saves, what it
    writes against what the grown stage loads (the weights, and AdamW's moments when it carries them)."""

    step: str
    problems: tuple[str, ...]
    tensors: int
    """Tensors the step writes."""
    computed: int
    """Of those, how many were computed on fake tensors (the others read values; see `_computed`)."""
    seconds: float


def _compare(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], *, what: str,
             expected_by: str, found_by: str) -> list[str]:
    """Problems of `found` against `expected` (keys and shapes), at most 3 of each kind named."""
    problems = []
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    wrong = [f"{k} {list(found[k])} (not {list(expected[k])})"
             for k in expected if k in found and found[k] != expected[k]]
    for keys, verb in ((missing, f"{expected_by} needs, {found_by} has not"),
                       (extra, f"{found_by} has, {expected_by} does not know"),
                       (wrong, f"{found_by} shapes differ from {expected_by}'s")):
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            problems.append(f"{what}: {len(keys)} {'key' if len(keys) == 1 else 'keys'} {verb}: {shown}")
    return problems


def _computed(recipes: Any, source: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[int, ...]], int, list[str]]:
    """Every target of `recipes` at the shape it is written at, computed on fake source tensors where the recipe
    needs no values (copies, gathers, zeros); a recipe that reads values (the symmetry-breaking operators scale
    by the source's std and draw masks) keeps its declared shape, which the checkpoint writer enforces on the
    real tensor. (targets, how many were computed, problems)."""
    from torch._subclasses.fake_tensor import DataDependentOutputException

    out: dict[str, tuple[int, ...]] = {}
    problems: list[str] = []
    computed = 0
    with FakeTensorMode(allow_non_fake_inputs=True):
        tensors = {key: torch.empty(shape, dtype=torch.float32) for key, shape in source.items()}
        for recipe in recipes.targets(torch.float32):
            out[recipe.key] = tuple(recipe.shape)
            try:
                value = recipe.compute(tensors.__getitem__)
            except DataDependentOutputException:
                continue
            except Exception as exc:  # an operator that cannot run is the finding itself
                problems.append(f"{recipe.key}: its recipe fails: {type(exc).__name__}: {exc}")
                continue
            computed += 1
            if tuple(value.shape) != tuple(recipe.shape):
                problems.append(f"{recipe.key}: computed at {list(value.shape)}, declared {list(recipe.shape)}")
    return out, computed, problems


def rehearse_growth(plan: Plan, step: ExpandStep, source: TrainRehearsal | None,
                    target: TrainRehearsal | None) -> GrowthRehearsal:
    """Rehearse one growth step against the rehearsed stages it joins (None: that stage was not rehearsed, and
    only the recipes are checked). The expansion is the one `familyc apply` runs, without its noise (noise
    changes values, never shapes, and needs real values to scale by)."""
    started = time.perf_counter()
    src, dst = plan.shape(step.source), plan.shape(step.member)
    source_name, target_name = f"the {step.source} stage's checkpoint", f"the {step.member} stage's model"
    weights = Expansion(src, dst, width=step.width, depth=step.depth, seed=step.seed)
    computed, counted, problems = _computed(weights, weights.source_keys())
    if source is not None:
        problems += _compare(weights.source_keys(), source.model_keys, what="weights read",
                             expected_by=step.id, found_by=source_name)
    if target is not None:
        problems += _compare(target.model_keys, computed, what="weights written",
                             expected_by=target_name, found_by=step.id)
    written = len(computed)
    if step.optimizer_state == "carry":
        moments = MomentRecipes(src, dst, width=step.width, depth=step.depth, seed=step.seed)
        computed, more, found = _computed(moments, moments.source_keys())
        counted += more
        problems += found
        if source is not None:
            problems += _compare(moments.source_keys(), source.optimizer_keys, what="moments read",
                                 expected_by=step.id, found_by=f"the {step.source} stage's optimizer")
        if target is not None:
            problems += _compare(target.optimizer_keys, computed, what="moments written",
                                 expected_by=f"the {step.member} stage's optimizer", found_by=step.id)
        written += len(computed)
    return GrowthRehearsal(step=step.id, problems=tuple(problems), tensors=written, computed=counted,
                           seconds=time.perf_counter() - started)
