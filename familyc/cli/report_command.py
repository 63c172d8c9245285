"""familyc report and familyc calibrate: what a run cost against its plan, and how good the family is."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from familyc import render
from familyc.cli.app import app, command, out


class ReportFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"
    html = "html"


@app.command()
@command
def report(
    run_dir: Path = typer.Argument(..., help="A run directory (familyc apply --run-dir).", show_default=False),
    fmt: ReportFormat = typer.Option(ReportFormat.text, "--format", help="text, json, markdown or html."),
    output: Path | None = typer.Option(None, "-o", "--output",
                                       help="Write the report and its plots here (default: RUN_DIR/report)."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the held-out evaluation (no models are loaded)."),
    max_tokens: int = typer.Option(32_768, "--heldout-tokens", min=256, help="Held-out tokens to evaluate on."),
) -> None:
    """Predicted against actual compute per step, held-out loss, KL between members, plots."""
    from familyc.report.collect import collect
    from familyc.report.view import markdown_with_plots, render_html, report_document

    result = collect(run_dir, evaluate=not no_eval, max_tokens=max_tokens)
    folder = output or run_dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, folder)
    doc = report_document(result, plots=plots)
    data = json.dumps(result.to_data(), indent=2) + "\n"
    markdown = markdown_with_plots(render.render_markdown(doc), plots)
    page = render_html(doc, plots)
    (folder / "report.json").write_text(data)
    (folder / "report.md").write_text(markdown)
    (folder / "report.html").write_text(page)
    (folder / "report.txt").write_text(render.text(doc))
    if fmt is ReportFormat.json:
        typer.echo(data, nl=False)
    elif fmt is ReportFormat.markdown:
        typer.echo(markdown, nl=False)
    elif fmt is ReportFormat.html:
        typer.echo(page, nl=False)
    else:
        render.render_text(doc, out())


def _plots(result, folder: Path) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    try:
        from familyc.report.plots import write_plots
    except ImportError:  # pragma: no cover - matplotlib comes with the train extra
        return {}
    return write_plots(result, folder)


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
