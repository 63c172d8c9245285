"""What every stage process of a run reads: its job TOML, the members' flavors and its environment.

The local executor and the sbatch script (familyc.execute.slurm) both call these, so a stage is the
same job whichever way it is launched:

    RUN_DIR/flavors.json             every member as a torchtitan flavour (written by node 0 only)
    RUN_DIR/steps/<step>/job.toml    the stage's torchtitan job (familyc.backend.job)
    the environment                  familyc.backend.environment's contract, filled in for the stage
"""

from __future__ import annotations

from pathlib import Path

from familyc.backend.environment import RunEnvironment, StageEnvironment, cpu_threads
from familyc.checkpoint import OPTIMIZER_FOLDER
from familyc.execute.data import DataInputs
from familyc.execute.launcher import Launch
from familyc.execute.rundir import DATA_POSITION, RunDir
from familyc.files import atomic_write
from familyc.plan.ir import Plan
from familyc.plan.steps import TrainStep

JOB_FILE = "job.toml"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "stdout.log"
DUMP_FOLDER = "dump"


def flavor_name(member: str) -> str:
    """The torchtitan flavour a member trains as."""
    return f"familyc-{member}"


def write_flavors(plan: Plan, run: RunDir) -> Path:
    """RUN_DIR/flavors.json for every member (imports torchtitan)."""
    from familyc.backend.flavors import write_flavors as write
    from familyc.backend.model import plan_model_args

    return write(run.flavors_path, {flavor_name(m.name): plan_model_args(plan, m.name) for m in plan.members})


def dump_folder(run: RunDir, step: TrainStep) -> Path:
    """torchtitan's dump folder of a stage: its periodic checkpoints and its final save."""
    return run.step_dir(step.id) / DUMP_FOLDER


def initial_weights(plan: Plan, run: RunDir, step: TrainStep) -> Path | None:
    """The weights a stage starts from: its growth's expansion, or the stable phase a decay branch continues
    (None: torchtitan's random initialisation)."""
    start = plan.start_of(step)
    return None if start is None else run.weights(plan, start)


def write_job(plan: Plan, run: RunDir, step: TrainStep, data: DataInputs, *, compile: bool | None = None) -> Path:
    """RUN_DIR/steps/<step>/job.toml; rewritten only when its text changes. `compile` overrides the plan's."""
    from familyc.backend.job import job_config_toml

    text = job_config_toml(step, plan.member(step.member), plan, dump_folder=dump_folder(run, step),
                           dataset=data.dataset_name, dataset_path=data.dataset_path,
                           tokenizer_path=data.tokenizer_path,
                           flavor=flavor_name(step.member),
                           compile=plan.training.compile if compile is None else compile,
                           init_from=initial_weights(plan, run, step),
                           checkpoint_interval=plan.training.checkpoint_interval, seed=plan.training.seed)
    job = run.step_dir(step.id) / JOB_FILE
    if not job.is_file() or job.read_text(encoding="utf-8") != text:
        atomic_write(job, text)
    return job


def run_environment(plan: Plan, run: RunDir, data: DataInputs, launch: Launch, *,
                    threads: int | None = None) -> RunEnvironment:
    """What every stage of the run is told; on a CPU one thread per core and rank (`threads` overrides it)."""
    if threads is None and launch.on_cpu:
        threads = cpu_threads(launch.nproc_per_node)
    return RunEnvironment(flavors=run.flavors_path, datasets_cache=run.datasets_cache, offline=data.offline,
                          threads=threads, heldout=data.heldout_path,
                          data_seed=plan.training.seed if plan.data.shuffle else None)


def data_start(plan: Plan, run: RunDir, step: TrainStep) -> Path | None:
    """The data position a stage continues from: the one kept with the member it continues (None: document 0)."""
    if step.data_continues_from is None:
        return None
    return run.weights(plan, plan.step(step.data_continues_from)) / DATA_POSITION


def data_end(run: RunDir, step: TrainStep) -> Path:
    """Where a stage records each rank's data position after its last step (promotion copies it into the
    member's folder, where the next stage reads it)."""
    return run.step_dir(step.id) / DATA_POSITION


def optimizer_start(plan: Plan, run: RunDir, step: TrainStep) -> Path | None:
    """The moments a stage starts from: its growth step's, when that carries the optimizer, or the stable phase's
    a decay branch continues (None: fresh)."""
    weights = initial_weights(plan, run, step)
    return weights / OPTIMIZER_FOLDER if weights is not None and plan.carries_optimizer(step) else None


def optimizer_end(plan: Plan, run: RunDir, step: TrainStep) -> Path | None:
    """Where a stage saves its final moments when a growth step carries them from its member or a decay branch
    continues it (promotion moves them into the member's folder); None: it saves none."""
    return dump_folder(run, step) / OPTIMIZER_FOLDER if plan.saves_optimizer(step) else None


def stage_environment(plan: Plan, run: RunDir, step: TrainStep, environment: RunEnvironment) -> StageEnvironment:
    evaluation = step.eval
    return StageEnvironment(run=environment, metrics=run.step_dir(step.id) / METRICS_FILE,
                            data_end=data_end(run, step), data_start=data_start(plan, run, step),
                            optimizer_start=optimizer_start(plan, run, step),
                            optimizer_end=optimizer_end(plan, run, step),
                            eval_interval=evaluation.interval if evaluation else None,
                            eval_tokens=evaluation.tokens if evaluation else None)
