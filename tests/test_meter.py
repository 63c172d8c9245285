"""familyc.meter: the progress of expand, export and the report's evaluations, on a fake clock. Torch-free."""

from __future__ import annotations

import io

from rich.console import Console

from familyc.meter import Meter, meters, quiet


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200), buffer


def test_plain_lines_say_what_is_done_at_most_every_interval_with_an_eta_at_the_rate_so_far() -> None:
    console, buffer = plain()
    clock = Clock()
    with meters(console, interval=10.0, clock=clock) as start:
        advance = start("writing /tmp/s", 4 * 2**20, "bytes")
        for step in range(4):
            clock.now += 4.0
            advance(2**20, f"layers.{step}.attention.wq.weight")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "writing /tmp/s: 4.0 MiB..."
    # 4 s per MiB: the first line after 10 s is at 3 MiB done (12 s), with 1 MiB to go at that rate; none at the end
    assert lines[1:] == ["writing /tmp/s: 3.0 MiB of 4.0 MiB (75%), 12.0s, ETA 4.0s: layers.2.attention.wq.weight"]


def test_counted_items_and_a_zero_total() -> None:
    clock = Clock()
    m = Meter(Console(file=io.StringIO()), "held-out evaluation", 8, clock=clock, live=False)
    m.advance(0, "loss of xs")
    assert m.status() == "held-out evaluation: 0 of 8 (0%), 0.0s: loss of xs"
    clock.now += 30
    m.advance(2, "")
    assert m.status() == "held-out evaluation: 2 of 8 (25%), 30.0s, ETA 1m 30s"
    m.advance(100, "")
    assert m.done == 8  # never past the total
    empty = Meter(Console(file=io.StringIO()), "nothing", 0, clock=clock, live=False)
    empty.advance(3, "")
    assert empty.status() == "nothing: 3 of 0, 0.0s"


def test_a_terminal_gets_a_bar_that_is_gone_when_the_work_ends_even_by_an_error() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    try:
        with meters(console) as start:
            advance = start("writing safetensors", 10, "bytes")
            advance(5, "tok_embeddings.weight")
            second = start("held-out evaluation", 2, "items")  # a second meter stops the first
            second(1, "")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    shown = buffer.getvalue()
    assert "writing safetensors" in shown and "held-out evaluation" in shown
    # each bar hid the cursor and showed it again when stopped (transient: it erased itself)
    assert shown.count("\x1b[?25l") == shown.count("\x1b[?25h") == 2


def test_quiet_shows_nothing() -> None:
    advance = quiet("anything", 3)
    advance(1, "x")
