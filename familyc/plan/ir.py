"""The plan: its sections and steps (the step types are in familyc.plan.steps), to and from canonical JSON, and
its plan_id.

The plan file is the review artefact checked into plans/: its bytes depend only on the spec
and on familyc's version (no timestamps, no absolute paths, fields in a fixed order, one
fact per line). `plan_id` is the hash of its canonical content, so an edited plan is caught.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from familyc.cost.storage import stage_disk_bytes
from familyc.enums import (
    AcceleratorKey,
    BudgetParams,
    BudgetRule,
    OptimizerAfterGrowth,
    Precision,
    ProgressiveStages,
    TokenizerKind,
)
from familyc.errors import PlanError, UsageError
from familyc.plan.steps import ExpandStep, TrainStep
from familyc.records import from_data, to_data
from familyc.shape import ModelShape
from familyc.spec.model import SourceSpec

SCHEMA_VERSION = 8
"""2: members carry their own norm_eps (the symmetry-breaking growth operators rescale it). Plans of version 1
(every member at the architecture's eps) are still read: `loads` fills it in.
3: train steps carry their held-out evaluation (`eval`); a plan of version 2 has none, and runs without it.
4: train steps carry their `phase` and the step they `continue` (lr.schedule.grow_from: stable); in a plan of
version 3 every step is a whole stage.
5: `data.sources` (a weighted mix; a plan of version 4 names one dataset, read as the only source), and the
tokenizer's `revision`.
6: a train step's `memory` has `temporaries` (cost model 2, calibrated against `familyc rehearse`); a plan of
version 5 has none, read as 0.
7: the cluster's `startup` (a stage's start-up: launch, compile, finish; cost model 3) and each train step's
`startup_seconds`, in its predicted time; a plan of version 6 has neither (its times are training only).
8: the start-up's `step_seconds` and `eval_seconds` (the fixed cost of every step and evaluation; cost model 4);
a plan of version 7 has neither, read as 0."""
PLAN_ID_LENGTH = 16
"""Hex digits of sha256 kept: 64 bits, plenty to tell plans apart and to catch edits."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecRef:
    path: str
    """The spec as given to `familyc plan`, relative to the working directory when inside it."""
    sha256: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CostModelRef:
    version: str
    flops_formula: str
    flops_formula_source: str


@dataclass(frozen=True, kw_only=True, slots=True)
class FamilyRef:
    name: str
    description: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchitecturePlan:
    vocab_size: int
    seq_len: int
    rope_theta: float
    norm_eps: float


