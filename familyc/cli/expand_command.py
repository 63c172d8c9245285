"""familyc expand: grow a trained member's checkpoint into the next member's initial weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from familyc import __version__, units
from familyc.cli.app import app, command, out
from familyc.compiler import compile_spec
from familyc.compiler.derive_shapes import shape_of
from familyc.errors import FamilycError, UsageError
from familyc.expand.feasibility import DEPTH_OPERATORS, EXACT, WIDTH_OPERATORS
from familyc.plan.ir import ExpandStep, Plan
from familyc.spec.schema import did_you_mean

if TYPE_CHECKING:  # torch is imported only when the command runs (the CLI starts without it)
    from familyc.expand.operators import Expansion


def _member_names(plan: Plan, *names: str) -> None:
    known = [m.name for m in plan.members]
    for name in names:
        if name not in known:
            guess = did_you_mean(name, known)
            raise UsageError(f"{plan.spec.path} has no member {name!r}",
                             hint=f"did you mean {guess!r}?" if guess else "members: " + ", ".join(known))


def _choose(value: str | None, allowed: tuple[str, ...], option: str) -> str | None:
    if value is not None and value not in allowed:
        raise UsageError(f"{option} {value!r} is not one of {', '.join(allowed)}")
    return value


@app.command()
@command
def expand(
    spec: Path = typer.Argument(..., help="The family spec.", show_default=False),
    source: str = typer.Argument(..., metavar="FROM", help="The trained member.", show_default=False),
    target: str = typer.Argument(..., metavar="TO", help="The member to grow it into.", show_default=False),
    src: Path = typer.Option(..., "--src", help="FROM's checkpoint (a DCP folder).", show_default=False),
    dst: Path = typer.Option(..., "--dst", help="Where TO's initial weights go (must not exist).", show_default=False),
    verify: bool = typer.Option(False, "--verify", help="Compare both models' logits on the same tokens."),
    width: str | None = typer.Option(None, "--width", help="Override the spec's width operator."),
    depth: str | None = typer.Option(None, "--depth", help="Override the spec's depth operator."),
    seed: int | None = typer.Option(None, "--seed", help="Override the spec's seed."),
    noise: float | None = typer.Option(None, "--noise", help="Override the spec's symmetry-breaking noise."),
) -> None:
    """Grow FROM's checkpoint into TO's initial weights with the spec's growth operators."""
    from familyc.expand.checkpoint import expand_checkpoint
    from familyc.expand.operators import Expansion

    plan = compile_spec(spec)
    _member_names(plan, source, target)
    width, depth = _choose(width, WIDTH_OPERATORS, "--width"), _choose(depth, DEPTH_OPERATORS, "--depth")
    step = next((s for s in plan.steps if isinstance(s, ExpandStep) and s.source == source and s.member == target),
                None)
    if step is None and (width is None or depth is None):
        grown_from = next((s.source for s in plan.steps if isinstance(s, ExpandStep) and s.member == target), None)
        raise UsageError(f"the spec does not grow {target} from {source}"
                         + (f" (it grows it from {grown_from})" if grown_from else ""),
                         hint="pass --width and --depth to expand anyway")
    if step is not None:
        width, depth = width or step.width, depth or step.depth
        seed = step.seed if seed is None else seed
        noise = step.noise if noise is None else noise
    assert width is not None and depth is not None
    src_shape, dst_shape = shape_of(plan.member(source)), shape_of(plan.member(target))
    expansion = Expansion(src_shape, dst_shape, width=width, depth=depth, seed=seed or 0, noise=noise or 0.0)
    sidecar = {
        "familyc_version": __version__, "plan_id": plan.plan_id, "spec": {"path": plan.spec.path,
                                                                          "sha256": plan.spec.sha256},
        "source": {"member": source, "shape": _shape_data(src_shape), "path": str(src)},
        "target": {"member": target, "shape": _shape_data(dst_shape)},
        "width": width, "depth": depth, "gqa": expansion.assessment.gqa, "seed": seed, "noise": noise,
        "exactness": expansion.assessment.exactness, "reasons": list(expansion.assessment.reasons),
        "optimizer_state": "fresh",
    }
    written = expand_checkpoint(src, dst, expansion, sidecar=sidecar)
    out().print(f"expanded {source} -> {target} ({width} + {depth}, {expansion.assessment.exactness}): "
                f"{units.gib(written.bytes_written)} in {written.seconds:.1f}s -> {dst}", markup=False)
    if verify:
        _verify(plan, source, target, src, dst, expansion)


def _shape_data(shape: object) -> dict[str, int]:
    return {f: getattr(shape, f) for f in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")}


def _verify(plan: Plan, source: str, target: str, src: Path, dst: Path, expansion: Expansion) -> None:
    from familyc.expand.checkpoint import load_state_dict
    from familyc.expand.verify import VERIFY_TOLERANCE, compare_models

    result = compare_models(expansion.src, load_state_dict(src), expansion.dst, load_state_dict(dst),
                            seq_len=min(plan.architecture.seq_len, 128), rope_theta=plan.architecture.rope_theta,
                            norm_eps=plan.architecture.norm_eps)
    out().print(f"verify {source} -> {target}: max |delta logit| = {result.max_abs_logit_diff:.3g}, "
                f"mean KL(source || target) = {result.mean_kl:.3g} nats over {result.tokens} tokens", markup=False)
    if expansion.assessment.exactness == EXACT and result.max_abs_logit_diff > VERIFY_TOLERANCE:
        raise FamilycError(f"{source} -> {target} is function-preserving but max |delta logit| "
                           f"{result.max_abs_logit_diff:.3g} > {VERIFY_TOLERANCE:g}",
                           hint=f"the checkpoint in {dst} does not match {src}: was it trained with another spec?")
