"""A training stage's actual metrics, from the JSONL its rank 0 writes (familyc.backend.stage).

A resumed stage appends to the same file and logs some steps again; the last record of each step
wins. Actual compute uses the one formula the plan used (familyc.cost.flops.train_flops) with
torchtitan's own FLOPs per token, read from the running trainer.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from familyc.cost.flops import train_flops

EVAL_KIND = "eval"
"""The `kind` of a held-out evaluation's record (familyc.backend.stage_eval); training records have none."""


def read_records(path: Path, *, kind: str | None = None) -> list[dict[str, Any]]:
    """Every complete JSON line of one kind (None: training; EVAL_KIND: held-out evaluations), the last record of
    each step, in step order. A torn last line is skipped."""
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written when the process died
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record.get("kind") == kind:
            by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def evaluations(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, held-out loss) of every evaluation record, in step order (records: `read_records(kind=EVAL_KIND)`)."""
    return [(r["step"], float(r["heldout_loss"])) for r in records if isinstance(r.get("heldout_loss"), int | float)]


def read_evaluations(path: Path) -> list[tuple[int, float]]:
    """(step, held-out loss) of every evaluation a stage recorded, in step order."""
    return evaluations(read_records(path, kind=EVAL_KIND))


def evaluation_flops(records: list[dict[str, Any]]) -> int:
    """FLOPs of a stage's held-out evaluations (records: `read_records(kind=EVAL_KIND)`, so each counts once
    however often the stage resumed)."""
    return sum(int(r.get("flops") or 0) for r in records)


@dataclass(frozen=True, kw_only=True, slots=True)
class StageMetrics:
    steps: int
    tokens: int
    flops: int
    num_flops_per_token: int
    train_seconds: float
    """Time inside torchtitan's training loop (sum over logged intervals of seconds per step)."""
    tokens_per_second: float
    """Whole-cluster throughput over train_seconds."""
    mfu: float | None
    """Achieved FLOP/s over devices x peak; None where the peak is unknown."""
    first_loss: float | None
    final_loss: float | None
    world_size: int

    def to_data(self) -> dict[str, Any]:
        return asdict(self)


def summarize(records: list[dict[str, Any]], *, batch_tokens: int, peak_flops: float | None,
              completed_steps: int | None = None) -> StageMetrics | None:
    """None when nothing was logged yet.

    torchtitan logs every log_freq steps, not necessarily the last one: for a stage known to have
    completed `completed_steps` (its final checkpoint exists), the tokens are those steps' batches
    (each step trains exactly batch_tokens: packed sequences, no padding) and the unlogged last
    steps are timed at the last logged rate."""
    if not records:
        return None
    last = records[-1]
    fpt = int(last.get("num_flops_per_token") or 0)
    steps = int(last["step"])
    tokens = int(last.get("n_tokens_seen") or steps * batch_tokens)
    seconds, previous, per_step = 0.0, 0, None
    for record in records:
        value = record.get("end_to_end_s")
        if isinstance(value, int | float) and math.isfinite(value):
            seconds += value * (record["step"] - previous)
            per_step = value
        previous = record["step"]
    if completed_steps is not None and completed_steps > steps:
        seconds += (per_step or 0.0) * (completed_steps - steps)
        tokens += (completed_steps - steps) * batch_tokens
        steps = completed_steps
    flops = train_flops(fpt, tokens)
    world = int(last.get("world_size") or 1)
    losses = [r.get("loss") for r in records if isinstance(r.get("loss"), int | float)]
    mfu = None
    if peak_flops and seconds > 0:
        mfu = flops / (seconds * world * peak_flops)
    return StageMetrics(steps=steps, tokens=tokens, flops=flops, num_flops_per_token=fpt, train_seconds=seconds,
                        tokens_per_second=tokens / seconds if seconds > 0 else 0.0, mfu=mfu,
                        first_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None,
                        world_size=world)


def steady_step_seconds(records: list[dict[str, Any]]) -> float | None:
    """The median seconds per step of the logged intervals after the first (which holds torch.compile's first
    step and the warm-up); None with fewer than two logged steps."""
    values = [float(r["end_to_end_s"]) for r in records[1:]
              if isinstance(r.get("end_to_end_s"), int | float) and math.isfinite(r["end_to_end_s"])]
    return statistics.median(values) if values else None


def stage_startup(records: list[dict[str, Any]], timeline: dict[str, Any] | None, *,
                  num_steps: int) -> dict[str, float] | None:
    """The start-up the last attempt of a stage measured, as familyc.cost.startup predicts it: `launch_seconds`
    from the launch to the first logged step less the steps it logged, at the steady rate (torch.compile
    included when the stage compiled), and `finish_seconds` from the last logged step to the end less the
    steps after it. `timeline` is what the executor recorded (familyc.execute.progress.timeline): when the first
    and last logged steps arrived, polled every half second. None for an attempt that resumed (it logs no
    first step) or logged too little to have a steady rate."""
    steady = steady_step_seconds(records)
    if not timeline or steady is None or timeline.get("first_step") != 1:
        return None
    launch = timeline["first_seconds"] - steady * timeline["first_step"]
    finish = timeline["wall_seconds"] - timeline["last_seconds"] - steady * max(0, num_steps - timeline["last_step"])
    return {"launch_seconds": round(max(0.0, launch), 3), "finish_seconds": round(max(0.0, finish), 3),
            "steady_step_seconds": round(steady, 4)}