SourcePlan = SourceSpec
"""A source of text as the plan names it: as the spec does (familyc.execute.data resolves it before a run)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DataPlan:
    sources: tuple[SourcePlan, ...]
    heldout_fraction: float
    progressive_stages: ProgressiveStages = "continue"
    shuffle: bool = False
    """Each rank reads its training documents in an order shuffled by training.seed. False in plans written
    before familyc shuffled: they read in the dataset's order, and a resumed run must keep reading in it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenizerPlan:
    kind: TokenizerKind
    name: str
    revision: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class StartupPlan:
    """The wall time of a training stage besides its steps (familyc.cost.startup)."""

    launch_seconds: float
    """Before the first step: torchrun, imports, the process group, the model, its weights, the data."""
    compile_seconds: float
    """What torch.compile adds to the first step and evaluation (0 when the plan does not compile)."""
    finish_seconds: float
    """After the last step: the final save, the processes' exit, promoting the member."""
    source: str
    step_seconds: float = 0.0
    """Every optimizer step's fixed cost beyond its FLOPs (a plan of version 7 has none: read as 0)."""
    eval_seconds: float = 0.0
    """Every held-out evaluation's, likewise."""

    @property
    def seconds(self) -> float:
        """The start-up: launch, compile and finish (a train step's `startup_seconds`)."""
        return self.launch_seconds + self.compile_seconds + self.finish_seconds

    def fixed_seconds(self, *, steps: int, evaluations: int) -> float:
        """A stage's time beyond its FLOPs: its start-up and its steps' and evaluations' fixed costs."""
        return self.seconds + steps * self.step_seconds + evaluations * self.eval_seconds


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterPlan:
    accelerator: AcceleratorKey
    accelerator_name: str
    devices: int
    nodes: int
    gpus_per_node: int
    precision: Precision
    peak_flops: float
    """Dense peak FLOP/s per device at `precision`."""
    mfu: float
    price_per_gpu_hour: float
    memory_bytes: int
    memory_headroom: float
    io_gb_per_s: float
    startup: StartupPlan | None = None
    """A training stage's start-up on this accelerator (familyc.cost.startup, or a calibration profile's); None:
    not measured for it, so the predicted times are training and evaluation only."""


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizerPlan:
    name: str
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    max_grad_norm: float


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainingPlan:
    optimizer: OptimizerPlan
    compile: bool
    checkpoint_interval: int
    log_interval: int
    seed: int
    optimizer_after_growth: OptimizerAfterGrowth
    """`carry` when any growth step carries the optimizer state, else `fresh` (each step says its own)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetPlan:
    rule: BudgetRule
    tokens_per_param: float | None
    params: BudgetParams


@dataclass(frozen=True, kw_only=True, slots=True)
class MemberPlan:
    name: str
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    seq_len: int
    norm_eps: float
    """The RMSNorm eps of this member: the architecture's, times the scale of every growth that made it
    (familyc.growth.feasibility.norm_eps_scale; 1 for the copying operators)."""
    params: int
    embedding_params: int
    non_embedding_params: int
    flops_per_token: int
    torchtitan_multiple_of: int
    """With the multiplier below, makes torchtitan 0.2.2's FFN rule produce exactly ffn_dim."""
    torchtitan_ffn_dim_multiplier: float | None

    @property
    def shape(self) -> ModelShape:
        """The weight tensors' shape (what the growth operators and the checkpoint checks need)."""
        return ModelShape(dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
                          ffn_dim=self.ffn_dim, vocab_size=self.vocab_size)




@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineMember:
    """One member of the independent family, trained from scratch (`apply --baselines` runs it)."""

    name: str
    tokens: int
    flops: int
    train: TrainStep


@dataclass(frozen=True, kw_only=True, slots=True)
class Baseline:
    members: tuple[BaselineMember, ...]
    flops: int
    predicted_seconds: float
    gpu_hours: float
    cost_usd: float


