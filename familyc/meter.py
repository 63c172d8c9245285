"""Progress of one long operation (a growth, an export, the report's evaluations): a bar on a terminal, plain
lines otherwise, like `familyc apply`'s view (familyc.execute.progress). Torch-free.

The work reports through plain callables: `start(title, total, unit)` once it knows how much there is to do, and
the `advance(amount, doing)` that returns: how much more is done and what it works on next (a tensor's key, a
model's name). The code that does the work knows nothing of consoles; the command opens `meters(console)` and
passes its `start`.

- On a terminal: a transient rich bar (done, total, elapsed, remaining).
- Otherwise (a file, CI): one line when it starts and one at most every `interval` seconds while it runs, with
  what is done, the elapsed time and, once something is done, an ETA at the rate so far.
Either way the command's own result line says when it ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bar

from familyc import units

Advance = Callable[[int, str], None]
"""`advance(amount, doing)`: `amount` more of the total is done; `doing` is what comes next (may be '')."""

Unit = Literal["bytes", "items"]


def no_progress(amount: int, doing: str) -> None:
    """An `Advance` that shows nothing (library callers, tests)."""


class Meter:
    """Counts what is done of `total` and tells the console, at most every `interval` seconds in plain mode."""

    def __init__(self, console: Console, title: str, total: int, *, unit: Unit = "items", interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, live: bool | None = None) -> None:
        self.console, self.title, self.total, self.unit = console, title, max(total, 0), unit
        self.interval, self.clock = interval, clock
        self.done, self.doing = 0, ""
        self.started = self._last = clock()
        self.live = console.is_terminal if live is None else live
        self._bar: Bar | None = None
        if self.live:
            count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), count, TimeElapsedColumn(),
                            TimeRemainingColumn(), console=console, transient=True)
            self._task = self._bar.add_task(title, total=self.total or None)
            self._bar.start()
        else:
            self._line(f"{title}: {self._amount(self.total)}...")

    def advance(self, amount: int, doing: str = "") -> None:
        self.done, self.doing = min(self.done + amount, self.total) if self.total else self.done + amount, doing
        now = self.clock()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done,
                             description=f"{self.title}" + (f"  {doing}" if doing else ""))
        elif now - self._last >= self.interval and self.done < self.total:
            self._last = now
            self._line(self.status(now))

    def status(self, now: float | None = None) -> str:
        """`title: 1.2 GiB of 3.4 GiB (35%), 12s, ETA 22s: doing`."""
        elapsed = (self.clock() if now is None else now) - self.started
        parts = [f"{self.title}: {self._amount(self.done)} of {self._amount(self.total)}"]
        if self.total:
            parts[0] += f" ({self.done / self.total:.0%})"
        parts.append(units.seconds(elapsed))
        if 0 < self.done < self.total and elapsed > 0:
            parts.append(f"ETA {units.seconds(elapsed * (self.total - self.done) / self.done)}")
        return ", ".join(parts) + (f": {self.doing}" if self.doing else "")

    def close(self) -> None:
        """Stop the bar (the command's own result line follows)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _amount(self, n: int) -> str:
        return units.gib(n) if self.unit == "bytes" else str(n)

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


Start = Callable[[str, int, Unit], Advance]
"""`start(title, total, unit)`: the work has begun and knows its total; returns its `advance`. Library functions
take one (default `quiet`) so that only the command decides how progress looks."""


def quiet(title: str, total: int, unit: Unit = "items") -> Advance:
    """A `Start` that shows nothing."""
    return no_progress


@contextmanager
def meters(console: Console, *, interval: float = 10.0, clock: Callable[[], float] = time.monotonic,
           live: bool | None = None) -> Iterator[Start]:
    """A `Start` whose meters are stopped however the work ends (an error is then the command's last word). A
    meter started while another runs stops that one first: one bar at a time."""
    opened: list[Meter] = []

    def start(title: str, total: int, unit: Unit = "items") -> Advance:
        for m in opened:
            m.close()
        opened.append(Meter(console, title, total, unit=unit, interval=interval, clock=clock, live=live))
        return opened[-1].advance

    try:
        yield start
    finally:
        for m in opened:
            m.close()
