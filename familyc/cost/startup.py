"""A training stage's start-up: the wall time of a stage that is not its steps or its evaluations. Torch-free.

A stage's predicted wall time is

    before the first step  +  training and evaluation (FLOPs / (devices x peak x MFU))  +  after the last step

- before the first step (`launch_seconds`): familyc writes the job and starts torchrun; each rank starts Python,
  imports torch and torchtitan, joins the process group, builds and shards the model, loads its initial weights
  and opens the data;
- `compile_seconds`, with training.compile: what torch.compile adds to the first step (and to the first
  evaluation, which traces the model without gradients);
- after the last step (`finish_seconds`): the final save, the processes' exit, and familyc verifying and
  promoting the member.

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

    def seconds(self, *, compile: bool) -> float:
        return self.launch_seconds + (self.compile_seconds if compile else 0.0) + self.finish_seconds


MEASURED: dict[str, Startup] = {
    # cpu: the medians over the stages of `benchmarks/startup.py --rounds 1` (benchmarks/specs/startup_cpu.yaml: two
    # small members, 24 steps each, 2 ranks on this 2-core machine, once with torch.compile and once without;
    # 2026-12-07, BENCHMARKS.md "Start-up"), measured apart from the tiny family the README's main command
    # trains, which checks them (benchmarks/predictions.py):
    # - launch 11.4 s: median time from torchrun's start to the first logged step, less one steady step, without
    #   compile (stages: 9.8, 13.1 s);
    # - compile 0.4 s: the same with torch.compile (13.4, 10.3 s: median 11.85 s) less the launch. Small because
    #   inductor's on-disk cache (/tmp/torchinductor_$USER) was warm; a machine's first compiled stage takes
    #   about 10 s more (the first tiny stage measured so);
    # - finish 3.5 s: median from the last logged step to the stage's end, less its unlogged steps (3.5, 3.5, 3.5,
    #   4.5 s).
    "cpu": Startup(launch_seconds=11.4, compile_seconds=0.4, finish_seconds=3.5,
                   source="benchmarks/startup.py, 2026-12-07"),
}


def startup(accelerator: str) -> Startup | None:
    """The measured start-up of a stage on `accelerator`; None where none was measured."""
    return MEASURED.get(accelerator)