@dataclass(frozen=True, kw_only=True, slots=True)
class CalibrationRef:
    """The measured profile the predicted times come from (`familyc plan --profile`)."""

    path: str
    sha256: str
    mfu: float
    """The profile's FLOP-weighted mean MFU (stages of a measured shape use their own)."""
    stage_overhead_seconds: float
    """Measured start-up per training stage, added to each stage's predicted time."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Totals:
    progressive_flops: int
    independent_flops: int
    savings_fraction: float
    """1 - progressive / independent FLOPs."""
    predicted_seconds: float
    predicted_gpu_hours: float
    predicted_cost_usd: float
    independent_seconds: float
    independent_gpu_hours: float
    independent_cost_usd: float
    progressive_eval_flops: int = 0
    """Held-out evaluation during the progressive stages (apart from progressive_flops)."""
    independent_eval_flops: int = 0


Step = TrainStep | ExpandStep


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    schema_version: int
    plan_id: str
    familyc_version: str
    cost_model: CostModelRef
    spec: SpecRef
    family: FamilyRef
    architecture: ArchitecturePlan
    data: DataPlan
    tokenizer: TokenizerPlan
    cluster: ClusterPlan
    training: TrainingPlan
    budget: BudgetPlan
    members: tuple[MemberPlan, ...]
    steps: tuple[Step, ...]
    baseline: Baseline
    totals: Totals
    warnings: tuple[str, ...] = field(default_factory=tuple)
    calibration: CalibrationRef | None = None

    # The plan answers its own questions: nothing outside the compiler spells a step id.
    def member(self, name: str) -> MemberPlan:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f"plan {self.plan_id} has no member {name!r}")

    def shape(self, member: str) -> ModelShape:
        return self.member(member).shape

    def all_steps(self) -> tuple[Step, ...]:
        """The progressive steps in execution order, then the independent baseline's train steps."""
        return self.steps + tuple(b.train for b in self.baseline.members)

    def step(self, step_id: str) -> Step:
        for s in self.all_steps():
            if s.id == step_id:
                return s
        raise KeyError(f"plan {self.plan_id} has no step {step_id!r}")

    def train_step(self, member: str, *, baseline: bool = False) -> TrainStep:
        """The step whose weights are `member`: its progressive stage (its decay branch, when it has one), or
        (baseline) its from-scratch twin."""
        stages = [b.train for b in self.baseline.members if b.name == member] if baseline else self.stages_of(member)
        if not stages:
            raise KeyError(f"plan {self.plan_id} has no {'baseline' if baseline else 'progressive'} step for "
                           f"{member!r}")
        return stages[-1]

    def stages_of(self, member: str) -> tuple[TrainStep, ...]:
        """The progressive train steps of `member`: one, or its stable phase and its decay branch."""
        return tuple(s for s in self.train_steps() if s.member == member)

    def growth_source(self, member: str) -> TrainStep:
        """The step whose weights a growth from `member` reads: its stable phase when it branches, else the
        step that trains it."""
        stages = self.stages_of(member)
        if not stages:
            raise KeyError(f"plan {self.plan_id} has no progressive step for {member!r}")
        return stages[0]

    def start_of(self, step: TrainStep) -> Step | None:
        """The step whose output a train step starts from: its growth's expansion, or the stable phase a decay
        branch continues (None: random initialisation)."""
        ref = step.init_from if step.init_from is not None else step.continues
        return None if ref is None else self.step(ref)

    def continued_by(self, step: TrainStep) -> TrainStep | None:
        """The decay branch that continues `step` (None: nothing does)."""
        return next((s for s in self.train_steps() if s.continues == step.id), None)

    def train_steps(self) -> Iterator[TrainStep]:
        """The progressive train steps, in execution order."""
        return (s for s in self.steps if isinstance(s, TrainStep))

    def expand_steps(self) -> Iterator[ExpandStep]:
        return (s for s in self.steps if isinstance(s, ExpandStep))

    def is_baseline(self, step: Step) -> bool:
        """Whether `step` trains a member of the independent family (from scratch, apart from the progressive one)."""
        return any(b.train.id == step.id for b in self.baseline.members)

    def growth_into(self, member: str) -> ExpandStep | None:
        """The expand step whose output initialises `member`'s progressive stage (None: trained from scratch)."""
        return next((s for s in self.expand_steps() if s.member == member), None)

    def disk_bytes(self, step: TrainStep) -> int:
        """Free disk a training stage needs for its checkpoints (familyc.cost.storage)."""
        return stage_disk_bytes(self.member(step.member).params, moments=self.saves_optimizer(step))

    def saves_optimizer(self, step: TrainStep) -> bool:
        """Whether the stage keeps its final AdamW moments: a decay branch continues it, or a growth step that
        reads it carries them."""
        if self.is_baseline(step):
            return False
        if self.continued_by(step) is not None:
            return True
        return self.growth_source(step.member).id == step.id and any(
            s.source == step.member and s.optimizer_state == "carry" for s in self.expand_steps())

    def carries_optimizer(self, step: TrainStep) -> bool:
        """Whether the stage starts from moments it did not make: a decay branch's (the stable phase's), or those
        its growth step carried (not fresh ones)."""
        if step.continues is not None:
            return True
        growth = None if self.is_baseline(step) else self.growth_into(step.member)
        return growth is not None and growth.optimizer_state == "carry"

    def lineage(self, member: str) -> tuple[str, ...]:
        """The members `member` was grown from, smallest first (empty for the first member)."""
        out: list[str] = []
        current = self.train_step(member)
        while current.source is not None:
            out.insert(0, current.source)
            current = self.train_step(current.source)
        return tuple(out)

    def structure_problems(self) -> list[str]:
        """What makes the plan's steps not one walk: ids that repeat, references to steps that are not there or
        not of the right kind or not earlier. Empty for every plan the compiler writes."""
        found: list[str] = []
        seen: dict[str, Step] = {}
        names = {m.name for m in self.members}
        for s in self.all_steps():
            if s.id in seen:
                found.append(f"step id {s.id!r} is used twice")
            if s.member not in names:
                found.append(f"{s.id} is about member {s.member!r}, which the plan does not have")
            if isinstance(s, ExpandStep):
                trained = [t for t in seen.values() if isinstance(t, TrainStep) and t.member == s.source]
                if not trained:
                    found.append(f"{s.id} grows {s.source}, which no earlier step trains")
            else:
                for field_name, kind in (("init_from", ExpandStep), ("data_continues_from", TrainStep),
                                         ("continues", TrainStep)):
                    ref = getattr(s, field_name)
                    if ref is not None and not isinstance(seen.get(ref), kind):
                        found.append(f"{s.id}: {field_name} {ref!r} is not an earlier {kind.__name__}")
                continued = seen.get(s.continues) if s.continues is not None else None
                if continued is not None and (continued.member != s.member or s.init_from is not None):
                    found.append(f"{s.id} continues {s.continues}, a stage of another member or of a growth")
            seen.setdefault(s.id, s)
        return found


