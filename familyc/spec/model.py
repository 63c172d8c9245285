"""Frozen dataclasses of a spec that passed the schema, with defaults applied and quantities parsed.

Field docs are short; the schema (`familyc schema`) is the reference for what each means.
Tables keyed by member name are plain dicts: the dataclasses are frozen, the dicts are
never mutated after `resolve_defaults` builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from familyc.enums import (
    AcceleratorKey,
    ACChoice,
    BudgetParams,
    BudgetRule,
    DataKind,
    Decay,
    DecayType,
    DepthOperator,
    GrowFrom,
    LRRule,
    OptimizerAfterGrowth,
    Precision,
    ProgressiveStages,
    TokenizerKind,
    WarmupAfterGrowth,
    WidthOperator,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Architecture:
    vocab_size: int
    seq_len: int
    rope_theta: float
    norm_eps: float
    multiple_of: int
    ffn_dim_multiplier: float | None
    tie_embeddings: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class MemberSpec:
    index: int
    """Position in `members` (execution order of the progressive family)."""
    name: str
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int | None
    """Explicit SwiGLU hidden size, or None for torchtitan's rule with the two fields below."""
    multiple_of: int
    ffn_dim_multiplier: float | None
    batch_tokens: int | None
    """Override of training.batch_tokens."""


@dataclass(frozen=True, kw_only=True, slots=True)
class GrowthLR:
    """The learning rate of the stage a growth step starts (the schema's growth[].lr)."""

    warmup: WarmupAfterGrowth = "schedule"
    warmup_value: float | None = None
    """steps: the number of steps; fraction: the fraction of the stage."""
    peak_factor: float = 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class GrowthSpec:
    index: int
    source: str
    target: str
    width: WidthOperator
    depth: DepthOperator
    noise: float
    seed: int
    function_preserving: bool
    lr: GrowthLR = GrowthLR()
    optimizer: OptimizerAfterGrowth = "fresh"


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetSpec:
    rule: BudgetRule
    tokens_per_param: float | None
    largest_tokens: int | None
    params: BudgetParams
    """Which count tokens are proportional to."""
    tokens: dict[str, int] = field(default_factory=dict)
    baseline_tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class PowerLaw:
    reference_lr: float
    reference_params: int
    exponent: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleSpec:
    warmup_steps: int | None
    warmup_fraction: float | None
    decay: Decay
    decay_fraction: float
    wsd_decay: DecayType
    min_lr_factor: float
    restart_warmup: bool
    grow_from: GrowFrom = "final"


@dataclass(frozen=True, kw_only=True, slots=True)
class LRSpec:
    rule: LRRule
    value: float | None
    table: dict[str, float]
    power_law: PowerLaw | None
    schedule: ScheduleSpec


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizerSpec:
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    max_grad_norm: float


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalSpec:
    """training.eval: held-out evaluation inside every stage."""

    enabled: bool
    interval: int | None
    """Steps between evaluations; None: 5% of each stage's steps."""
    tokens: int


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainingSpec:
    batch_tokens: int
    micro_batch_size: int | None
    """None: pick the largest that fits."""
    precision: Precision
    compile: bool
    activation_checkpointing: ACChoice
    checkpoint_interval: int
    log_interval: int
    seed: int
    eval: EvalSpec
    optimizer: OptimizerSpec


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceSpec:
    """One source of text (data.dataset, or an entry of data.sources)."""

    kind: DataKind
    name: str
    """The builtin corpus, the Hugging Face name, or the folder (relative to the spec)."""
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    """A Hugging Face dataset's branch, tag or commit (None: main)."""
    text_field: str = "text"
    weight: float = 1.0
    """Share of the training tokens, relative to the other sources' weights."""
    heldout_split: str | None = None
    """A Hugging Face dataset's split that is the held-out text (None: held out by content hash)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DatasetSpec:
    sources: tuple[SourceSpec, ...]
    heldout_fraction: float
    progressive_stages: ProgressiveStages
    """See the schema."""
    shuffle: bool = True
    """Read the training documents in an order shuffled by training.seed (see the schema)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenizerSpec:
    kind: TokenizerKind
    name: str
    revision: str | None = None
    """A Hugging Face repository's branch, tag or commit (None: main)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterSpec:
    accelerator: AcceleratorKey
    gpus_per_node: int
    nodes: int
    mfu: float
    price_per_gpu_hour: float
    memory_gib: float | None
    memory_headroom: float
    io_gb_per_s: float

    @property
    def devices(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass(frozen=True, kw_only=True, slots=True)
class FamilySpec:
    name: str
    description: str
    architecture: Architecture
    members: tuple[MemberSpec, ...]
    growth: tuple[GrowthSpec, ...]
    budget: BudgetSpec
    lr: LRSpec
    training: TrainingSpec
    data: DatasetSpec
    tokenizer: TokenizerSpec
    cluster: ClusterSpec

    def member(self, name: str) -> MemberSpec:
        return next(m for m in self.members if m.name == name)

    def growth_into(self, name: str) -> GrowthSpec | None:
        return next((g for g in self.growth if g.target == name), None)
