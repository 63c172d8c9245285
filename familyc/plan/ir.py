"""The plan: one frozen dataclass per step kind, to and from canonical JSON, and its plan_id.

The plan file is the review artefact checked into plans/: its bytes depend only on the spec
and on familyc's version (no timestamps, no absolute paths, fields in a fixed order, one
fact per line). `plan_id` is the hash of its canonical content, so an edited plan is caught.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from familyc.errors import PlanError

SCHEMA_VERSION = 1
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


@dataclass(frozen=True, kw_only=True, slots=True)
class DataPlan:
    kind: str
    name: str
    config: str | None
    split: str
    heldout_fraction: float
    progressive_stages: str = "continue"


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenizerPlan:
    kind: str
    name: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterPlan:
    accelerator: str
    accelerator_name: str
    devices: int
    nodes: int
    gpus_per_node: int
    precision: str
    peak_flops: float
    """Dense peak FLOP/s per device at `precision`."""
    mfu: float
    price_per_gpu_hour: float
    memory_bytes: int
    memory_headroom: float
    io_gb_per_s: float


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
    optimizer_after_growth: str
    """What happens to the optimizer state at a growth step: `fresh` (see README)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetPlan:
    rule: str
    tokens_per_param: float | None
    params: str


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
    params: int
    embedding_params: int
    non_embedding_params: int
    flops_per_token: int
    torchtitan_multiple_of: int
    """With the multiplier below, makes torchtitan 0.2.2's FFN rule produce exactly ffn_dim."""
    torchtitan_ffn_dim_multiplier: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """The LR schedule of one stage, in torchtitan 0.2.2's lr_scheduler terms."""

    warmup_steps: int
    decay_type: str
    """linear, cosine or sqrt."""
    decay_ratio: float | None
    """None: decay starts right after warmup; otherwise the final fraction of steps (WSD)."""
    min_lr_factor: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Memory:
    """Predicted bytes per device (see familyc/cost/memory.py)."""

    parameters: int
    gradients: int
    optimizer: int
    working: int
    activations: int
    logits: int
    total: int
    capacity: int
    """Usable bytes per device: memory x (1 - headroom)."""
    fits: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainStep:
    id: str
    kind: str = "train"
    member: str
    source: str | None
    """The member this one was grown from (None: from scratch)."""
    init_from: str | None
    """The expand step whose output initialises the weights (None: random init)."""
    data_continues_from: str | None = None
    """The train step whose data position this one starts at (None: the first document)."""
    tokens: int
    tokens_requested: int
    """What the budget rule asked for, before rounding to whole steps."""
    num_steps: int
    batch_tokens: int
    global_batch_size: int
    """Sequences per optimizer step."""
    local_batch_size: int
    """Sequences per device per forward pass (the micro-batch)."""
    grad_accum: int
    devices: int
    nodes: int
    fsdp_degree: int
    precision: str
    activation_checkpointing: str
    max_lr: float
    schedule: Schedule
    memory: Memory
    mfu: float = 0.0
    """The MFU its predicted time assumes: the spec's, or a calibration profile's measurement."""
    flops_per_step: int = 0
    """FLOPs of one optimizer step: batch_tokens x the member's FLOPs per token."""
    flops: int = 0
    """FLOPs of the whole stage: tokens x the member's FLOPs per token."""
    predicted_seconds: float = 0.0
    gpu_hours: float = 0.0
    cost_usd: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class ExpandStep:
    id: str
    kind: str = "expand"
    member: str
    """The member the expansion produces."""
    source: str
    width: str
    depth: str
    gqa: str
    noise: float
    seed: int
    exactness: str
    reasons: tuple[str, ...]
    summary: str
    optimizer_state: str
    bytes_read: int
    bytes_written: int
    flops: int = 0
    predicted_seconds: float = 0.0
    gpu_hours: float = 0.0
    cost_usd: float = 0.0


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


Step = Union[TrainStep, ExpandStep]


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

    def member(self, name: str) -> MemberPlan:
        return next(m for m in self.members if m.name == name)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        for b in self.baseline.members:
            if b.train.id == step_id:
                return b.train
        raise KeyError(step_id)


# --- to and from JSON -------------------------------------------------------------------------

def to_data(obj: Any) -> Any:
    """Dataclasses to dicts in field order; tuples to lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_data(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


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


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        if all(dataclasses.is_dataclass(o) for o in options if o is not type(None)):
            kind = value.get("kind") if isinstance(value, dict) else None
            for option in options:
                if dataclasses.is_dataclass(option) and _kind_default(option) == kind:
                    return _from_data(option, value, where)
            raise PlanError(f"{where}: unknown step kind {kind!r}")
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except PlanError:
                continue
        raise PlanError(f"{where}: unexpected value {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            raise PlanError(f"{where}: expected a list")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _from_data(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PlanError(f"{where}: expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PlanError(f"{where}: expected a whole number")
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise PlanError(f"{where}: expected {'true/false' if tp is bool else 'a string'}")
        return value
    raise PlanError(f"{where}: unsupported type {tp}")


def _kind_default(cls: type) -> str | None:
    for f in dataclasses.fields(cls):
        if f.name == "kind":
            return f.default  # type: ignore[return-value]
    return None


def _from_data(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise PlanError(f"{where}: expected an object")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise PlanError(f"{where}: missing field {f.name!r}")
        kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


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
    if data["schema_version"] != SCHEMA_VERSION:
        raise PlanError(f"{source}: plan schema_version {data['schema_version']!r} is not {SCHEMA_VERSION}",
                        hint="regenerate it with this familyc: `familyc plan SPEC -o FILE`")
    plan = _from_data(Plan, data, source)
    expected = compute_plan_id(data)
    if plan.plan_id != expected:
        raise PlanError(f"{source}: plan_id {plan.plan_id} does not match its content ({expected}): "
                        "the file was edited after it was planned",
                        hint="never edit a plan; change the spec and run `familyc plan SPEC -o FILE`")
    return plan