# --- to and from JSON -------------------------------------------------------------------------

def _content(plan_data: dict[str, Any]) -> str:
    body = {k: v for k, v in plan_data.items() if k != "plan_id"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def compute_plan_id(plan_data: dict[str, Any]) -> str:
    return hashlib.sha256(_content(plan_data).encode()).hexdigest()[:PLAN_ID_LENGTH]


def with_plan_id(plan: Plan) -> Plan:
    return dataclasses.replace(plan, plan_id=compute_plan_id(to_data(plan)))


def dumps(plan: Plan) -> str:
    """The plan file's bytes: indented JSON, one fact per line, trailing newline."""
    return json.dumps(to_data(plan), indent=2, ensure_ascii=False) + "\n"


def read_plan(path: Path) -> Plan:
    """A plan file; UsageError when there is none, PlanError when it is not a plan (see `loads`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such plan file", hint="write one with `familyc plan SPEC -o FILE`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read it as a plan: {exc}") from None
    return loads(text, source=str(path))


READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, SCHEMA_VERSION)


def _upgraded(data: dict[str, Any]) -> dict[str, Any]:
    """An older plan as the current version reads it; the schema_version stays, so its plan_id and its bytes stay
    what they were. Version 1: every member at the architecture's norm eps, which is what version 1 ran.
    Versions 1-4: the one dataset (`data.kind`, `name`, `config`, `split`) is the only source."""
    version = data.get("schema_version")
    if version == 1 and isinstance(data.get("members"), list):
        eps = data.get("architecture", {}).get("norm_eps") if isinstance(data.get("architecture"), dict) else None
        members = [{**m, "norm_eps": eps} if isinstance(m, dict) and "norm_eps" not in m else m
                   for m in data["members"]]
        data = {**data, "members": members}
    old = data.get("data")
    if version in (1, 2, 3, 4) and isinstance(old, dict) and "sources" not in old:
        source = {k: old[k] for k in ("kind", "name", "config", "split") if k in old}
        data = {**data, "data": {"sources": [source],
                                 **{k: v for k, v in old.items() if k not in ("kind", "name", "config", "split")}}}
    return data


def loads(text: str, *, source: str = "plan") -> Plan:
    """Read a plan file; raise PlanError if it is not one, is of another schema version, or was edited."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{source}:{exc.lineno}:{exc.colno}: not a JSON plan file: {exc.msg}",
                        hint="plan files are written by `familyc plan SPEC -o FILE`") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise PlanError(f"{source}: not a familyc plan (no schema_version)",
                        hint="plan files are written by `familyc plan SPEC -o FILE`")
    if data["schema_version"] not in READABLE_VERSIONS:
        raise PlanError(f"{source}: plan schema_version {data['schema_version']!r} is not {SCHEMA_VERSION}",
                        hint="regenerate it with this familyc: `familyc plan SPEC -o FILE`")
    expected = compute_plan_id(data)  # of the bytes as written, before any upgrade
    plan = from_data(Plan, _upgraded(data), where=source, error=PlanError)
    if plan.plan_id != expected:
        raise PlanError(f"{source}: plan_id {plan.plan_id} does not match its content ({expected}): "
                        "the file was edited after it was planned",
                        hint="never edit a plan; change the spec and run `familyc plan SPEC -o FILE`")
    problems = plan.structure_problems()
    if problems:
        raise PlanError(f"{source}: not a plan familyc can run: " + "; ".join(problems),
                        hint="plan files are written by `familyc plan SPEC -o FILE`; regenerate it")
    return plan
