"""The steps of a plan: a train step (with its schedule, memory and held-out evaluation) and an expand step
(with the learning-rate policy of the stage it starts). familyc.plan.ir holds the plan around them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from familyc.enums import (
    ActivationCheckpointing,
    DecayType,
    DepthOperator,
    Exactness,
    GqaMode,
    OptimizerAfterGrowth,
    Precision,
    TrainPhase,
    WarmupAfterGrowth,
    WidthOperator,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """The LR schedule of one stage, in torchtitan 0.2.2's lr_scheduler terms."""

    warmup_steps: int
    decay_type: DecayType
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
    temporaries: int = 0
    """The loss's gradients at the start of the backward (cost model 2, plan schema 6; 0 in older plans, whose
    model had no such term)."""
    total: int
    capacity: int
    """Usable bytes per device: memory x (1 - headroom)."""
    fits: bool


def evaluated_steps(num_steps: int, interval: int) -> tuple[int, ...]:
    """The steps after which a stage evaluates the held-out split: 0 (before the first update), every
    `interval`, and the last."""
    steps = [0, *range(interval, num_steps + 1, interval)]
    return tuple(steps if steps[-1] == num_steps else [*steps, num_steps])


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalPlan:
    """A stage's held-out evaluation (the spec's training.eval)."""

    interval: int
    """Steps between evaluations."""
    tokens: int
    """Held-out tokens of one evaluation: whole sequences, the same number on every device."""
    evaluations: int
    """How many: step 0, every interval steps, and the last step."""
    flops: int
    """All of the stage's evaluations (forward only: familyc.cost.flops.eval_flops); not in the stage's flops."""

    def steps(self, num_steps: int) -> tuple[int, ...]:
        return evaluated_steps(num_steps, self.interval)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainStep:
    id: str
    kind: Literal["train"] = "train"
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
    precision: Precision
    activation_checkpointing: ActivationCheckpointing
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
    """Training, held-out evaluation and start-up (`startup_seconds`)."""
    startup_seconds: float | None = None
    """The stage's start-up (the plan's cluster.startup; None: not measured for the accelerator, or a plan of
    schema version 6 or older)."""
    gpu_hours: float = 0.0
    cost_usd: float = 0.0
    eval: EvalPlan | None = None
    """None: no held-out evaluation during the stage (training.eval.interval none, no held-out split, or a plan
    of schema version 2)."""
    phase: TrainPhase = "whole"
    """whole: the member's whole schedule. With lr.schedule.grow_from: stable, a member that is grown from trains
    in two steps: `stable` (warmup and stable phase: what the next growth reads) and `decay` (the branch that
    continues it over the last decay_fraction of the member's steps: the released member)."""
    continues: str | None = None
    """The train step a decay branch continues: it starts from that step's weights, AdamW state and data
    position, at the peak LR (None: every other step)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LRAfterGrowth:
    """The learning-rate policy of the stage a growth step starts (the spec's growth[].lr)."""

    warmup: WarmupAfterGrowth = "schedule"
    """schedule: lr.schedule's warmup (none when restart_warmup is false); none; steps; fraction."""
    warmup_value: float | None = None
    peak_factor: float = 1.0
    """The stage's peak LR over the member's."""

    def describe(self) -> str:
        warmup = {"schedule": "warmup as scheduled", "none": "no warmup",
                  "steps": f"warmup {self.warmup_value:g} steps" if self.warmup_value is not None else "",
                  "fraction": f"warmup {self.warmup_value:g} of the stage" if self.warmup_value is not None else ""}
        return f"{warmup[self.warmup]}, peak x{self.peak_factor:g}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ExpandStep:
    id: str
    kind: Literal["expand"] = "expand"
    member: str
    """The member the expansion produces."""
    source: str
    """The member it grows (the weights of its progressive train step)."""
    width: WidthOperator
    depth: DepthOperator
    gqa: GqaMode
    noise: float
    seed: int
    exactness: Exactness
    reasons: tuple[str, ...]
    summary: str
    optimizer_state: OptimizerAfterGrowth
    lr_after: LRAfterGrowth = LRAfterGrowth()
    """How the grown member's stage starts: its warmup and its peak (the train step shows the result)."""
    bytes_read: int
    bytes_written: int
    flops: int = 0
    predicted_seconds: float = 0.0
    gpu_hours: float = 0.0
    cost_usd: float = 0.0
