"""`familyc expand`: grow one member's checkpoint into the next member's initial weights, outside a run.

The growth step is the spec's (its operators, seed, noise and optimizer policy), or what the command line gives;
the output is the same streamed expansion `familyc apply` writes (familyc.expand.stream), with a sidecar
that also records the spec and the source folder. With the `carry` policy, the source's AdamW moments (the
`optimizer` folder a stage that carries its optimizer saves beside its weights) are grown through the same maps
into the output's `optimizer` folder, as apply grows them. `verify` then runs both models on the same tokens.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from familyc.checkpoint import METADATA_FILE, OPTIMIZER_FOLDER
from familyc.checkpoint.sidecar import GrowthRecord, Sidecar, SourceRecord
from familyc.enums import DEPTH_OPERATORS, EXACT, OPTIMIZERS_AFTER_GROWTH, WIDTH_OPERATORS, OptimizerAfterGrowth
from familyc.errors import CheckpointError, FamilycError, UsageError
from familyc.meter import Start, quiet
from familyc.plan.ir import Plan
from familyc.spec.schema import did_you_mean

T = TypeVar("T", bound=str)

VERIFY_SEQ_LEN = 128
"""Tokens per sequence of `--verify` (at most the family's seq_len): enough positions for RoPE to matter."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Overrides:
    """What the command line changes of the spec's growth step (None: the spec's)."""

    width: str | None = None
    depth: str | None = None
    seed: int | None = None
    noise: float | None = None
    optimizer: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Grown:
    growth: GrowthRecord
    optimizer: OptimizerAfterGrowth
    """fresh: the weights alone; carry: the source's moments grown too, in the output's `optimizer` folder."""
    bytes_written: int
    seconds: float
    norm_eps: float
    """The RMSNorm eps the grown weights compute the source's function with (the source's, times the step's scale)."""
    planned_norm_eps: float
    """The target member's eps in the plan: another when the operators were overridden."""


def check_members(plan: Plan, *names: str, where: str | None = None) -> None:
    """A UsageError naming the first of `names` that is not a member of the plan (`where`: what has none;
    default the spec), with a did-you-mean."""
    known = [m.name for m in plan.members]
    for name in names:
        if name not in known:
            guess = did_you_mean(name, known)
            raise UsageError(f"{where or plan.spec.path} has no member {name!r}",
                             hint=f"did you mean {guess!r}?" if guess else "members: " + ", ".join(known))


def _choose(value: str | None, allowed: tuple[T, ...], option: str) -> T | None:
    """The operator named on the command line (None: not given); a UsageError for an unknown one."""
    for name in allowed:
        if value == name:
            return name
    if value is not None:
        raise UsageError(f"{option} {value!r} is not one of {', '.join(map(str, allowed))}")
    return None


def grow(plan: Plan, source: str, target: str, src: Path, dst: Path, overrides: Overrides,
         progress: Start = quiet) -> Grown:
    """Grow `src` (source's checkpoint) into `dst` (target's initial weights); `progress`: familyc.meter's."""
    from familyc.expand.operators import Expansion
    from familyc.expand.stream import expand_checkpoint

    check_members(plan, source, target)
    width = _choose(overrides.width, WIDTH_OPERATORS, "--width")
    depth = _choose(overrides.depth, DEPTH_OPERATORS, "--depth")
    optimizer = _choose(overrides.optimizer, OPTIMIZERS_AFTER_GROWTH, "--optimizer")
    step = next((s for s in plan.expand_steps() if s.source == source and s.member == target), None)
    seed, noise = overrides.seed, overrides.noise
    if step is not None:
        width, depth = width or step.width, depth or step.depth
        seed = step.seed if seed is None else seed
        noise = step.noise if noise is None else noise
        optimizer = optimizer or step.optimizer_state
    if width is None or depth is None:
        grown_from = plan.growth_into(target)
        raise UsageError(f"the spec does not grow {target} from {source}"
                         + (f" (it grows it from {grown_from.source})" if grown_from else ""),
                         hint="pass --width and --depth to expand anyway")
    expansion = Expansion(plan.shape(source), plan.shape(target), width=width, depth=depth, seed=seed or 0,
                          noise=noise or 0.0)
    record = GrowthRecord(width=width, depth=depth, gqa=expansion.assessment.gqa, seed=seed or 0, noise=noise or 0.0,
                          exactness=expansion.assessment.exactness, reasons=expansion.assessment.reasons)
    norm_eps = plan.member(source).norm_eps * expansion.assessment.norm_eps_scale
    sidecar = Sidecar(kind="expansion", member=target, shape=plan.shape(target), plan_id=plan.plan_id,
                      step=step.id if step is not None else None, norm_eps=norm_eps, growth=record,
                      source=SourceRecord(member=source, shape=plan.shape(source), checkpoint=str(src)))
    include = None
    if optimizer == "carry":
        carried = src / OPTIMIZER_FOLDER
        if not (carried / METADATA_FILE).is_file():
            raise CheckpointError(f"{carried}: missing, so {source}'s optimizer moments cannot be carried into "
                                  f"{target}", hint="it is saved by a stage whose plan carries the optimizer "
                                  "(optimizer: carry on its growth step); pass --optimizer fresh to grow the "
                                  "weights alone")
        if dst.exists() or dst.is_symlink():  # before the moments are written: the weights' write refuses it too
            raise CheckpointError(f"{dst}: already exists; familyc never overwrites a checkpoint")
        include = grow_moments(plan, source, target, carried, dst, width=width, depth=depth, seed=seed or 0,
                               progress=progress)
    try:
        written = expand_checkpoint(src, dst, expansion, sidecar=sidecar, include=include, progress=progress)
    finally:  # the moments were moved into dst, or dst was not written: either way nothing is left beside it
        for folder in (include or {}).values():
            shutil.rmtree(folder, ignore_errors=True)
    return Grown(growth=record, optimizer=optimizer or "fresh", bytes_written=written.bytes_written,
                 seconds=written.seconds, norm_eps=norm_eps, planned_norm_eps=plan.member(target).norm_eps)


def grow_moments(plan: Plan, source: str, target: str, carried: Path, dst: Path, *, width: str, depth: str,
                 seed: int, progress: Start = quiet) -> dict[str, Path]:
    """`source`'s AdamW moments (the DCP folder `carried`) through the growth's maps, into a folder beside `dst`
    that the weights' write then moves inside it (familyc.checkpoint.writer's `include`); what an earlier
    attempt left there is redone."""
    from familyc.expand.moments import MomentRecipes
    from familyc.expand.stream import expand_checkpoint

    staged = dst.with_name(f".{dst.name}.moments")
    shutil.rmtree(staged, ignore_errors=True)
    expand_checkpoint(carried, staged, MomentRecipes(plan.shape(source), plan.shape(target), width=width, depth=depth,
                                                     seed=seed), sidecar=None, progress=progress)
    return {OPTIMIZER_FOLDER: staged}


@dataclass(frozen=True, kw_only=True, slots=True)
class Verified:
    max_abs_logit_diff: float
    mean_kl: float
    tokens: int


def verify(plan: Plan, source: str, target: str, src: Path, dst: Path, grown: Grown) -> Verified:
    """Both checkpoints' logits on the same tokens, the target at the norm eps its growth step implies."""
    from familyc.checkpoint.reader import load_state_dict
    from familyc.expand.verify import compare_models

    arch = plan.architecture
    result = compare_models(plan.shape(source), load_state_dict(src), plan.shape(target), load_state_dict(dst),
                            seq_len=min(arch.seq_len, VERIFY_SEQ_LEN), rope_theta=arch.rope_theta,
                            source_eps=plan.member(source).norm_eps, target_eps=grown.norm_eps)
    return Verified(max_abs_logit_diff=result.max_abs_logit_diff, mean_kl=result.mean_kl, tokens=result.tokens)


def require_preserved(source: str, target: str, src: Path, dst: Path, grown: Grown, verified: Verified) -> None:
    """FamilycError when a step judged exact moved the logits by more than the tolerance."""
    from familyc.expand.verify import VERIFY_TOLERANCE

    if grown.growth.exactness == EXACT and verified.max_abs_logit_diff > VERIFY_TOLERANCE:
        raise FamilycError(f"{source} -> {target} is function-preserving but max |delta logit| "
                           f"{verified.max_abs_logit_diff:.3g} > {VERIFY_TOLERANCE:g}",
                           hint=f"the checkpoint in {dst} does not match {src}: was it trained with another spec?")
