"""familyc's enumerated values, typed: operators, rules, kinds and statuses. Torch-free.

Each is a `Literal` type (what the spec model, the plan IR and the run state annotate their fields
with, so a type checker catches a misspelt value) and a tuple of its values derived from it (what
code iterates over and error messages list). The JSON Schema of the spec spells the same values
(tests/test_architecture.py checks that every enum of the schema is a tuple here), and the plan
and state files store them as the plain strings they are.
"""

from __future__ import annotations

from typing import Literal, get_args

# --- growth ------------------------------------------------------------------------------------
WidthOperator = Literal["fpi", "aki", "exact", "split", "paired", "zero", "none"]
DepthOperator = Literal["stack", "interpolate", "zero_insert", "none"]
Exactness = Literal["exact", "approximate", "impossible"]
GqaMode = Literal["unchanged", "keep_kv", "grow_kv", "mixed"]
"""How grouped-query attention grows: keep_kv (more query heads per KV head), grow_kv (KV heads grow
with their groups), mixed (both)."""
OptimizerAfterGrowth = Literal["fresh", "carry"]
"""AdamW's state at a growth step: fresh (zero moments, as from scratch) or carry (the source's final moments,
mapped through the growth's index maps: familyc.expand.moments)."""
WarmupAfterGrowth = Literal["schedule", "none", "steps", "fraction"]
"""The warmup of a grown member's stage: the family's schedule (and restart_warmup), none, N steps, a fraction."""

WIDTH_OPERATORS: tuple[WidthOperator, ...] = get_args(WidthOperator)
DEPTH_OPERATORS: tuple[DepthOperator, ...] = get_args(DepthOperator)
OPTIMIZERS_AFTER_GROWTH: tuple[OptimizerAfterGrowth, ...] = get_args(OptimizerAfterGrowth)
EXACT: Exactness = "exact"
APPROXIMATE: Exactness = "approximate"
IMPOSSIBLE: Exactness = "impossible"

# --- budget and learning rate ------------------------------------------------------------------
BudgetRule = Literal["paper", "tokens_per_param", "explicit"]
BudgetParams = Literal["total", "non_embedding"]
LRRule = Literal["constant", "table", "power_law"]
Decay = Literal["linear", "cosine", "sqrt", "wsd"]
GrowFrom = Literal["final", "stable"]
"""What a growth step grows (lr.schedule.grow_from): the source's final weights, or with decay: wsd its weights at
the end of the stable phase, the released member being a decay branch of its own (familyc.plan.steps.TrainPhase)."""
DecayType = Literal["linear", "cosine", "sqrt"]
"""torchtitan's lr_scheduler.decay_type (wsd is a decay ratio with one of these)."""

BUDGET_RULES: tuple[BudgetRule, ...] = get_args(BudgetRule)
BUDGET_PARAMS: tuple[BudgetParams, ...] = get_args(BudgetParams)
LR_RULES: tuple[LRRule, ...] = get_args(LRRule)
DECAYS: tuple[Decay, ...] = get_args(Decay)
DECAY_TYPES: tuple[DecayType, ...] = get_args(DecayType)
GROW_FROM: tuple[GrowFrom, ...] = get_args(GrowFrom)

# --- training ----------------------------------------------------------------------------------
Precision = Literal["bf16", "fp32"]
ActivationCheckpointing = Literal["none", "selective", "full"]
ACChoice = Literal["auto", "none", "selective", "full"]
"""What the spec may ask for: a mode, or auto (the least intrusive that fits)."""

TrainPhase = Literal["whole", "stable", "decay"]
"""What part of a member's schedule a train step runs: all of it, or (lr.schedule.grow_from: stable) the warmup and
stable phase, then the decay branch that continues it and releases the member."""

PRECISIONS: tuple[Precision, ...] = get_args(Precision)
AC_MODES: tuple[ActivationCheckpointing, ...] = get_args(ActivationCheckpointing)
AC_CHOICES: tuple[ACChoice, ...] = get_args(ACChoice)

# --- data and tokenizer ------------------------------------------------------------------------
DataKind = Literal["builtin", "hf", "path"]
TokenizerKind = Literal["builtin", "hf", "path"]
ProgressiveStages = Literal["continue", "restart"]
HeldoutPart = Literal["all", "validation", "test"]
"""What of the held-out split an evaluation reads: all of it, or one of two halves by document
(familyc.data.builtin.in_heldout_part): choose configurations on validation, report on test."""
EvalIntervalWord = Literal["auto", "none"]
"""training.eval.interval besides a number of steps."""
BuiltinCorpus = Literal["stdlib-docstrings", "stdlib-source"]
BuiltinTokenizer = Literal["bpe-2048"]

DATA_KINDS: tuple[DataKind, ...] = get_args(DataKind)
TOKENIZER_KINDS: tuple[TokenizerKind, ...] = get_args(TokenizerKind)
PROGRESSIVE_STAGES: tuple[ProgressiveStages, ...] = get_args(ProgressiveStages)
EVAL_INTERVAL_WORDS: tuple[EvalIntervalWord, ...] = get_args(EvalIntervalWord)
HELDOUT_PARTS: tuple[HeldoutPart, ...] = get_args(HeldoutPart)
BUILTIN_CORPORA: tuple[BuiltinCorpus, ...] = get_args(BuiltinCorpus)
BUILTIN_TOKENIZERS: tuple[BuiltinTokenizer, ...] = get_args(BuiltinTokenizer)
BUILTIN_TOKENIZER_VOCAB: dict[str, int] = {"bpe-2048": 2048}
"""Vocabulary of the tokenizers familyc trains offline (familyc/data)."""

# --- cluster -----------------------------------------------------------------------------------
AcceleratorKey = Literal["h100", "h200", "a100", "b200", "mi300x", "cpu"]
ACCELERATOR_KEYS: tuple[AcceleratorKey, ...] = get_args(AcceleratorKey)

# --- plans and runs ----------------------------------------------------------------------------
StepKind = Literal["train", "expand"]
StepStatus = Literal["pending", "running", "completed", "failed"]
Family = Literal["progressive", "independent"]
"""Which family a trained member belongs to: grown (progressive) or trained from scratch (independent)."""

STEP_KINDS: tuple[StepKind, ...] = get_args(StepKind)
STEP_STATUSES: tuple[StepStatus, ...] = get_args(StepStatus)
PENDING: StepStatus = "pending"
RUNNING: StepStatus = "running"
COMPLETED: StepStatus = "completed"
FAILED: StepStatus = "failed"


def heldout_part(value: str) -> HeldoutPart:
    """`value` as a HeldoutPart (ValueError when it is none)."""
    for part in HELDOUT_PARTS:
        if part == value:
            return part
    raise ValueError(f"{value!r} is not one of {', '.join(HELDOUT_PARTS)}")
