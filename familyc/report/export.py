"""`familyc export`: a trained member of a run directory as a Hugging Face Llama folder.

Checks before anything is written: the member is trained in the run's state, its weights are there and
match their sidecar, the destination does not exist. Then familyc.backend.hf_export writes the folder,
with a model card whose facts come from the run (tokens of the member's stage and of the stages it grew
from, its final training loss, its held-out loss where `familyc report` measured it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from familyc.checkpoint.sidecar import SourceRecord, verify_sidecar
from familyc.enums import COMPLETED
from familyc.errors import CheckpointError, FamilycError
from familyc.execute.data import run_tokenizer_dir
from familyc.execute.grow import check_members
from familyc.execute.rundir import RunDir, open_existing
from familyc.execute.state import RunState
from familyc.meter import Start, quiet
from familyc.plan.ir import Plan
from familyc.plan.steps import TrainStep
from familyc.report.quality import cached_heldout_loss

if TYPE_CHECKING:  # torch is imported only when an export runs
    from familyc.backend.hf_export import CardFacts, Exported


def export_run_member(run_dir: Path, member: str, out: Path, *, baseline: bool = False,
                      dtype: str = "float32", progress: Start = quiet) -> tuple[Plan, Exported]:
    """Export `member` (its progressive weights, or with `baseline` its from-scratch twin's) of the run into `out`."""
    from familyc.backend.hf_export import export_member

    run, plan, state = open_existing(run_dir)
    check_members(plan, member, where=f"family {plan.family.name}")
    step = plan.train_step(member, baseline=baseline)
    status = state.steps[step.id].status if step.id in state.steps else None
    if status != COMPLETED:
        how = f"familyc apply {run.plan_path} --run-dir {run.root}" + (" --baselines" if baseline else "")
        raise FamilycError(f"{member} is not trained yet: step {step.id} is {status or 'not in the run'} in "
                           f"{run.state_path}", hint=f"train it first: {how}")
    weights = run.weights(plan, step)
    if out.exists() or out.is_symlink():  # before reading anything: say it at once
        raise FamilycError(f"{out}: already exists; familyc never overwrites an export",
                           hint="choose another --hf folder, or remove it first")
    if not weights.is_dir():
        raise CheckpointError(f"{weights}: missing, although {run.state_path} says {step.id} is completed")
    problems = verify_sidecar(weights, kind="member")
    if problems:
        raise CheckpointError(problems, hint=f"{weights} changed since training wrote it: restore it, or run "
                              "familyc apply again (a completed step whose files do not verify is trained again)")
    tokenizer_dir = run_tokenizer_dir(plan, run)
    source = SourceRecord(member=member, shape=plan.shape(member), checkpoint=run.relative(weights),
                          run_dir=str(run.root.resolve()), tokenizer=str(tokenizer_dir))
    exported = export_member(plan, member, weights, out, tokenizer_dir=tokenizer_dir,
                             facts=card_facts(plan, run, state, step), dtype=dtype, source=source,
                             progress=progress)
    return plan, exported


def card_facts(plan: Plan, run: RunDir, state: RunState, step: TrainStep) -> CardFacts:
    """The model card's facts: tokens of this stage and of the stages it grew from (state.json), losses."""
    from familyc.backend.hf_export import CardFacts

    def tokens(step_id: str) -> int | None:
        value = state.steps[step_id].metrics.get("tokens") if step_id in state.steps else None
        return int(value) if isinstance(value, int | float) else None

    final_loss = state.steps[step.id].metrics.get("final_loss") if step.id in state.steps else None
    baseline = plan.is_baseline(step)
    lineage = () if baseline else plan.lineage(step.member)
    # This member's stages (a decay branch continues its stable phase) and, before them, the stable phase (or the
    # only stage) of each member it grew from: a member grows from weights that never saw their decay branch.
    stages = [tokens(s.id) for s in (plan.stages_of(step.member) if not baseline else (step,))]
    own = None if None in stages else sum(t or 0 for t in stages)
    earlier = [tokens(plan.growth_source(name).id) for name in lineage]
    lineage_tokens = None if own is None or None in earlier else own + sum(t or 0 for t in earlier)
    return CardFacts(step=step.id, baseline=baseline, lineage=lineage, tokens=own, lineage_tokens=lineage_tokens,
                     final_loss=final_loss if isinstance(final_loss, int | float) else None,
                     heldout_loss=cached_heldout_loss(plan, run, step))
