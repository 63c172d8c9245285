"""What a long command shows while it runs: a live rich view on a terminal, plain log lines otherwise.

`familyc apply`'s ETAs use the plan's own time model (familyc.cost.startup): a stage's wall time is its
start-up before the first step, its steps, and its finish after the last.
- A stage's ETA: until its second logged step, the plan's prediction less the time elapsed; from then on, its
  remaining steps at the steady rate measured between its first and its latest logged step (the first one
  holds the launch and torch.compile, so it never sets the rate), plus the predicted finish.
- The family's: the stage's ETA plus every remaining step's predicted start-up and predicted training, the
  training scaled by how the stages measured so far compare with their predictions. That ratio is trusted in
  proportion to the share of the family's predicted training it was measured on, so a small first stage, whose
  speed says little about the large ones, barely moves it, while a cluster slower than its assumed MFU shows
  once a real share of the work has run.
`FAMILYC_PROGRESS_TRACE=PATH` appends every update's ETAs as a JSON line (benchmarks/eta.py checks them).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

from familyc import units

TRACE_ENV = "FAMILYC_PROGRESS_TRACE"


@dataclass(frozen=True, slots=True)
class Logged:
    step: int
    seconds: float
    """Since the stage was launched, when its record arrived."""


@dataclass(kw_only=True, slots=True)
class StageProgress:
    index: int
    total: int
    step_id: str
    num_steps: int
    predicted_seconds: float = 0.0
    """The plan's: start-up, training and evaluation."""
    startup_seconds: float = 0.0
    """The plan's start-up of the stage (0 where it has none)."""
    finish_seconds: float = 0.0
    """The part of it after the last step."""
    step: int = 0
    loss: float | None = None
    tokens_per_second: float | None = None
    started: float = field(default_factory=time.monotonic)
    first: Logged | None = None
    last: Logged | None = None

    @property
    def predicted_train_seconds(self) -> float:
        return max(0.0, self.predicted_seconds - self.startup_seconds)

    def seconds_per_step(self) -> float | None:
        """The steady rate: between the first and the latest logged step (evaluations included)."""
        if self.first is None or self.last is None or self.last.step <= self.first.step:
            return None
        return (self.last.seconds - self.first.seconds) / (self.last.step - self.first.step)

    def logged(self, step: int, now: float) -> None:
        at = Logged(step, now - self.started)
        if self.first is None:
            self.first = at
        self.last = at

    def eta(self, now: float | None = None) -> float | None:
        elapsed = (time.monotonic() if now is None else now) - self.started
        rate = self.seconds_per_step()
        if rate is None or self.last is None:
            if not self.predicted_seconds:
                return None
            return max(self.finish_seconds, self.predicted_seconds - elapsed)
        since_last = elapsed - self.last.seconds
        return max(0.0, (self.num_steps - self.last.step) * rate - since_last) + self.finish_seconds


