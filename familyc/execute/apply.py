"""`familyc apply` from start to end: everything between the command line and the walk over the steps.

On node 0: check the inputs before anything is written, take the run directory's lock, create or reopen
it, stop stage workers a killed apply left training, refuse while an earlier stage still runs, write the
flavors and resolve the data, then walk the plan (familyc.execute.executor) or write the sbatch script
(familyc.execute.slurm). On another node: wait for node 0's run directory and train with it
(familyc.execute.worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from familyc import render, units
from familyc.errors import FamilycError
from familyc.execute import jobs
from familyc.execute.data import DataInputs, check_inputs, prepare_data
from familyc.execute.executor import ApplyOptions, Executor
from familyc.execute.lock import run_lock
from familyc.execute.processes import stale_stage, stop_orphaned_workers
from familyc.execute.progress import make_progress
from familyc.execute.rundir import RunDir, check_spec_unchanged, check_usable, open_run_dir
from familyc.execute.state import RunState
from familyc.execute.tracking import require as require_trackers
from familyc.execute.worker import Worker, wait_for_run_dir
from familyc.plan.ir import Plan, read_plan


@dataclass(frozen=True, kw_only=True, slots=True)
class ApplyResult:
    run: RunDir
    summary: render.Document | None
    """Every selected step's status and numbers (None on a worker node, or when a script was written)."""
    script: Path | None = None
    submitted: str | None = None
    """What sbatch answered."""


SPEC_SUFFIXES = (".yaml", ".yml")


def load_target(path: Path) -> tuple[Plan, Path | None, str | None]:
    """What `familyc apply PLAN|SPEC` runs: a plan file as it is (checked against its spec, when the spec is
    found), or a spec compiled now. (plan, plan file or None, a warning or None)."""
    if path.suffix in SPEC_SUFFIXES:
        from familyc.compiler import compile_spec

        return compile_spec(path), None, None
    plan = read_plan(path)
    return plan, path, check_spec_unchanged(plan, plan_file=path)


def default_run_dir(plan: Plan) -> Path:
    return Path("runs") / f"{plan.family.name}-{plan.plan_id[:8]}"


def apply_plan(plan: Plan, *, plan_file: Path | None, root: Path, options: ApplyOptions, slurm: bool = False,
               submit: bool = False, out: Console, err: Console) -> ApplyResult:
    """Run (or, `slurm`, script) the plan in `root`. Progress goes to `out`, notes to `err`."""
    if plan.cluster.nodes > options.launch.nnodes:
        err.print(f"note: the plan assumes {plan.cluster.nodes} nodes; this runs on {options.launch.nnodes} "
                  f"(gradient accumulation keeps the global batch)", style="yellow", markup=False)
    if options.worker:
        return _work(plan, root, options, plan_file, out)
    # nothing is written for a run that cannot start
    require_trackers(options.track)
    resolved = check_inputs(plan, plan_file=plan_file, offline=options.offline)
    check_usable(root)
    with run_lock(RunDir(root)):
        run, state = open_run_dir(root, plan)
        stopped = stop_orphaned_workers(run)
        if stopped:
            err.print(f"note: stopped {len(stopped)} stage processes that a killed apply left training "
                      f"(pids {', '.join(map(str, stopped))}); their stage resumes from its last checkpoint",
                      style="yellow", markup=False)
        stale = stale_stage(run, plan)
        if stale:
            raise FamilycError(stale, hint="wait for it to finish, or kill that process, then apply again")
        jobs.write_flavors(plan, run)  # node 0 only: rewritten by another node, a starting stage could read half
        data = prepare_data(plan, run, plan_file=plan_file, resolved=resolved)
        if slurm:
            from familyc.execute.slurm import write_slurm

            script, answer = write_slurm(plan, run, options, data, plan_file=plan_file, submit=submit)
            return ApplyResult(run=run, summary=None, script=script, submitted=answer)
        _walk(Executor(plan, run, state, options, make_progress(out), data))
        return ApplyResult(run=run, summary=summary(plan, run, state, options))


def _walk(walker: Executor | Worker) -> None:
    try:
        walker.apply()
    finally:
        walker.progress.close()


def _work(plan: Plan, root: Path, options: ApplyOptions, plan_file: Path | None, out: Console) -> ApplyResult:
    """A node other than 0: train each stage with node 0, which keeps the state and grows the members."""
    run = wait_for_run_dir(root)
    data: DataInputs = prepare_data(plan, run, plan_file=plan_file, offline=options.offline)
    _walk(Worker(plan, run, options, make_progress(out), data))
    return ApplyResult(run=run, summary=None)


def summary(plan: Plan, run: RunDir, state: RunState, options: ApplyOptions) -> render.Document:
    rows = []
    for step in plan.all_steps() if options.baselines else plan.steps:
        st = state.step(step.id)
        m = st.metrics
        seconds = m.get("wall_seconds")
        rows.append((step.id, st.status, units.count(m["tokens"]) if "tokens" in m else "",
                     f"{m['final_loss']:.4f}" if isinstance(m.get("final_loss"), float) else "",
                     units.seconds(step.predicted_seconds),
                     units.seconds(seconds) if isinstance(seconds, int | float) else ""))
    return render.Document(title=f"run {run.root} (plan {plan.plan_id})", tables=(render.Table(
        title="Steps", headers=("step", "status", "tokens", "final loss", "predicted", "actual"), rows=tuple(rows),
        right=frozenset({2, 3, 4, 5})),))
