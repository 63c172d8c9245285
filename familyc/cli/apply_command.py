"""familyc apply and familyc status: run a plan on torchtitan, resumably; show where a run stands."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer

from familyc import render
from familyc.cli.app import app, command, err, out, require_train_extra
from familyc.enums import COMPLETED
from familyc.errors import UsageError
from familyc.execute.rundir import open_existing
from familyc.plan.view import plan_document


class Launcher(StrEnum):
    local = "local"
    slurm = "slurm"


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
    offline: bool = typer.Option(False, "--offline",
                                 help="Never use the network: hub tokenizers and datasets come from the Hugging Face "
                                      "cache (as with HF_HUB_OFFLINE=1)."),
    track: str = typer.Option("tensorboard", "--track", metavar="LIST",
                              help="Where every stage's metrics go besides metrics.jsonl: tensorboard "
                                   "(RUN_DIR/tensorboard), wandb, both comma-separated, or none."),
    stage_args: list[str] = typer.Option([], "--stage-arg", hidden=True,
                                         help="Extra torchtitan option for every stage (tests)."),
) -> None:
    """Train the family the plan describes: train, expand, train, ... (resumes where it stopped)."""
    require_train_extra("familyc apply")
    from familyc.execute.apply import apply_plan, default_run_dir, load_target
    from familyc.execute.executor import ApplyOptions
    from familyc.execute.launcher import Launch
    from familyc.execute.tracking import parse_track

    trackers = parse_track(track)
    plan, plan_file, warning = load_target(target)
    if warning:
        err().print(f"warning: {warning}", style="yellow", markup=False)
    if nnodes > 1 and rdzv_endpoint is None:
        raise UsageError("several nodes need --rdzv-endpoint host:port (the rendezvous on node 0)")
    if node_rank >= nnodes:
        raise UsageError(f"--node-rank {node_rank} is not below --nnodes {nnodes}")
    if submit and launcher is not Launcher.slurm:
        raise UsageError("--submit goes with --launcher slurm")
    root = run_dir or default_run_dir(plan)
    console = out()
    if plan_file is None and node_rank == 0:
        render.render_text(plan_document(plan), console) if console.is_terminal else typer.echo(
            render.text(plan_document(plan)), nl=False)
    if not yes and node_rank == 0:
        if not sys.stdin.isatty():
            raise UsageError("not on a terminal: pass --yes to apply without confirming")
        if not typer.confirm(f"Train family {plan.family.name} (plan {plan.plan_id}) in {root}?"):
            raise typer.Exit(1)
    launch = Launch(nproc_per_node=nproc_per_node or plan.cluster.gpus_per_node, nnodes=nnodes, node_rank=node_rank,
                    rdzv_endpoint=rdzv_endpoint, on_cpu=plan.cluster.accelerator == "cpu")
    options = ApplyOptions(launch=launch, baselines=baselines, only=tuple(only), compile=compile_,
                           keep_checkpoints=keep_checkpoints, offline=offline, extra_stage_args=tuple(stage_args),
                           track=trackers)
    result = apply_plan(plan, plan_file=plan_file, root=root, options=options, slurm=launcher is Launcher.slurm,
                        submit=submit, out=console, err=err())
    if result.script is not None:
        console.print(f"wrote {result.script}", markup=False)
    if result.submitted is not None:
        console.print(result.submitted, markup=False)
    if result.summary is not None:
        render.render_text(result.summary, console)


@app.command()
@command
def status(
    run_dir: Path = typer.Argument(..., help="A run directory.", show_default=False),
    done: str | None = typer.Option(None, "--done", metavar="STEP",
                                    help="Exit 0 if STEP is completed, 1 otherwise (for scripts)."),
) -> None:
    """Where a run stands: every step's status."""
    _, _, state = open_existing(run_dir)
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
