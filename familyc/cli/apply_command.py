"""familyc apply and familyc status: run a plan on torchtitan, resumably; show where a run stands."""

from __future__ import annotations

import subprocess
import sys
from enum import StrEnum
from pathlib import Path

import typer

from familyc import render, units
from familyc.cli.app import app, command, err, out
from familyc.compiler import compile_spec
from familyc.errors import FamilycError, UsageError
from familyc.execute.rundir import RunDir, all_steps, check_spec_unchanged
from familyc.execute.state import COMPLETED, RunState
from familyc.plan import ir
from familyc.plan.view import plan_document

SPEC_SUFFIXES = (".yaml", ".yml")


class Launcher(StrEnum):
    local = "local"
    slurm = "slurm"


def load_plan_or_spec(path: Path) -> tuple[ir.Plan, Path | None]:
    """A plan file as it is, or a spec compiled now: (plan, plan file or None)."""
    if path.suffix in SPEC_SUFFIXES:
        return compile_spec(path), None
    from familyc.cli.plan_commands import read_plan

    plan = read_plan(path)
    warning = check_spec_unchanged(plan, plan_file=path)
    if warning:
        err().print(f"warning: {warning}", style="yellow", markup=False)
    return plan, path


@app.command()
@command
def apply(
    target: Path = typer.Argument(..., metavar="PLAN|SPEC", help="A plan file, or a spec to plan first.",
                                  show_default=False),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Default: runs/<family>-<plan id>."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    nproc_per_node: int | None = typer.Option(None, "--nproc-per-node", min=1,
                                              help="Processes per node (default: the plan's gpus_per_node)."),
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="Nodes taking part (each runs this command)."),
    node_rank: int = typer.Option(0, "--node-rank", min=0, help="This node's rank; 0 keeps the state."),
    rdzv_endpoint: str | None = typer.Option(None, "--rdzv-endpoint", help="host:port of the c10d rendezvous."),
    baselines: bool = typer.Option(False, "--baselines", help="Also train every member from scratch."),
    only: list[str] = typer.Option([], "--only", help="Run just this step (repeatable)."),
    launcher: Launcher = typer.Option(Launcher.local, "--launcher", help="slurm: write an sbatch script."),
    submit: bool = typer.Option(False, "--submit", help="With --launcher slurm: submit the script with sbatch."),
    compile_: bool | None = typer.Option(None, "--compile/--no-compile", help="Override the plan's torch.compile."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints",
                                          help="Keep each stage's periodic checkpoints after it finishes."),
    stage_args: list[str] = typer.Option([], "--stage-arg", hidden=True,
                                         help="Extra torchtitan option for every stage (tests)."),
) -> None:
    """Train the family the plan describes: train, expand, train, ... (resumes where it stopped)."""
    from familyc.execute.data import check_inputs
    from familyc.execute.executor import ApplyOptions, Executor, run_lock
    from familyc.execute.launcher import Launch
    from familyc.execute.processes import stale_stage, stop_orphaned_workers
    from familyc.execute.progress import make_progress
    from familyc.execute.rundir import check_usable, open_run_dir

    plan, plan_file = load_plan_or_spec(target)
    if nnodes > 1 and rdzv_endpoint is None:
        raise UsageError("several nodes need --rdzv-endpoint host:port (the rendezvous on node 0)")
    if node_rank >= nnodes:
        raise UsageError(f"--node-rank {node_rank} is not below --nnodes {nnodes}")
    if submit and launcher is not Launcher.slurm:
        raise UsageError("--submit goes with --launcher slurm")
    root = run_dir or Path("runs") / f"{plan.family.name}-{plan.plan_id[:8]}"
    console = out()
    if plan_file is None and node_rank == 0:
        render.render_text(plan_document(plan), console) if console.is_terminal else typer.echo(
            render.text(plan_document(plan)), nl=False)
    if not yes and node_rank == 0:
        if not sys.stdin.isatty():
            raise UsageError("not on a terminal: pass --yes to apply without confirming")
        if not typer.confirm(f"Train family {plan.family.name} (plan {plan.plan_id}) in {root}?"):
            raise typer.Exit(1)
    nproc = nproc_per_node or plan.cluster.gpus_per_node
    if plan.cluster.nodes > nnodes:
        err().print(f"note: the plan assumes {plan.cluster.nodes} nodes; this runs on {nnodes} "
                    f"(gradient accumulation keeps the global batch)", style="yellow", markup=False)
    launch = Launch(nproc_per_node=nproc, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                    on_cpu=plan.cluster.accelerator == "cpu")
    options = ApplyOptions(launch=launch, baselines=baselines, only=tuple(only), compile=compile_,
                           keep_checkpoints=keep_checkpoints, worker=node_rank > 0,
                           extra_stage_args=tuple(stage_args))
    if node_rank > 0:
        _work(plan, root, options, plan_file)
        return
    check_inputs(plan, plan_file=plan_file)  # nothing is written for a run that cannot start
    check_usable(root)
    with run_lock(RunDir(root)):
        run, state = open_run_dir(root, plan)
        stopped = stop_orphaned_workers(run)
        if stopped:
            err().print(f"note: stopped {len(stopped)} stage processes that a killed apply left training "
                        f"(pids {', '.join(map(str, stopped))}); their stage resumes from its last checkpoint",
                        style="yellow", markup=False)
        stale = stale_stage(run, plan)
        if stale:
            raise FamilycError(stale, hint="wait for it to finish, or kill that process, then apply again")
        data = _prepare(plan, run, plan_file)
        if launcher is Launcher.slurm:
            _write_slurm(plan, run, state, options, data, plan_file, submit)
            return
        progress = make_progress(console)
        try:
            Executor(plan, run, state, options, progress, data).apply()
        finally:
            progress.close()
        _summary(plan, run, state, baselines=baselines)


