"""familyc doctor: before a long run, whether this machine can run the plan (one line per check)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from familyc.cli.app import TRAIN_EXTRA, app, command
from familyc.errors import UsageError


class DoctorFormat(StrEnum):
    text = "text"
    json = "json"


@app.command()
@command
def doctor(
    target: Path | None = typer.Argument(None, metavar="[PLAN|SPEC]", show_default=False,
                                         help="A plan file, or a spec to plan first; none: the environment only."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Where apply will run (default: apply's, "
                                                                "runs/<family>-<plan id>): its disk is checked."),
    offline: bool = typer.Option(False, "--offline", help="As apply --offline: hub files must be in the cache."),
    fmt: DoctorFormat = typer.Option(DoctorFormat.text, "--format", help="text, or json for scripts."),
) -> None:
    """Check python, torch, torchtitan, the accelerator, NCCL, free disk, offline mode, the tokenizer and the data
    against the plan, one line each (ok, warn, FAIL); nothing is downloaded. Exit 1 when a check FAILs."""
    from familyc.execute.doctor import doctor as run_doctor
    from familyc.execute.doctor_report import doctor_data, doctor_text

    plan, plan_file = None, None
    if target is not None:
        if not target.exists():
            raise UsageError(f"{target}: no such file",
                             hint="a plan (plans/NAME.plan.json) or a spec (specs/NAME.yaml)")
        from familyc.execute.apply import SPEC_SUFFIXES
        from familyc.plan.ir import read_plan

        if target.suffix in SPEC_SUFFIXES:
            from familyc.compiler import compile_spec

            plan = compile_spec(target)
        else:
            plan, plan_file = read_plan(target), target
    report = run_doctor(plan, plan_file=plan_file, target=None if target is None else str(target), run_dir=run_dir,
                        offline=offline, train_extra=TRAIN_EXTRA)
    if fmt is DoctorFormat.json:
        typer.echo(json.dumps(doctor_data(report), indent=2))
    else:
        typer.echo(doctor_text(report), nl=False)
    if not report.ok:
        raise typer.Exit(1)
