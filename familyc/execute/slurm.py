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
from pathlib import Path

from familyc import __version__
from familyc.backend.job import final_checkpoint
from familyc.execute.launcher import DEFAULT_RDZV_PORT, STAGE_MODULE
from familyc.execute.rundir import RunDir, all_steps
from familyc.plan.ir import Plan, TrainStep

SCRIPT = "familyc.sbatch"


def sbatch_script(plan: Plan, run: RunDir, *, plan_file: Path, python: str, nproc_per_node: int, nnodes: int,
                  baselines: bool, on_cpu: bool, workdir: Path) -> str:
    """`workdir`: where `familyc apply` ran; the script runs there too, so the plan's relative spec path
    (checked for changes before each familyc step) resolves as it did."""
    q = shlex.quote
    root = run.root.resolve()
    familyc = f"{q(python)} -m familyc"
    apply = f"{familyc} apply {q(str(plan_file.resolve()))} --run-dir {q(str(root))} --yes"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=familyc-{plan.family.name}-{plan.plan_id[:8]}",
        f"#SBATCH --nodes={nnodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if not on_cpu:
        lines.append(f"#SBATCH --gpus-per-node={nproc_per_node}")
    lines += [
        f"#SBATCH --output={root}/slurm-%j.out",
        "#SBATCH --open-mode=append",
        f"# Written by familyc {__version__} for plan {plan.plan_id} ({plan.family.name}).",
        "# One `srun torchrun` per training stage; familyc records each member and grows it into the next.",
        "# Submit it again to resume: finished steps are skipped.",
        "set -euo pipefail",
        f"cd {q(str(workdir.resolve()))}",
        'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"export FAMILYC_FLAVORS={q(str(run.flavors_path.resolve()))}",
        f"export HF_DATASETS_CACHE={q(str(run.datasets_cache.resolve()))}",
        "export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1} PYTHONUNBUFFERED=1",
    ]
    if on_cpu:
        lines.append("export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}")
    steps = all_steps(plan) if baselines else list(plan.steps)
    for index, step in enumerate(steps, start=1):
        lines += ["", f"# [{index}/{len(steps)}] {step.id}"]
        if isinstance(step, TrainStep):
            stage = root / "steps" / step.id
            torchrun = (f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 {q(python)} -m torch.distributed.run "
                        f"--nnodes={nnodes} --nproc-per-node={nproc_per_node} --rdzv-backend=c10d "
                        f"--rdzv-endpoint=$HEAD_NODE:{DEFAULT_RDZV_PORT} --rdzv-id={plan.plan_id}-{step.id} "
                        f"-m {STAGE_MODULE} --job.config_file {q(str(stage / 'job.toml'))}")
            metrics, log = q(str(stage / "metrics.jsonl")), q(str(stage / "stdout.log"))
            final = q(str(final_checkpoint(stage / "dump", step.num_steps) / ".metadata"))
            lines += [
                f"if ! {familyc} status {q(str(root))} --done {step.id}; then",
                "  # a stage that fails on its way out after its final checkpoint is complete has done its work",
                f"  FAMILYC_METRICS={metrics} {torchrun} >> {log} 2>&1 || test -f {final}",
                f"  {apply} --only {step.id}",
                "fi",
            ]
        else:
            lines.append(f"{apply} --only {step.id}")
    return "\n".join(lines) + "\n"