def _prepare(plan: ir.Plan, run: RunDir, plan_file: Path | None, *, worker: bool = False):  # type: ignore[no-untyped-def]
    from familyc.backend.flavors import write_flavors
    from familyc.backend.model import plan_model_args
    from familyc.execute.data import prepare_data
    from familyc.execute.executor import flavor_name

    if not worker:  # node 0 writes it; rewritten by another node, a stage starting meanwhile could read half of it
        write_flavors(run.flavors_path, {flavor_name(m.name): plan_model_args(plan, m.name) for m in plan.members})
    return prepare_data(plan, run, plan_file=plan_file)


def _work(plan: ir.Plan, root: Path, options, plan_file: Path | None) -> None:  # type: ignore[no-untyped-def]
    """A node other than 0: train each stage with node 0, which keeps the state and grows the members."""
    import time

    from familyc.execute.executor import Executor
    from familyc.execute.progress import make_progress

    run = RunDir(root)
    while not run.is_run_dir():  # node 0 creates it
        time.sleep(0.5)
    state = RunState.load(run.state_path)
    data = _prepare(plan, run, plan_file, worker=True)
    progress = make_progress(out())
    try:
        Executor(plan, run, state, options, progress, data).apply()
    finally:
        progress.close()


def _write_slurm(plan, run, state, options, data, plan_file, submit) -> None:  # type: ignore[no-untyped-def]
    from familyc.execute.executor import Executor
    from familyc.execute.progress import PlainProgress
    from familyc.execute.slurm import SCRIPT, sbatch_script

    if plan_file is None:  # the script applies a plan file; keep the compiled one in the run directory
        plan_file = run.plan_path
    executor = Executor(plan, run, state, options, PlainProgress(err()), data)
    for step in executor.selected():
        if isinstance(step, ir.TrainStep):
            init = run.weights(plan.step(step.init_from)) if step.init_from else None
            stage = run.step_dir(step.id)
            stage.mkdir(parents=True, exist_ok=True)
            executor._write_job(step, stage, stage / "dump", init)
    script = run.root / SCRIPT
    script.write_text(sbatch_script(plan, run, plan_file=plan_file, python=sys.executable,
                                    nproc_per_node=options.launch.nproc_per_node, nnodes=options.launch.nnodes,
                                    baselines=options.baselines, on_cpu=options.launch.on_cpu, workdir=Path.cwd()))
    script.chmod(0o755)
    out().print(f"wrote {script}", markup=False)
    if submit:
        result = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise FamilycError(f"sbatch failed: {result.stderr.strip() or result.stdout.strip()}")
        out().print(result.stdout.strip(), markup=False)


def _summary(plan: ir.Plan, run: RunDir, state: RunState, *, baselines: bool) -> None:
    rows = []
    for step in all_steps(plan) if baselines else list(plan.steps):
        st = state.step(step.id)
        m = st.metrics
        seconds = m.get("wall_seconds")
        rows.append((step.id, st.status, units.count(m["tokens"]) if "tokens" in m else "",
                     f"{m['final_loss']:.4f}" if isinstance(m.get("final_loss"), float) else "",
                     units.seconds(step.predicted_seconds),
                     units.seconds(seconds) if isinstance(seconds, int | float) else ""))
    doc = render.Document(title=f"run {run.root} (plan {plan.plan_id})", tables=(render.Table(
        title="Steps", headers=("step", "status", "tokens", "final loss", "predicted", "actual"), rows=tuple(rows),
        right=frozenset({2, 3, 4, 5})),))
    render.render_text(doc, out())


@app.command()
@command
def status(
    run_dir: Path = typer.Argument(..., help="A run directory.", show_default=False),
    done: str | None = typer.Option(None, "--done", metavar="STEP",
                                    help="Exit 0 if STEP is completed, 1 otherwise (for scripts)."),
) -> None:
    """Where a run stands: every step's status."""
    run = RunDir(run_dir)
    if not run.is_run_dir():
        raise FamilycError(f"{run_dir} is not a familyc run directory (no state.json)")
    state = RunState.load(run.state_path)
    if done is not None:
        if done not in state.steps:
            raise UsageError(f"{run_dir} has no step {done!r}")
        raise typer.Exit(0 if state.step(done).status == COMPLETED else 1)
    rows = tuple((step_id, st.status, str(st.attempts), st.ended_at or st.started_at or "", st.error or "")
                 for step_id, st in state.steps.items())
    render.render_text(render.Document(title=f"run {run_dir} (plan {state.plan_id}, family {state.family})",
                                       tables=(render.Table(title="Steps", headers=("step", "status", "attempts",
                                                                                     "when", "error"), rows=rows),)),
                       out())
