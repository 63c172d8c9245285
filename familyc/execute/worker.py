"""`familyc apply --node-rank N` (N > 0): a node that trains each stage with node 0, and nothing else.

Node 0 keeps the state, grows the members and promotes them (familyc.execute.executor); the run
directory is on a file system all nodes share. Here, for every train step in order: skip it when
node 0 will not train it again (completed, or its member already there), wait for its initial
weights (node 0 grows them), then join the stage's rendezvous. A failure stops this node with the
step's error; node 0's state says the rest.
"""

from __future__ import annotations

import time
from pathlib import Path

from familyc.checkpoint.sidecar import SIDECAR_FILES
from familyc.enums import COMPLETED, FAILED
from familyc.errors import StepError
from familyc.execute import jobs, members
from familyc.execute.data import DataInputs
from familyc.execute.diagnosis import diagnose
from familyc.execute.executor import (
    DISK_HINT,
    ApplyOptions,
    disk_problem,
    remaining_time,
    selected_steps,
    stage_progress,
    train_stage,
)
from familyc.execute.progress import Progress
from familyc.execute.rundir import RunDir, sidecar_kind
from familyc.execute.state import RunState
from familyc.plan.ir import Plan
from familyc.plan.steps import TrainStep

POLL_SECONDS = 0.5


class Worker:
    def __init__(self, plan: Plan, run: RunDir, options: ApplyOptions, progress: Progress, data: DataInputs) -> None:
        self.plan, self.run, self.options, self.progress, self.data = plan, run, options, progress, data
        self.environment = jobs.run_environment(plan, run, data, options.launch)

    def apply(self) -> None:
        steps = selected_steps(self.plan, self.options)
        for index, step in enumerate(steps, start=1):
            if isinstance(step, TrainStep):
                self.train(step, index, len(steps), remaining_time(steps[index:]))

    def status(self, step_id: str) -> str:
        """The step's status in node 0's state, read afresh."""
        return RunState.load(self.run.state_path).step(step_id).status

    def trained_before(self, step: TrainStep) -> bool:
        """Whether node 0 will not train this stage again. Training it here anyway would wait for node 0 in a
        rendezvous that never comes."""
        weights = self.run.weights(self.plan, step)
        final = members.final_checkpoint(jobs.dump_folder(self.run, step), step)
        return (self.status(step.id) == COMPLETED or weights.exists() or members.moving(weights).exists()
                or members.is_complete(final))

    def wait_for_initial_weights(self, step: TrainStep) -> None:
        """Until node 0 has grown the stage's expansion, or promoted the stable phase a decay branch continues."""
        start = self.plan.start_of(step)
        if start is None:
            return
        sidecar = self.run.weights(self.plan, start) / SIDECAR_FILES[sidecar_kind(start)]
        while not sidecar.is_file():
            if self.status(start.id) == FAILED:
                raise StepError(start.id, "failed on node 0", hint="see node 0's output")
            time.sleep(POLL_SECONDS)

    def train(self, step: TrainStep, index: int, total: int, remaining: tuple[float, float]) -> None:
        node = self.options.launch.node_rank
        if self.trained_before(step):
            self.progress.line(f"[{index}/{total}] {step.id}: done, skipped (node {node})")
            return
        self.wait_for_initial_weights(step)
        problem = disk_problem(self.plan, self.run, step)
        if problem:
            raise StepError(step.id, problem, hint=DISK_HINT)
        log = self.run.step_dir(step.id) / jobs.LOG_FILE
        code, wall = train_stage(self, step, stage_progress(self.plan, step, index, total), remaining=remaining,
                                 pid_path=None)  # node 0's pid only: another node's means nothing there
        if code != 0 and not members.is_complete(members.final_checkpoint(jobs.dump_folder(self.run, step), step)):
            message, hint = diagnose(log, code)
            raise StepError(step.id, message, log=str(log), hint=hint)
        self.progress.stage_finished(actual_seconds=wall, predicted_seconds=step.predicted_seconds,
                                     summary=f"trained in {wall:.1f}s (node {node})")


def wait_for_run_dir(root: Path) -> RunDir:
    """Node 0 creates the run directory; the other nodes wait for it."""
    run = RunDir(root)
    while not run.is_run_dir():
        time.sleep(POLL_SECONDS)
    return run
