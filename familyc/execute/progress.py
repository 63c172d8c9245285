"""What `familyc apply` shows while it runs: a live rich view on a terminal, plain log lines otherwise.

Both receive the same events. ETAs: a stage's from its own recent seconds per step; the family's
adds the remaining steps' predicted seconds, scaled by how the finished steps compared with
their predictions (so a cluster slower than its assumed MFU shows it within the first stage).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

from familyc import units


@dataclass(kw_only=True, slots=True)
class StageProgress:
    index: int
    total: int
    step_id: str
    num_steps: int
    step: int = 0
    loss: float | None = None
    tokens_per_second: float | None = None
    started: float = field(default_factory=time.monotonic)
    seconds_per_step: float | None = None

    def eta(self) -> float | None:
        if self.seconds_per_step is None:
            return None
        return max(0, self.num_steps - self.step) * self.seconds_per_step


class Progress:
    """Receives the executor's events; subclasses decide how to show them."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.current: StageProgress | None = None
        self.remaining_predicted = 0.0
        self.speed_ratio = 1.0
        """Actual over predicted seconds of the steps finished in this run."""

    def family_eta(self) -> float | None:
        stage = self.current.eta() if self.current else 0.0
        if stage is None:
            return None
        return stage + self.remaining_predicted * self.speed_ratio

    def stage_started(self, stage: StageProgress, *, remaining_predicted: float) -> None:
        self.current = stage
        self.remaining_predicted = remaining_predicted
        self.line(f"[{stage.index}/{stage.total}] {stage.step_id}: started ({stage.num_steps} steps)")

    def stage_progress(self, *, step: int, loss: float | None, tokens_per_second: float | None) -> None:
        stage = self.current
        if stage is None or step <= stage.step:
            return
        elapsed = time.monotonic() - stage.started
        stage.seconds_per_step = elapsed / step if step else None
        stage.step, stage.loss, stage.tokens_per_second = step, loss, tokens_per_second
        self.update()

    def stage_finished(self, *, actual_seconds: float, predicted_seconds: float, summary: str) -> None:
        if predicted_seconds > 0 and actual_seconds > 0:
            self.speed_ratio = actual_seconds / predicted_seconds
        stage = self.current
        self.current = None
        if stage is not None:
            self.line(f"[{stage.index}/{stage.total}] {stage.step_id}: {summary}")

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def update(self) -> None:
        """A progress event arrived (the plain view prints every so often)."""

    def close(self) -> None:
        pass

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


def make_progress(console: Console) -> Progress:
    return LiveProgress(console) if console.is_terminal and sys.stdout.isatty() else PlainProgress(console)