class Progress:
    """Receives the executor's events; subclasses decide how to show them."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.current: StageProgress | None = None
        self.remaining_startup = 0.0
        self.remaining_train = 0.0
        self.measured_actual = 0.0
        """Seconds per step x steps, over the stages finished in this run."""
        self.measured_predicted = 0.0
        """Their predicted training and evaluation seconds."""
        trace = os.environ.get(TRACE_ENV)
        self.trace = open(trace, "a", encoding="utf-8") if trace else None  # noqa: SIM115 (closed in close())

    def speed_ratio(self) -> float:
        """Actual over predicted training seconds, trusted by the share of the family's training it covers."""
        actual, predicted = self.measured_actual, self.measured_predicted
        stage = self.current
        rate = stage.seconds_per_step() if stage else None
        if stage is not None and rate is not None and stage.last is not None and stage.num_steps:
            actual += rate * stage.last.step
            predicted += stage.predicted_train_seconds * stage.last.step / stage.num_steps
        family = self.measured_predicted + self.remaining_train + (stage.predicted_train_seconds if stage else 0.0)
        if predicted <= 0 or family <= 0:
            return 1.0
        return 1.0 + min(1.0, predicted / family) * (actual / predicted - 1.0)

    def family_eta(self, now: float | None = None) -> float | None:
        stage = self.current.eta(now) if self.current else 0.0
        if stage is None:
            return None
        return stage + self.remaining_startup + self.remaining_train * self.speed_ratio()

    def stage_started(self, stage: StageProgress, *, remaining_startup: float, remaining_train: float) -> None:
        self.current = stage
        self.remaining_startup, self.remaining_train = remaining_startup, remaining_train
        self.line(f"[{stage.index}/{stage.total}] {stage.step_id}: started ({stage.num_steps} steps)")

    def stage_progress(self, *, step: int, loss: float | None, tokens_per_second: float | None) -> None:
        stage = self.current
        if stage is None or step <= stage.step:
            return
        now = time.monotonic()
        stage.logged(step, now)
        stage.step, stage.loss, stage.tokens_per_second = step, loss, tokens_per_second
        if self.trace is not None:
            self.trace.write(json.dumps({"time": time.time(), "step_id": stage.step_id, "step": step,
                                         "num_steps": stage.num_steps, "eta": stage.eta(now),
                                         "family_eta": self.family_eta(now)}) + "\n")
            self.trace.flush()
        self.update()

    def stage_finished(self, *, actual_seconds: float, predicted_seconds: float, summary: str) -> None:
        stage = self.current
        self.current = None
        if stage is not None:
            rate = stage.seconds_per_step()
            if rate is not None and stage.predicted_train_seconds > 0:
                self.measured_actual += rate * stage.num_steps
                self.measured_predicted += stage.predicted_train_seconds
            self.line(f"[{stage.index}/{stage.total}] {stage.step_id}: {summary}")

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def update(self) -> None:
        """A progress event arrived (the plain view prints every so often)."""

    def close(self) -> None:
        if self.trace is not None:
            self.trace.close()
            self.trace = None

    def status(self) -> str:
        stage = self.current
        if stage is None:
            return ""
        parts = [f"[{stage.index}/{stage.total}] {stage.step_id} step {stage.step}/{stage.num_steps}"]
        if stage.loss is not None:
            parts.append(f"loss {stage.loss:.4f}")
        if stage.tokens_per_second:
            parts.append(f"{units.count(stage.tokens_per_second)} tok/s")
        eta, family = stage.eta(), self.family_eta()
        if eta is not None:
            parts.append(f"ETA {units.seconds(eta)}")
        if family is not None:
            parts.append(f"family ETA {units.seconds(family)}")
        return "  ".join(parts)


class PlainProgress(Progress):
    """Log lines, at most one every `interval` seconds while a stage runs (for files and CI)."""

    def __init__(self, console: Console, interval: float = 10.0) -> None:
        super().__init__(console)
        self.interval = interval
        self._last = 0.0

    def update(self) -> None:
        now = time.monotonic()
        stage = self.current
        if stage is not None and (now - self._last >= self.interval or stage.step == stage.num_steps):
            self._last = now
            self.line(self.status())


class LiveProgress(Progress):
    """A live table under the log lines (terminals)."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)
        self.live.start()

    def _render(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_row(self.status() or "preparing...")
        return table

    def update(self) -> None:
        self.live.update(self._render())

    def line(self, text: str) -> None:
        self.live.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.live.stop()
        super().close()


def make_progress(console: Console) -> Progress:
    return LiveProgress(console) if console.is_terminal and sys.stdout.isatty() else PlainProgress(console)


def timeline(stage: StageProgress, wall: float) -> dict[str, dict[str, float]]:
    """When the stage's first and last logged steps arrived, for the run's measured start-up
    (familyc.execute.metrics.stage_startup); empty when it logged no step."""
    if stage.first is None or stage.last is None:
        return {}
    return {"timeline": {"first_step": stage.first.step, "first_seconds": round(stage.first.seconds, 3),
                         "last_step": stage.last.step, "last_seconds": round(stage.last.seconds, 3),
                         "wall_seconds": round(wall, 3)}}
