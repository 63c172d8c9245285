"""familyc expand: grow a trained member's checkpoint into the next member's initial weights."""

from __future__ import annotations

from pathlib import Path

import typer

from familyc import units
from familyc.cli.app import app, command, err, out, require_train_extra


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
    optimizer: str | None = typer.Option(None, "--optimizer", help="fresh: the weights alone; carry: also grow the "
                                         "AdamW moments in FROM's optimizer folder (default: the spec's policy)."),
) -> None:
    """Grow FROM's checkpoint into TO's initial weights with the spec's growth operators (and, with the carry
    policy, FROM's optimizer moments)."""
    require_train_extra("familyc expand")
    from familyc.compiler import compile_spec
    from familyc.execute.grow import Overrides, grow, require_preserved
    from familyc.execute.grow import verify as compare
    from familyc.meter import meters

    plan = compile_spec(spec)
    with meters(err()) as progress:
        grown = grow(plan, source, target, src, dst, Overrides(width=width, depth=depth, seed=seed, noise=noise,
                                                                   optimizer=optimizer),
                     progress=progress)
    g = grown.growth
    moments = ", optimizer moments carried" if grown.optimizer == "carry" else ""
    out().print(f"expanded {source} -> {target} ({g.width} + {g.depth}, {g.exactness}{moments}): "
                f"{units.gib(grown.bytes_written)} in {grown.seconds:.1f}s -> {dst}", markup=False)
    if grown.norm_eps != grown.planned_norm_eps:
        err().print(f"note: these weights compute {source}'s function with norm eps {grown.norm_eps:.6g}; the plan's "
                    f"{target} has {grown.planned_norm_eps:.6g} (its spec grows it with other operators)",
                    style="yellow", markup=False)
    if verify:
        result = compare(plan, source, target, src, dst, grown)
        out().print(f"verify {source} -> {target}: max |delta logit| = {result.max_abs_logit_diff:.3g}, "
                    f"mean KL(source || target) = {result.mean_kl:.3g} nats over {result.tokens} tokens",
                    markup=False)
        require_preserved(source, target, src, dst, grown, result)
