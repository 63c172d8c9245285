"""familyc rehearse: run every stage of a plan once at its real shape and world size on fake tensors."""

from __future__ import annotations

from pathlib import Path

import typer

from familyc.cli.app import app, command, err, require_train_extra
from familyc.cli.plan_commands import Format, emit


@app.command()
@command
def rehearse(
    target: Path = typer.Argument(..., metavar="PLAN|SPEC", help="A plan file, or a spec to plan first.",
                                  show_default=False),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json or markdown."),
    only: list[str] = typer.Option([], "--step", help="Rehearse just this step (repeatable)."),
) -> None:
    """Before a GPU-hour is spent: every training stage's peak memory per device and FLOPs, and every growth
    step's keys, on this machine (no GPU, no weights, no network). Exit 1 when a stage does not fit or fails."""
    require_train_extra("familyc rehearse")
    from familyc.execute.apply import load_target
    from familyc.execute.rehearse import rehearsal_data, rehearsal_document, rehearse_plan

    plan, _, warning = load_target(target)
    console = err()
    if warning:
        console.print(f"warning: {warning}", style="yellow", markup=False)
    result = rehearse_plan(plan, only=only, progress=lambda line: console.print(line, markup=False))
    emit(rehearsal_document(result), fmt, rehearsal_data(result))
    if not result.ok:
        raise typer.Exit(1)
