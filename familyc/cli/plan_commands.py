"""validate, plan, show, diff, schema: the torch-free half of the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from enum import StrEnum
from pathlib import Path

import typer

from familyc import render
from familyc.cli.app import app, command, err, out, report_error
from familyc.compiler import compile_document, compile_spec, load_document, read_spec
from familyc.errors import PlanError, SpecError, UsageError
from familyc.files import atomic_write
from familyc.plan import ir
from familyc.plan.diff import diff_data, diff_document, diff_plans
from familyc.plan.view import plan_document
from familyc.spec.schema import schema_text


class Format(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def emit(doc: render.Document, fmt: Format, data: object) -> None:
    if fmt is Format.json:
        typer.echo(json.dumps(data, indent=2))
    elif fmt is Format.markdown:
        typer.echo(render.render_markdown(doc), nl=False)
    elif sys.stdout.isatty():
        render.render_text(doc, out())
    else:  # logs, pipes, CI: no colour, a fixed width, no trailing blanks
        typer.echo(render.text(doc, width=int(os.environ.get("COLUMNS", "160"))), nl=False)


@app.command()
@command
def validate(specs: list[Path] = typer.Argument(..., help="Spec files to check.", show_default=False)) -> None:
    """Check specs against the schema and every semantic rule; report all problems at once."""
    failed = 0
    for path in specs:
        raw, shown = read_spec(path)
        try:
            doc = load_document(raw, shown)
            plan = compile_document(doc, ir.SpecRef(path=shown, sha256=hashlib.sha256(raw).hexdigest()))
        except SpecError as exc:
            failed += 1
            report_error(exc)
            continue
        trains = sum(1 for s in plan.steps if s.kind == "train")
        counts = ", ".join(_plural(n, noun) for n, noun in ((len(plan.members), "member"),
                                                            (trains, "training stage"),
                                                            (len(plan.steps) - trains, "growth step")))
        out().print(f"{shown}: valid ({counts})", markup=False)
    if failed:
        raise typer.Exit(1)


@app.command()
@command
def plan(
    spec: Path = typer.Argument(..., help="The family spec (YAML).", show_default=False),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the plan file here."),
    fmt: Format = typer.Option(Format.text, "--format", help="What to print: the summary, the plan JSON, or Markdown."),
    check: Path | None = typer.Option(None, "--check",
                                      help="Exit 1 if this plan file is not what plan would write now."),
    profile: Path | None = typer.Option(None, "--profile",
                                        help="Predict times from a calibration profile (familyc calibrate)."),
) -> None:
    """Compile a spec into a plan: steps, tokens, LR, memory, FLOPs, time, GPU-hours and $."""
    compiled = compile_spec(spec, profile=profile)
    text = ir.dumps(compiled)
    if check is not None:
        try:
            current = check.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"{check}: no such plan file") from None
        if current != text:
            old = None
            try:
                old = ir.loads(current, source=str(check))
            except PlanError:
                pass
            if old is not None:
                render.render_text(diff_document(diff_plans(old, compiled)), err())
            again = f"familyc plan {spec}" + (f" --profile {profile}" if profile else "")
            raise PlanError(f"{check} is stale: it is not what `{again}` writes now",
                            hint=f"regenerate it: {again} -o {check}")
        out().print(f"{check}: up to date (plan {compiled.plan_id})", markup=False)
        return
    if output is not None:
        atomic_write(output, text)
    if fmt is Format.json:
        typer.echo(text, nl=False)
    else:
        emit(plan_document(compiled), fmt, None)
    if output is not None and fmt is Format.text:
        out().print(f"wrote {output}", markup=False)


@app.command()
@command
def show(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="A plan file.", show_default=False),
    fmt: Format = typer.Option(Format.text, "--format"),
) -> None:
    """Render a plan file."""
    loaded = ir.read_plan(plan_file)
    if fmt is Format.json:
        typer.echo(ir.dumps(loaded), nl=False)
    else:
        emit(plan_document(loaded), fmt, None)


@app.command()
@command
def diff(
    old: Path = typer.Argument(..., help="The plan before.", show_default=False),
    new: Path = typer.Argument(..., help="The plan after.", show_default=False),
    fmt: Format = typer.Option(Format.text, "--format", help="markdown makes a pull-request comment."),
) -> None:
    """Show what changed between two plans, with the cost delta per step and in total."""
    d = diff_plans(ir.read_plan(old), ir.read_plan(new))
    emit(diff_document(d), fmt, diff_data(d))


@app.command()
@command
def schema() -> None:
    """Print the spec's JSON Schema (Draft 2020-12), for editors."""
    typer.echo(schema_text(), nl=False)
