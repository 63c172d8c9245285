"""`familyc apply --launcher slurm`: an sbatch script that runs `srun torchrun ...` for each stage.

SLURM allocates the nodes and starts one torchrun per node (`srun --ntasks-per-node=1`); torchrun's
c10d rendezvous on the first node joins them. Between stages the script calls familyc on the batch
host to record the member (`apply --only STEP` adopts the stage's final checkpoint) and to grow it
into the next. Every stage is guarded by `familyc status --done`, so resubmitting the same script
resumes: finished steps are skipped, an interrupted stage restarts from its newest checkpoint.
The script is plain text, reviewable, and written deterministically (a golden test pins it).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from familyc import __version__
from familyc.backend.environment import STAGE_MODULE
from familyc.errors import FamilycError
from familyc.execute import jobs, members
from familyc.execute.data import DataInputs
from familyc.execute.executor import ApplyOptions, selected_steps
from familyc.execute.launcher import DEFAULT_RDZV_PORT
from familyc.execute.rundir import RunDir
from familyc.execute.tracking import DEFAULT_TRACK
from familyc.files import atomic_write
from familyc.plan.ir import Plan
from familyc.plan.steps import TrainStep

SCRIPT = "familyc.sbatch"
SLURM_CPU_THREADS = 1
"""OMP_NUM_THREADS default of a CPU rank under SLURM: the nodes' cores are not known when the script is written."""


def sbatch_script(plan: Plan, run: RunDir, *, plan_file: Path, python: str, options: ApplyOptions,
                  data: DataInputs, workdir: Path) -> str:
    """`workdir`: where `familyc apply` ran; the script runs there too, so the plan's relative spec path
    (checked for changes before each familyc step) resolves as it did."""
    q = shlex.quote
    launch = options.launch
    root = run.root.resolve()
    familyc = f"{q(python)} -m familyc"
    apply = f"{familyc} apply {q(str(plan_file.resolve()))} --run-dir {q(str(root))} --yes"
    if options.track != DEFAULT_TRACK:  # each stage's tracking is written by the `apply --only` after it
        apply += f" --track {q(','.join(options.track) or 'none')}"
    environment = jobs.run_environment(plan, run, data, launch, threads=SLURM_CPU_THREADS if launch.on_cpu else None)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=familyc-{plan.family.name}-{plan.plan_id[:8]}",
        f"#SBATCH --nodes={launch.nnodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if not launch.on_cpu:
        lines.append(f"#SBATCH --gpus-per-node={launch.nproc_per_node}")
    lines += [
        f"#SBATCH --output={root}/slurm-%j.out",
        "#SBATCH --open-mode=append",
        f"# Written by familyc {__version__} for plan {plan.plan_id} ({plan.family.name}).",
        "# One `srun torchrun` per training stage; familyc records each member and grows it into the next.",
        "# Submit it again to resume: finished steps are skipped.",
        "set -euo pipefail",
        f"cd {q(str(workdir.resolve()))}",
        'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        *environment.shell_exports(),
    ]
    steps = selected_steps(plan, options)
    for index, step in enumerate(steps, start=1):
        lines += ["", f"# [{index}/{len(steps)}] {step.id}"]
        if isinstance(step, TrainStep):
            stage = run.step_dir(step.id)
            torchrun = (f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 {q(python)} -m torch.distributed.run "
                        f"--nnodes={launch.nnodes} --nproc-per-node={launch.nproc_per_node} --rdzv-backend=c10d "
                        f"--rdzv-endpoint=$HEAD_NODE:{DEFAULT_RDZV_PORT} --rdzv-id={plan.plan_id}-{step.id} "
                        f"-m {STAGE_MODULE} --job.config_file {q(str(stage / jobs.JOB_FILE))}")
            prefix = jobs.stage_environment(plan, run, step, environment).shell_prefix()
            log = q(str(stage / jobs.LOG_FILE))
            final = q(str(members.final_checkpoint(jobs.dump_folder(run, step), step) / ".metadata"))
            lines += [
                f"if ! {familyc} status {q(str(root))} --done {step.id}; then",
                "  # a stage that fails on its way out after its final checkpoint is complete has done its work",
                f"  {prefix} {torchrun} >> {log} 2>&1 || test -f {final}",
                f"  {apply} --only {step.id}",
                "fi",
            ]
        else:
            lines.append(f"{apply} --only {step.id}")
    return "\n".join(lines) + "\n"


def write_slurm(plan: Plan, run: RunDir, options: ApplyOptions, data: DataInputs, *, plan_file: Path | None,
                submit: bool) -> tuple[Path, str | None]:
    """Write every stage's job and RUN_DIR/familyc.sbatch; with `submit`, sbatch it. (script, sbatch's answer)."""
    if plan_file is None:  # the script applies a plan file; keep the compiled one in the run directory
        plan_file = run.plan_path
    for step in selected_steps(plan, options):
        if isinstance(step, TrainStep):
            jobs.write_job(plan, run, step, data, compile=options.compile)
    script = run.root / SCRIPT
    atomic_write(script, sbatch_script(plan, run, plan_file=plan_file, python=sys.executable, options=options,
                                       data=data, workdir=Path.cwd()))
    script.chmod(0o755)
    if not submit:
        return script, None
    result = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FamilycError(f"sbatch failed: {result.stderr.strip() or result.stdout.strip()}")
    return script, result.stdout.strip()
