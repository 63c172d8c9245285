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
from familyc.errors import Diagnostic, PlanError, SpecError, UsageError
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


VALIDATE_SCHEMA_VERSION = 1
"""The version of `familyc validate --format json`'s object (README, "The PR gate"); a change to its keys bumps it."""


class ValidateFormat(StrEnum):
    text = "text"
    json = "json"


def diagnostic_data(diagnostic: Diagnostic) -> dict[str, object]:
    """One diagnostic as `validate --format json` prints it: every key always present, `hint` null when none."""
    return {"code": diagnostic.code, "file": diagnostic.file, "line": diagnostic.line, "column": diagnostic.col,
            "path": diagnostic.path, "message": diagnostic.message, "hint": diagnostic.hint or None}


def _counts(compiled: ir.Plan) -> dict[str, int]:
    trains = sum(1 for s in compiled.steps if s.kind == "train")
    return {"members": len(compiled.members), "training_stages": trains, "growth_steps": len(compiled.steps) - trains}


@app.command()
@command
def validate(
    specs: list[Path] = typer.Argument(..., help="Spec files to check.", show_default=False),
    fmt: ValidateFormat = typer.Option(ValidateFormat.text, "--format",
                                       help="text (FILE:LINE:COL lines) or json (one object on stdout, for CI)."),
) -> None:
    """Check specs against the schema and every semantic rule; report all problems at once."""
    files: list[dict[str, object]] = []
    for path in specs:
        raw, shown = read_spec(path)
        try:
            doc = load_document(raw, shown)
            compiled = compile_document(doc, ir.SpecRef(path=shown, sha256=hashlib.sha256(raw).hexdigest()))
        except SpecError as exc:
            files.append({"file": shown, "valid": False, "summary": exc.message,
                          "more_checks_pending": exc.more_checks_pending,
                          "diagnostics": [diagnostic_data(d) for d in exc.diagnostics], "warnings": [],
                          "members": None, "training_stages": None, "growth_steps": None})
            if fmt is ValidateFormat.text:
                report_error(exc)
            continue
        counts = _counts(compiled)
        nouns = (("members", "member"), ("training_stages", "training stage"), ("growth_steps", "growth step"))
        summary = f"valid ({', '.join(_plural(counts[key], noun) for key, noun in nouns)})"
        files.append({"file": shown, "valid": True, "summary": summary, "more_checks_pending": False,
                      "diagnostics": [], "warnings": list(compiled.warnings), **counts})
        if fmt is ValidateFormat.text:
            out().print(f"{shown}: {summary}", markup=False)
    valid = all(f["valid"] for f in files)
    if fmt is ValidateFormat.json:
        typer.echo(json.dumps({"schema_version": VALIDATE_SCHEMA_VERSION, "valid": valid, "files": files}, indent=2))
    if not valid:
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
