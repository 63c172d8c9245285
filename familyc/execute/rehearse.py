"""familyc rehearse: every training stage and growth step of a plan run once on fake tensors on this machine
(familyc/backend/rehearse.py), set against the plan's predictions.

A stage fits when its rehearsed peak is within the plan's usable memory per device (the accelerator's memory
less `cluster.memory_headroom`, which is kept for what a rehearsal on a CPU cannot see: the CUDA context, the
caching allocator, NCCL). A growth step passes when what it reads is what its source stage saves and what it
writes is what the grown stage loads, key for key and shape for shape. Any stage that does not fit, a stage
whose rehearsal fails, or a growth step with a problem makes the rehearsal fail (exit 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from familyc import units
from familyc.errors import UsageError
from familyc.plan.ir import Plan
from familyc.plan.steps import ExpandStep, TrainStep
from familyc.render import Document, Table

if TYPE_CHECKING:
    from familyc.backend.rehearse import TrainRehearsal
    from familyc.expand.rehearse import GrowthRehearsal

PLANNED_PARTS = ("parameters", "gradients", "optimizer", "working", "activations", "logits", "temporaries")


@dataclass(frozen=True, kw_only=True, slots=True)
class StageResult:
    step: TrainStep
    rehearsal: TrainRehearsal | None
    error: str | None = None

    @property
    def fits(self) -> bool:
        return self.rehearsal is not None and self.rehearsal.peak <= self.step.memory.capacity

    def rehearsed_parts(self) -> dict[str, int]:
        """The rehearsal's peak in the plan's parts: the loss's saved tensors (`logits`) apart from the other
        activations (the blocks' and the embedding's output), buffers and inputs as `other`."""
        r = self.rehearsal
        assert r is not None
        parts = {name: r.parts[name] for name in ("parameters", "gradients", "optimizer", "working", "temporaries")}
        parts["logits"] = r.logits
        parts["activations"] = r.parts["activations"] - r.logits
        parts["other"] = r.peak - sum(parts.values())
        return {name: parts[name] for name in (*PLANNED_PARTS, "other")}


@dataclass(frozen=True, kw_only=True, slots=True)
class GrowthResult:
    step: ExpandStep
    rehearsal: GrowthRehearsal | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.rehearsal is not None and not self.rehearsal.problems


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanRehearsal:
    plan: Plan
    stages: tuple[StageResult, ...]
    growths: tuple[GrowthResult, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(s.fits for s in self.stages) and all(g.ok for g in self.growths)


def selected_steps(plan: Plan, only: Sequence[str]) -> tuple[list[TrainStep], list[ExpandStep]]:
    """The progressive family's steps, or those named (a training stage or a growth step; a growth step is
    checked against the stages it joins only where they are rehearsed too)."""
    steps = plan.steps
    known = {s.id for s in steps}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise UsageError(f"--step {unknown[0]}: the plan has no such step (its steps: {', '.join(sorted(known))})")
    chosen = [s for s in steps if not only or s.id in only]
    return [s for s in chosen if isinstance(s, TrainStep)], [s for s in chosen if isinstance(s, ExpandStep)]


def rehearse_plan(plan: Plan, *, only: Sequence[str] = (), progress: Callable[[str], None] = lambda _: None
                  ) -> PlanRehearsal:
    from familyc.backend.rehearse import rehearse_train
    from familyc.expand.rehearse import rehearse_growth

    started = time.perf_counter()
    trains, expands = selected_steps(plan, only)
    stages: list[StageResult] = []
    by_member: dict[str, TrainRehearsal] = {}
    for index, train in enumerate(trains, start=1):
        progress(f"[{index}/{len(trains)}] {train.id}: {train.member} at {train.devices} ranks, micro-batch "
                 f"{train.local_batch_size}, {train.precision}, activation checkpointing "
                 f"{train.activation_checkpointing}")
        try:
            rehearsal = rehearse_train(plan, train)
        except Exception as exc:  # the rehearsal's finding: this stage would not start
            stages.append(StageResult(step=train, rehearsal=None, error=f"{type(exc).__name__}: {exc}"))
            continue
        stages.append(StageResult(step=train, rehearsal=rehearsal))
        by_member.setdefault(train.member, rehearsal)
    growths: list[GrowthResult] = []
    for expand in expands:
        source = by_member.get(expand.source) if expand.source is not None else None
        try:
            growth = rehearse_growth(plan, expand, source, by_member.get(expand.member))
        except Exception as exc:
            growths.append(GrowthResult(step=expand, rehearsal=None, error=f"{type(exc).__name__}: {exc}"))
            continue
        growths.append(GrowthResult(step=expand, rehearsal=growth))
    return PlanRehearsal(plan=plan, stages=tuple(stages), growths=tuple(growths),
                         seconds=time.perf_counter() - started)


def _ratio(rehearsed: float, planned: float) -> str:
    return f"{rehearsed / planned:.3f}" if planned else "-"


def rehearsal_document(result: PlanRehearsal) -> Document:
    plan = result.plan
    c = plan.cluster
    usable = next(s.memory.capacity for s in plan.train_steps())  # the compiler's: every stage has the same
    stage_rows = []
    for s in result.stages:
        step, r = s.step, s.rehearsal
        member = plan.member(step.member)
        common = (step.id, step.member, str(step.devices), str(step.local_batch_size), step.activation_checkpointing,
                  units.gib(step.memory.total))
        if r is None:
            stage_rows.append((*common, "-", "-", units.gib(step.memory.capacity), "FAILED",
                               units.flops(member.flops_per_token), "-"))
            continue
        stage_rows.append((*common, units.gib(r.peak), _ratio(r.peak, step.memory.total),
                           units.gib(step.memory.capacity), "yes" if s.fits else "NO",
                           units.flops(member.flops_per_token), units.flops(r.flops_per_token)))
    stages = Table(title="Training stages (bytes per device of rank 0 at the step's peak)",
                   headers=("step", "member", "devices", "micro-batch", "act. ckpt", "planned", "rehearsed",
                            "ratio", "usable", "fits", "FLOPs/token planned", "counted"),
                   rows=tuple(stage_rows), right=frozenset({2, 3, 5, 6, 7, 8, 10, 11}))
    part_rows = []
    for s in result.stages:
        if s.rehearsal is None:
            continue
        rehearsed = s.rehearsed_parts()
        for part in (*PLANNED_PARTS, "other"):
            planned = getattr(s.step.memory, part) if part != "other" else 0
            part_rows.append((s.step.id, part, units.gib(planned) if part != "other" else "-",
                              units.gib(rehearsed[part]), _ratio(rehearsed[part], planned)))
    parts = Table(title="Memory by part (per device)", headers=("step", "part", "planned", "rehearsed", "ratio"),
                  rows=tuple(part_rows), right=frozenset({2, 3, 4}))
    growth_rows = []
    for g in result.growths:
        expand = g.step
        if g.rehearsal is None:
            growth_rows.append((expand.id, f"{expand.source} -> {expand.member}", expand.optimizer_state, "-", "-",
                                f"FAILED: {g.error}"))
            continue
        growth_rows.append((expand.id, f"{expand.source} -> {expand.member}", expand.optimizer_state,
                            str(g.rehearsal.tensors), str(g.rehearsal.computed),
                            "; ".join(g.rehearsal.problems) or "loads"))
    growths = Table(title="Growth steps (keys and shapes read and written)",
                    headers=("step", "growth", "optimizer", "tensors", "computed", "result"),
                    rows=tuple(growth_rows), right=frozenset({3, 4}), wrap=frozenset({5}))
    failed = [s for s in result.stages if not s.fits]
    bad = [g for g in result.growths if not g.ok]
    conclusion: list[str] = []
    for s in failed:
        if s.rehearsal is None:
            conclusion.append(f"{s.step.id}: the rehearsal failed: {s.error}")
        else:
            conclusion.append(f"{s.step.id}: does not fit: {units.gib(s.rehearsal.peak)} rehearsed, "
                              f"{units.gib(s.step.memory.capacity)} usable per device")
    for g in bad:
        conclusion.append(f"{g.step.id}: " + (f"the rehearsal failed: {g.error}" if g.rehearsal is None
                                              else "; ".join(g.rehearsal.problems)))
    if not conclusion:
        conclusion.append(f"every rehearsed stage fits and every growth step loads ({len(result.stages)} stages, "
                          f"{len(result.growths)} growth steps, {units.seconds(result.seconds)})")
    return Document(
        title=f"Rehearsal of plan {plan.plan_id[:12]} ({plan.family.name})",
        facts=("each stage: one process as rank 0 of its world (a fake process group), torchtitan's own "
               "parallelization, optimizer and loss, two optimizer steps on fake tensors, eager",
               f"accelerator: {c.accelerator_name}, {units.gib(c.memory_bytes)}, "
               f"{units.percent(c.memory_headroom)} kept free for the CUDA context, the allocator and NCCL: "
               f"{units.gib(usable)} usable",
               "FLOPs counted by torch's FlopCounterMode on one micro-batch (attention's backward by the MFU "
               "convention); the plan's formula also counts 6 per RMSNorm weight, which does no matmul"),
        tables=(stages, parts, growths),
        conclusion=tuple(conclusion),
        notes=("not rehearsed: torch.compile (compiled blocks save less than eager), the GPU's own memory (CUDA "
               "context, allocator rounding and fragmentation, NCCL buffers), the data loader, checkpoint saves",
               *(("a stage on one rank runs without FSDP2, in bf16 by autocast: the rehearsal counts autocast's bf16 "
                  "weight copies among the activations, the plan as its working set",)
                 if any(s.step.devices == 1 for s in result.stages) else ())),
    )


def rehearsal_data(result: PlanRehearsal) -> dict[str, Any]:
    """The rehearsal as JSON (`familyc rehearse --format json`)."""
    stages = []
    for s in result.stages:
        entry: dict[str, Any] = {"step": s.step.id, "member": s.step.member, "devices": s.step.devices,
                                 "micro_batch": s.step.local_batch_size, "grad_accum": s.step.grad_accum,
                                 "activation_checkpointing": s.step.activation_checkpointing,
                                 "planned": {p: getattr(s.step.memory, p) for p in PLANNED_PARTS} | {
                                     "total": s.step.memory.total},
                                 "capacity": s.step.memory.capacity, "fits": s.fits, "error": s.error,
                                 "flops_per_token_planned": result.plan.member(s.step.member).flops_per_token}
        if s.rehearsal is not None:
            entry["rehearsed"] = s.rehearsed_parts() | {"total": s.rehearsal.peak}
            entry["tracker"] = dict(s.rehearsal.parts)
            entry["activations_per_block"] = s.rehearsal.activations_per_block
            entry["flops_per_token_counted"] = s.rehearsal.flops_per_token
            entry["seconds"] = round(s.rehearsal.seconds, 3)
        stages.append(entry)
    growths = [{"step": g.step.id, "source": g.step.source, "member": g.step.member,
                "optimizer": g.step.optimizer_state, "ok": g.ok, "error": g.error,
                "problems": list(g.rehearsal.problems) if g.rehearsal else [],
                "tensors": g.rehearsal.tensors if g.rehearsal else 0,
                "computed": g.rehearsal.computed if g.rehearsal else 0} for g in result.growths]
    return {"plan_id": result.plan.plan_id, "family": result.plan.family.name, "ok": result.ok,
            "seconds": round(result.seconds, 3), "stages": stages, "growths": growths}
