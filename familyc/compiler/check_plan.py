"""Pass 8, check_plan: what only the lowered, costed plan can show.

Needs: `plan`. Errors (SpecError, located at the cluster or training key to change): a step
that does not fit in device memory even with full activation checkpointing and one sequence
per micro-batch. Warnings (kept in the plan, shown by `plan` and `show`): stages so short
that the estimate is mostly start-up, activation checkpointing that slows a stage, growth
steps that are only approximately function-preserving, and width growth by a copying operator without
noise (its copies never diverge: measured on the CPU benchmark, BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import replace

from familyc import units
from familyc.compiler.state import Compilation
from familyc.errors import Diagnostic, SpecError
from familyc.growth.feasibility import BREAKING
from familyc.plan.ir import MemberPlan
from familyc.plan.steps import ExpandStep, TrainStep

MIN_USEFUL_STEPS = 10


def check_plan(c: Compilation) -> Compilation:
    plan = c.plan
    assert plan is not None and c.spec is not None
    problems: list[Diagnostic] = []
    warnings = list(plan.warnings)
    trains = [*plan.train_steps(), *(b.train for b in plan.baseline.members)]
    unfit: dict[str, list[TrainStep]] = {}
    for train in trains:
        if not train.memory.fits:
            unfit.setdefault(train.member, []).append(train)
    where = ("cluster", "gpus_per_node") if "gpus_per_node" in c.doc.data["cluster"] else ("cluster",)
    for member, steps in unfit.items():
        worst = max(steps, key=lambda s: s.memory.total)
        mem = worst.memory
        problems.append(c.doc.diagnostic(
            where,
            f"member {member} does not fit in memory ({', '.join(s.id for s in steps)}): it needs "
            f"{units.gib(mem.total)} per device with {worst.activation_checkpointing} activation checkpointing and "
            f"{worst.local_batch_size} sequence{'s' if worst.local_batch_size != 1 else ''} per micro-batch; "
            f"{units.gib(mem.capacity)} are usable",
            hint="add devices (FSDP2 shards parameters, gradients and optimizer state over all of them), use a larger "
            "accelerator, or shorten architecture.seq_len", code="memory"))
    for step in plan.steps:
        if isinstance(step, TrainStep):
            if step.num_steps < MIN_USEFUL_STEPS:
                warnings.append(f"{step.id}: only {step.num_steps} optimizer steps; its time is mostly start-up")
            if step.activation_checkpointing != "none":
                warnings.append(f"{step.id}: {step.activation_checkpointing} activation checkpointing is on to fit in "
                                "memory; recompute makes the stage slower than the MFU assumes")
        elif isinstance(step, ExpandStep):
            if step.exactness != "exact":
                warnings.append(f"{step.id}: approximate, {'; '.join(step.reasons)}")
            if step.noise == 0 and step.width not in BREAKING and _widens(plan.member(step.source),
                                                                          plan.member(step.member)):
                warnings.append(
                    f"{step.id}: grows the width by copying units with noise 0: copies receive identical gradients "
                    f"and stay identical in training ({step.width} copies every unit it adds), so the new width adds "
                    "no capacity; use width zero, split or paired (exact, and nothing stays symmetric), or set this "
                    "growth step's noise > 0 (the step becomes approximate; BENCHMARKS.md measures how slowly its "
                    "copies diverge)")
    if problems:
        raise SpecError(problems)
    return replace(c, plan=replace(plan, warnings=tuple(dict.fromkeys(warnings))))


def _widens(src: MemberPlan, dst: MemberPlan) -> bool:
    return (dst.dim, dst.n_heads, dst.ffn_dim) != (src.dim, src.n_heads, src.ffn_dim)
