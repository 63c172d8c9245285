"""familyc export: a trained member of a run directory as a Hugging Face Llama checkpoint."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from familyc import units
from familyc.cli.app import app, command, out
from familyc.errors import FamilycError, UsageError
from familyc.execute.rundir import MEMBER_SIDECAR, RunDir
from familyc.execute.state import COMPLETED, RunState
from familyc.plan import ir
from familyc.plan.ir import Plan, TrainStep
from familyc.spec.schema import did_you_mean

if TYPE_CHECKING:  # torch is imported only when the command runs (the CLI starts without it)
    from familyc.backend.hf_export import CardFacts


class Dtype(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"


@app.command()
@command
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="The run directory of familyc apply.",
                                   show_default=False),
    member: str = typer.Argument(..., metavar="MEMBER", help="The trained member to export.", show_default=False),
    hf: Path = typer.Option(..., "--hf", help="Write a Hugging Face Llama folder here (must not exist).",
                            show_default=False),
    baseline: bool = typer.Option(False, "--baseline", help="Export the member trained from scratch (apply "
                                  "--baselines) instead of the progressive one."),
    dtype: Dtype = typer.Option(Dtype.float32, "--dtype", help="Weights' dtype in the safetensors files."),
) -> None:
    """Write a trained member as a Hugging Face Llama checkpoint (config, safetensors, tokenizer, model card)."""
    from familyc.backend.hf_export import export_member
    from familyc.execute.data import run_tokenizer_dir
    from familyc.expand.checkpoint import CheckpointError, verify_sidecar

    run, plan, state = _open(run_dir)
    _check_member(plan, member)
    step = _train_step(plan, member, baseline=baseline)
    status = state.steps[step.id].status if step.id in state.steps else None
    if status != COMPLETED:
        how = f"familyc apply {run.plan_path} --run-dir {run.root}" + (" --baselines" if baseline else "")
        raise FamilycError(f"{member} is not trained yet: step {step.id} is {status or 'not in the run'} in "
                           f"{run.state_path}", hint=f"train it first: {how}")
    weights = run.weights(step)
    if hf.exists() or hf.is_symlink():  # before reading anything: say it at once
        raise FamilycError(f"{hf}: already exists; familyc never overwrites an export",
                           hint="choose another --hf folder, or remove it first")
    if not weights.is_dir():
        raise CheckpointError(f"{weights}: missing, although {run.state_path} says {step.id} is completed")
    problems = verify_sidecar(weights, sidecar=MEMBER_SIDECAR)
    if problems:
        raise CheckpointError(problems, hint=f"{weights} changed since training wrote it: restore it, or run "
                              "familyc apply again (a completed step whose files do not verify is trained again)")
    tokenizer_dir = run_tokenizer_dir(plan, run)
    source = {"run_dir": str(run.root.resolve()), "checkpoint": run.relative(weights), "tokenizer": str(tokenizer_dir)}
    exported = export_member(plan, member, weights, hf, tokenizer_dir=tokenizer_dir,
                             facts=_facts(plan, run, state, step), dtype=dtype.value, sidecar={"source": source})
    out().print(f"exported {member}{' (baseline)' if baseline else ''} of {plan.family.name} as {dtype.value}: "
                f"{units.gib(exported.bytes_written)} -> {hf}", markup=False)


def _open(root: Path) -> tuple[RunDir, Plan, RunState]:
    run = RunDir(root)
    if not run.is_run_dir():
        raise FamilycError(f"{root} is not a familyc run directory (no {run.state_path.name})",
                           hint="give the folder familyc apply trained in (--run-dir; default runs/<family>-<plan id>)")
    state = RunState.load(run.state_path)
    try:
        plan = ir.loads(run.plan_path.read_text(encoding="utf-8"), source=str(run.plan_path))
    except (OSError, UnicodeDecodeError) as exc:
        raise FamilycError(f"{run.plan_path}: cannot read the run's plan ({exc})") from None
    if plan.plan_id != state.plan_id:
        raise FamilycError(f"{run.plan_path} is plan {plan.plan_id}, but {run.state_path} belongs to plan "
                           f"{state.plan_id}", hint="the run directory was edited by hand; restore plan.json")
    return run, plan, state


def _check_member(plan: Plan, name: str) -> None:
    known = [m.name for m in plan.members]
    if name not in known:
        guess = did_you_mean(name, known)
        raise UsageError(f"family {plan.family.name} has no member {name!r}",
                         hint=f"did you mean {guess!r}?" if guess else "members: " + ", ".join(known))


def _train_step(plan: Plan, member: str, *, baseline: bool) -> TrainStep:
    if baseline:
        return next(b.train for b in plan.baseline.members if b.name == member)
    step = plan.step(f"train-{member}")
    assert isinstance(step, TrainStep)
    return step


def _facts(plan: Plan, run: RunDir, state: RunState, step: TrainStep) -> CardFacts:
    """The model card's facts: tokens of this stage and of the stages it grew from (state.json), losses."""
    from familyc.backend.hf_export import CardFacts

    def metric(step_id: str, key: str) -> float | int | None:
        value = state.steps[step_id].metrics.get(key) if step_id in state.steps else None
        return value if isinstance(value, int | float) else None

    lineage, tokens, current = [], metric(step.id, "tokens"), step
    lineage_tokens = tokens
    while current.source is not None and not step.id.startswith("baseline-"):
        lineage.insert(0, current.source)
        current = plan.step(f"train-{current.source}")  # type: ignore[assignment]
        earlier = metric(current.id, "tokens")
        lineage_tokens = None if lineage_tokens is None or earlier is None else lineage_tokens + int(earlier)
    return CardFacts(step=step.id, baseline=step.id.startswith("baseline-"), lineage=tuple(lineage),
                     tokens=None if tokens is None else int(tokens), lineage_tokens=lineage_tokens,
                     final_loss=metric(step.id, "final_loss"), heldout_loss=_heldout_loss(run, step))


def _heldout_loss(run: RunDir, step: TrainStep) -> float | None:
    """The member's held-out loss where `familyc report` evaluated these very weights (its cache)."""
    from familyc.report.quality import CACHE_FILE, CACHE_VERSION, Weights

    try:
        cache = json.loads((run.root / "report" / CACHE_FILE).read_text(encoding="utf-8"))
        weights = Weights(label=step.id, member=step.member, path=run.weights(step), sidecar=MEMBER_SIDECAR)
        value = cache["loss"][weights.digest()] if cache.get("version") == CACHE_VERSION else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None
