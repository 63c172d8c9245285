"""What flows through the compiler: an immutable record each pass returns an updated copy of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from familyc.cost.calibration import Profile
from familyc.plan.ir import BaselineMember, MemberPlan, Plan, SpecRef
from familyc.plan.steps import ExpandStep, TrainStep
from familyc.spec.loader import LoadedDocument
from familyc.spec.model import FamilySpec


@dataclass(frozen=True, kw_only=True, slots=True)
class StageBudget:
    member: str
    tokens_requested: int
    """Progressive stage tokens as the rule gives them (before rounding to whole steps)."""
    baseline_tokens_requested: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Compilation:
    doc: LoadedDocument
    spec_ref: SpecRef
    profile: Profile | None = None
    """A calibration profile: measured MFU and start-up replace the spec's assumption."""
    spec: FamilySpec | None = None
    """resolve_defaults: the typed spec."""
    members: tuple[MemberPlan, ...] = ()
    """derive_shapes: shapes, parameter counts and FLOPs per token."""
    budgets: tuple[StageBudget, ...] = ()
    """assign_budgets: tokens per stage and per baseline member."""
    max_lr: dict[str, float] = field(default_factory=dict)
    """derive_lr: peak LR per member."""
    steps: tuple[TrainStep | ExpandStep, ...] = ()
    """lower_to_cluster, then attach_costs: the progressive steps in execution order."""
    baseline: tuple[BaselineMember, ...] = ()
    plan: Plan | None = None
    """attach_costs: the plan (check_plan may add warnings)."""
    warnings: tuple[str, ...] = ()

    def member(self, name: str) -> MemberPlan:
        return next(m for m in self.members if m.name == name)


Pass = Callable[[Compilation], Compilation]
