"""What changed between two plans: per step and in total, with the cost deltas.

Steps are matched by their stable ids (train-8B, expand-4B-8B, baseline-8B), so renaming a
member shows as one step removed and one added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from familyc import units
from familyc.plan.ir import Plan, Step
from familyc.plan.steps import TrainStep
from familyc.records import to_data
from familyc.render import Document, Table

# The fields of a step worth naming when they change, and how to write them.
Format = Callable[[float], str]
"""How a number is written (familyc.units)."""
_STEP_FIELDS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("source", str), ("phase", str), ("tokens", units.count), ("num_steps", lambda v: f"{v:,}"),
    ("batch_tokens", units.count),
    ("local_batch_size", str), ("grad_accum", str), ("devices", str), ("activation_checkpointing", str),
    ("max_lr", units.lr), ("width", str), ("depth", str), ("gqa", str), ("noise", str), ("exactness", str),
    ("lr_after", lambda v: v.describe()), ("optimizer_state", str),
    ("eval", lambda v: "none" if v is None else f"every {v.interval} steps, {units.count(v.tokens)} tokens"),
)
_DESCRIBED = frozenset({"eval", "lr_after"})
"""Fields named only when their description changes."""
_COST_FIELDS = ("flops", "predicted_seconds", "gpu_hours", "cost_usd")


@dataclass(frozen=True, kw_only=True, slots=True)
class StepChange:
    id: str
    change: str
    """added, removed or changed."""
    details: tuple[str, ...]
    deltas: dict[str, float]
    """New minus old for each cost field (a removed step counts negative)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanDiff:
    old: Plan
    new: Plan
    settings: tuple[str, ...]
    members: tuple[tuple[str, str, str, str], ...]
    steps: tuple[StepChange, ...]

    @property
    def empty(self) -> bool:
        return not (self.settings or self.members or self.steps) and self.old.plan_id == self.new.plan_id


def _cost(step: Step | None, name: str) -> float:
    return 0.0 if step is None else float(getattr(step, name))


def _settings(old: Plan, new: Plan) -> list[str]:
    out = []
    pairs = (("spec", old.spec.sha256[:12], new.spec.sha256[:12]),
             ("familyc", old.familyc_version, new.familyc_version),
             ("cost model", old.cost_model.version, new.cost_model.version))
    for what, before, after in pairs:
        if before != after:
            out.append(f"{what}: {before} -> {after}")
    for section in ("cluster", "architecture", "training", "budget", "data", "tokenizer"):
        before, after = to_data(getattr(old, section)), to_data(getattr(new, section))
        for key in after:
            if before.get(key) != after[key]:
                out.append(f"{section}.{key}: {before.get(key)} -> {after[key]}")
    return out


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    members = []
    old_members = {m.name: to_data(m) for m in old.members}
    new_members = {m.name: to_data(m) for m in new.members}
    for name in dict.fromkeys(list(old_members) + list(new_members)):
        before, after = old_members.get(name), new_members.get(name)
        if before is None or after is None:
            members.append((name, "member", "-" if before is None else "present", "-" if after is None else "present"))
            continue
        for key, value in after.items():
            if before.get(key) != value:
                members.append((name, key, str(before.get(key)), str(value)))
    changes = []
    old_steps, new_steps = ({s.id: s for s in p.all_steps()} for p in (old, new))
    for step_id in dict.fromkeys(list(new_steps) + list(old_steps)):
        before, after = old_steps.get(step_id), new_steps.get(step_id)
        deltas = {f: _cost(after, f) - _cost(before, f) for f in _COST_FIELDS}
        if before is None or after is None:
            change = "added" if before is None else "removed"
            changes.append(StepChange(id=step_id, change=change, details=(), deltas=deltas))
            continue
        details = []
        for name, fmt in _STEP_FIELDS:
            if not hasattr(after, name) or getattr(before, name, None) == getattr(after, name):
                continue
            old_text, new_text = fmt(getattr(before, name)), fmt(getattr(after, name))
            if name in _DESCRIBED and old_text == new_text:
                continue  # what changed is derived (an evaluation's count and FLOPs follow the stage's steps)
            details.append(f"{name} {old_text} -> {new_text}")
        if isinstance(before, TrainStep) and isinstance(after, TrainStep) and before.schedule != after.schedule:
            details.append("LR schedule")
        if details or any(deltas.values()):
            changes.append(StepChange(id=step_id, change="changed", details=tuple(details), deltas=deltas))
    return PlanDiff(old=old, new=new, settings=tuple(_settings(old, new)), members=tuple(members), steps=tuple(changes))


