"""familyc report and familyc calibrate: what a run cost against its plan, and how good the family is."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from familyc import render
from familyc.cli.app import app, command, err, out


class ReportFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"
    html = "html"


class HeldoutPartOption(StrEnum):
    """familyc.enums.HeldoutPart, as typer needs it."""

    all = "all"
    validation = "validation"
    test = "test"


@app.command()
@command
def report(
    run_dir: Path = typer.Argument(..., help="A run directory (familyc apply --run-dir).", show_default=False),
    fmt: ReportFormat = typer.Option(ReportFormat.text, "--format", help="text, json, markdown or html."),
    output: Path | None = typer.Option(None, "-o", "--output",
                                       help="Write the report and its plots here (default: RUN_DIR/report)."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the held-out evaluation (no models are loaded)."),
    max_tokens: int = typer.Option(32_768, "--heldout-tokens", min=256, help="Held-out tokens to evaluate on."),
    part: HeldoutPartOption = typer.Option(HeldoutPartOption.all, "--heldout-part",
                                     help="all of the held-out documents, or one half of them: choose "
                                          "configurations on validation, report on test."),
) -> None:
    """Predicted against actual compute per step, held-out loss, KL between members, plots."""
    from familyc.enums import heldout_part
    from familyc.meter import meters
    from familyc.report.collect import collect
    from familyc.report.publish import publish

    with meters(err()) as progress:
        report = collect(run_dir, evaluate=not no_eval, max_tokens=max_tokens, part=heldout_part(part.value),
                         progress=progress)
    published = publish(report, output or run_dir / "report")
    if fmt is ReportFormat.json:
        typer.echo(published.json, nl=False)
    elif fmt is ReportFormat.markdown:
        typer.echo(published.markdown, nl=False)
    elif fmt is ReportFormat.html:
        typer.echo(published.html, nl=False)
    else:
        render.render_text(published.document, out())


@app.command()
@command
def calibrate(
    run_dir: Path = typer.Argument(..., help="A run directory.", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="The profile to write (JSON).", show_default=False),
) -> None:
    """Write the run's measured MFU and start-up per stage as a profile for `familyc plan --profile`."""
    from familyc.report.calibrate import calibrate as write

    body = write(run_dir, output)
    out().print(f"wrote {output}: {body['accelerator']}/{body['precision']}, MFU {body['mfu']:.1%} against "
                f"{body['peak_flops']:.3g} FLOP/s per device, {body['stage_overhead_seconds']:.1f} s start-up per "
                f"stage, from {len(body['stages'])} stages", markup=False)
