"""A training stage's fixed costs: its start-up, and what each step and evaluation costs beyond its FLOPs. Torch-free.

A stage's predicted wall time is

    before the first step  +  steps x step_seconds  +  evaluations x eval_seconds
        +  training and evaluation FLOPs / (devices x peak x MFU)  +  after the last step

- before the first step (`launch_seconds`): familyc writes the job and starts torchrun; each rank starts Python,
  imports torch and torchtitan, joins the process group, builds and shards the model, loads its initial weights
  and opens the data;
- `compile_seconds`, with training.compile: what torch.compile adds to the first step (and to the first
  evaluation, which traces the model without gradients);
- after the last step (`finish_seconds`): the final save, the processes' exit, and familyc verifying and
  promoting the member;
- per step (`step_seconds`): what an optimizer step costs whatever its FLOPs: the optimizer's and FSDP's
  per-parameter work, the collectives' latency, Python and the kernels' dispatch. It dominates a tiny member (a
  CPU step of a 0.4M-parameter model is mostly this) and vanishes against the FLOPs of a large one;
- per evaluation (`eval_seconds`): the same for a held-out evaluation (its batches, its all-reduce).

A run measures the same three terms (familyc.execute.metrics.stage_startup: the time from the launch to the
first logged step, less one steady step; from the last logged step to the end, less the unlogged steps), so
`familyc calibrate` measures what this module predicts. An accelerator without a measurement here has no
start-up in its plan (`None`, said so in the plan, never a silent 0) until a calibration profile fills it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Startup:
    launch_seconds: float
    compile_seconds: float
    """Added with training.compile."""
    finish_seconds: float
    source: str
    """Where the numbers come from (a benchmark and its date, or a calibration profile)."""

    step_seconds: float
    """Every optimizer step, beyond its FLOPs."""
    eval_seconds: float
    """Every held-out evaluation, beyond its FLOPs."""

    def seconds(self, *, compile: bool) -> float:
        """The start-up alone: launch, compile and finish."""
        return self.launch_seconds + (self.compile_seconds if compile else 0.0) + self.finish_seconds


MEASURED: dict[str, Startup] = {
    # cpu: `benchmarks/startup.py --rounds 3` (benchmarks/specs/startup_cpu.yaml: three members of 1.8e6, 5.0e6 and
    # 1.1e7 FLOPs per token, 32 steps each, 2 ranks on this 2-core machine, each round once with torch.compile and
    # once without; 2026-12-08, BENCHMARKS.md "Start-up"; every number in benchmarks/results/startup.json),
    # measured apart from the tiny family the README's main command trains, which checks them
    # (benchmarks/predictions.py):
    # - launch 6.8 s: median over the 9 stages without compile of the time from torchrun's start to the first
    #   logged step, less one steady step;
    # - compile 4.8 s: the same median over the 9 compiled stages (11.6 s) less the launch;
    # - finish 3.5 s: median over all 18 stages from the last logged step to the stage's end, less its unlogged
    #   steps (3.0 to 4.0 s);
    # - step 0.081 s: the intercept of the least-squares line through the 9 compiled stages' steady seconds per
    #   step (0.11-0.15 s for a, 0.24-0.26 s for b, 0.40-0.44 s for c) against their FLOPs per step; its slope is
    #   1 / (130 GFLOP/s), MFU 0.78 of two reference cores, the MFU specs/tiny.yaml assumes. Largest residual
    #   0.025 s of a mean 0.267 s per step;
    # - evaluation 0.030 s: the median over those stages' evaluations of their seconds less their FLOPs at that
    #   rate (0.04 s for a's 4,096 tokens, 0.15 s for c's).
    "cpu": Startup(launch_seconds=6.8, compile_seconds=4.8, finish_seconds=3.5, step_seconds=0.081,
                   eval_seconds=0.030, source="benchmarks/startup.py --rounds 3, 2026-12-08"),
}


def startup(accelerator: str) -> Startup | None:
    """The measured start-up of a stage on `accelerator`; None where none was measured."""
    return MEASURED.get(accelerator)