def _signed(value: float, fmt: Format) -> str:
    return ("+" if value > 0 else "") + fmt(value)


def _delta_row(name: str, before: float, after: float, fmt: Format) -> tuple[str, ...]:
    change = after - before
    relative = units.signed_percent(change / before) if before else ("" if not after else "new")
    return (name, fmt(before), fmt(after), _signed(change, fmt), relative)


def diff_document(d: PlanDiff) -> Document:
    t0, t1 = d.old.totals, d.new.totals
    tables = []
    if d.members:
        tables.append(Table(title="Members", headers=("member", "field", "old", "new"), rows=d.members))
    if d.steps:
        tables.append(Table(
            title="Steps", headers=("step", "change", "what", "FLOPs", "time", "GPU-h", "cost"),
            rows=tuple((s.id, s.change, "; ".join(s.details), _signed(s.deltas["flops"], units.flops),
                        _signed(s.deltas["predicted_seconds"], units.seconds),
                        _signed(s.deltas["gpu_hours"], units.hours),
                        _signed(s.deltas["cost_usd"], units.money))
                       for s in d.steps),
            right=frozenset({3, 4, 5, 6})))
    tables.append(Table(
        title="Totals", headers=("", "old", "new", "delta", "delta %"),
        rows=(
            _delta_row("progressive FLOPs", t0.progressive_flops, t1.progressive_flops, units.flops),
            _delta_row("progressive time", t0.predicted_seconds, t1.predicted_seconds, units.seconds),
            _delta_row("progressive GPU-hours", t0.predicted_gpu_hours, t1.predicted_gpu_hours, units.hours),
            _delta_row("progressive cost", t0.predicted_cost_usd, t1.predicted_cost_usd, units.money),
            _delta_row("independent FLOPs", t0.independent_flops, t1.independent_flops, units.flops),
            ("saving", units.percent(t0.savings_fraction), units.percent(t1.savings_fraction),
             f"{100 * (t1.savings_fraction - t0.savings_fraction):+.1f} pts", ""),
        ),
        right=frozenset({1, 2, 3, 4})))
    conclusion = ("no changes",) if d.empty else ()
    return Document(title=f"plan {d.old.plan_id} -> {d.new.plan_id} ({d.new.family.name})",
                    facts=d.settings, tables=tuple(tables), conclusion=conclusion)


def diff_data(d: PlanDiff) -> dict[str, Any]:
    return {
        "old": d.old.plan_id, "new": d.new.plan_id, "settings": list(d.settings),
        "members": [dict(zip(("member", "field", "old", "new"), m, strict=True)) for m in d.members],
        "steps": [{"id": s.id, "change": s.change, "details": list(s.details), "deltas": s.deltas} for s in d.steps],
        "totals": {
            "progressive_flops": [d.old.totals.progressive_flops, d.new.totals.progressive_flops],
            "predicted_gpu_hours": [d.old.totals.predicted_gpu_hours, d.new.totals.predicted_gpu_hours],
            "predicted_cost_usd": [d.old.totals.predicted_cost_usd, d.new.totals.predicted_cost_usd],
            "savings_fraction": [d.old.totals.savings_fraction, d.new.totals.savings_fraction],
        },
    }
