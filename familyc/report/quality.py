"""The family's quality on held-out text: loss per member, across each growth, KL between neighbours.

Evaluating loads models, so results are cached in RUN_DIR/report/quality.json, keyed by the sha256
of the weights' files and of the held-out text: a report on an unchanged run re-evaluates nothing,
and any retrained member is evaluated again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from familyc.checkpoint.sidecar import SIDECAR_FILES, SidecarKind, sidecar_files
from familyc.enums import COMPLETED, HeldoutPart
from familyc.errors import CheckpointError
from familyc.execute.rundir import RunDir, sidecar_kind
from familyc.execute.state import RunState
from familyc.files import atomic_write
from familyc.plan.ir import Plan, Step

CACHE_FILE = "quality.json"
CACHE_VERSION = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Weights:
    """A checkpoint to evaluate, as the member whose shape it has."""

    label: str
    member: str
    path: Path
    kind: SidecarKind

    @property
    def sidecar_name(self) -> str:
        return SIDECAR_FILES[self.kind]

    def digest(self) -> str:
        """The key of the evaluation cache: the hash of the sidecar's file hashes."""
        files = sidecar_files(self.path, self.kind)
        return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def weights_of(plan: Plan, run: RunDir, step: Step) -> Weights:
    return Weights(label=step.id, member=step.member, path=run.weights(plan, step), kind=sidecar_kind(step))


def available_weights(plan: Plan, run: RunDir, state: RunState) -> dict[str, Weights]:
    """Completed members, baselines and expansions, by step id."""
    out = {}
    for step in plan.all_steps():
        if state.steps.get(step.id) is None or state.step(step.id).status != COMPLETED:
            continue
        weights = weights_of(plan, run, step)
        if (weights.path / weights.sidecar_name).is_file():
            out[step.id] = weights
    return out


class Evaluator:
    """Held-out loss and KL with a cache; models are loaded once each and kept while needed."""

    def __init__(self, plan: Plan, run: RunDir, heldout_dir: Path, tokenizer_dir: Path, *, max_tokens: int,
                 part: HeldoutPart = "all") -> None:
        from familyc.backend.evaluate import load_heldout

        seq_len = plan.architecture.seq_len
        self.plan, self.run = plan, run
        self.heldout = load_heldout(heldout_dir, tokenizer_dir, seq_len=seq_len, max_tokens=max_tokens, part=part)
        text_digest = hashlib.sha256(self.heldout.windows.numpy().tobytes()).hexdigest()
        self.cache_path = cache_path(run)
        self.cache: dict[str, Any] = {"version": CACHE_VERSION, "heldout": text_digest, "loss": {}, "kl": {}}
        if self.cache_path.is_file():
            try:
                cached = json.loads(self.cache_path.read_text())
                if cached.get("version") == CACHE_VERSION and cached.get("heldout") == text_digest:
                    self.cache = cached
            except (OSError, json.JSONDecodeError):
                pass
        self._models: dict[str, Any] = {}

    def _model(self, weights: Weights) -> Any:
        import torch

        from familyc.backend.evaluate import load_member

        if weights.label not in self._models:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._models[weights.label] = load_member(self.plan, weights.member, weights.path, device=device)
        return self._models[weights.label]

    def loss(self, weights: Weights) -> float:
        from familyc.backend.evaluate import heldout_loss

        key = weights.digest()
        if key not in self.cache["loss"]:
            self.cache["loss"][key] = heldout_loss(self._model(weights), self.heldout)
            self._save()
        return float(self.cache["loss"][key])

    def kl(self, small: Weights, large: Weights) -> tuple[float, float]:
        from familyc.backend.evaluate import kl_both_ways

        key = f"{small.digest()}:{large.digest()}"
        if key not in self.cache["kl"]:
            self.cache["kl"][key] = list(kl_both_ways(self._model(small), self._model(large), self.heldout))
            self._save()
        small_large, large_small = self.cache["kl"][key]
        return float(small_large), float(large_small)

    def release(self, label: str) -> None:
        self._models.pop(label, None)

    def _save(self) -> None:
        atomic_write(self.cache_path, json.dumps(self.cache, indent=1, sort_keys=True) + "\n")


def cache_path(run: RunDir) -> Path:
    return run.report_dir / CACHE_FILE


def cached_heldout_loss(plan: Plan, run: RunDir, step: Step) -> float | None:
    """The held-out loss `familyc report` measured for these very weights (its cache), None if it did not."""
    try:
        cache = json.loads(cache_path(run).read_text(encoding="utf-8"))
        value = cache["loss"][weights_of(plan, run, step).digest()] if cache.get("version") == CACHE_VERSION else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, CheckpointError):
        return None
    return float(value) if isinstance(value, int | float) else None
