"""Experiment tracking: every stage's metrics as TensorBoard event files (and, asked for, W&B runs).

apply's own process (node 0) reads each stage's metrics.jsonl (what its rank 0 writes, familyc.backend.stage) as
the lines arrive and writes them again for a tracker, so the stage processes, their job files and the sbatch
script stay as they are and a tracker that fails can stop apply but never a rank in a collective:

    RUN_DIR/tensorboard/<step id>/   one TensorBoard run per train step: `tensorboard --logdir RUN_DIR/tensorboard`
    RUN_DIR/wandb/                   W&B's files, one W&B run per train step (--track wandb; offline too)

A TensorBoard scalar has one step axis, so each series is written three times, under one tag per x-axis:

    <series>/by_step             x = the stage's optimizer step (1..num_steps; the held-out loss from step 0)
    <series>/by_family_tokens    x = tokens the family has trained before this point: the progressive train steps
                                 before this one in plan order, plus this step's step x batch_tokens
    <series>/by_family_gflops    x = the same in training FLOPs / 10^9 (the plan's formula: FLOPs per token x
                                 tokens, evaluations not counted), rounded down

A baseline (an independent member, trained from scratch) reuses nothing, so its family axes start at 0, as in
`familyc report`'s plot: on one chart the progressive stages continue each other and every baseline starts at 0.
Series: loss, lr, grad_norm, tokens_per_second (the whole cluster's), mfu (where the device's peak is known)
and heldout_loss (the stage's held-out evaluations). The offsets come from the plan alone, so they survive a
resume. After a resume the stage logs again the steps since its newest checkpoint; each tracker remembers the
last step it holds of each kind (TensorBoard: read back from the run's event files; W&B:
RUN_DIR/steps/<id>/wandb.json) and writes only the steps after it, so a run never holds a step twice, and a resumed
stage adds event files to the same folder. (TensorBoard's purge_step cannot do this here: its restart marker
drops every tag's points at or after that step, the family axes' points, numbered in tokens, included.)
An apply that finds a step complete writes what its trackers miss (a run trained before tracking was on).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from familyc.errors import FamilycError, UsageError
from familyc.files import atomic_write
from familyc.plan.ir import Plan
from familyc.plan.steps import TrainStep

TENSORBOARD = "tensorboard"
WANDB = "wandb"
TRACKERS = (TENSORBOARD, WANDB)
DEFAULT_TRACK = (TENSORBOARD,)
TENSORBOARD_FOLDER = "tensorboard"
WANDB_FOLDER = "wandb"
WANDB_WRITTEN = "wandb.json"
METRICS_FILE = "metrics.jsonl"
"""familyc.execute.jobs.METRICS_FILE (not imported: jobs imports the launcher and the data modules)."""
GIGA = 10**9
TRAIN, EVAL = "train", "eval"
AXES = ("by_step", "by_family_tokens", "by_family_gflops")


def parse_track(text: str) -> tuple[str, ...]:
    """`--track`: trackers separated by commas, or `none`."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if names in ((), ("none",)):
        return ()
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise UsageError(f"--track {text}: unknown tracker {unknown[0]!r}",
                         hint=f"choose from {', '.join(TRACKERS)}, comma-separated, or none")
    return names


def require(track: tuple[str, ...]) -> None:
    """Refuse, before anything runs, a tracker whose package is not installed."""
    if TENSORBOARD in track and importlib.util.find_spec("tensorboard") is None:
        raise FamilycError("tracking to TensorBoard needs the tensorboard package, which is not installed",
                           hint="pip install -e '.[train]' torch==2.13.0, or apply with --track none")
    if WANDB in track and importlib.util.find_spec("wandb") is None:
        raise FamilycError("--track wandb needs the wandb package, which is not installed",
                           hint="pip install -e '.[track]' (or pip install wandb); without an account, "
                                "WANDB_MODE=offline writes the runs under RUN_DIR/wandb for `wandb sync`")


# --- the x-axes -------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class Axes:
    """Where a stage's steps lie on its family's axes."""

    tokens_before: int
    flops_before: int
    batch_tokens: int
    flops_per_step: int

    def at(self, step: int) -> dict[str, int]:
        return {"by_step": step, "by_family_tokens": self.tokens_before + step * self.batch_tokens,
                "by_family_gflops": (self.flops_before + step * self.flops_per_step) // GIGA}


def axes_of(plan: Plan, step: TrainStep) -> Axes:
    """The progressive train steps before `step` in plan order (none for a baseline)."""
    before = [] if plan.is_baseline(step) else list(plan.train_steps())
    index = next((i for i, s in enumerate(before) if s.id == step.id), 0)
    return Axes(tokens_before=sum(s.tokens for s in before[:index]), flops_before=sum(s.flops for s in before[:index]),
                batch_tokens=step.batch_tokens, flops_per_step=step.flops_per_step)


# --- the points -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Point:
    kind: str
    """TRAIN (a logged step) or EVAL (a held-out evaluation)."""
    step: int
    values: dict[str, float]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def point(record: dict[str, Any]) -> Point | None:
    """A metrics.jsonl record as the values a tracker shows (None: a record of another kind)."""
    step = record.get("step")
    if not isinstance(step, int):
        return None
    kind = record.get("kind")
    if kind == EVAL:
        loss = _number(record.get("heldout_loss"))
        return Point(EVAL, step, {"heldout_loss": loss}) if loss is not None else None
    if kind is not None:  # the carried optimizer's record, and whatever else is not a step
        return None
    tps, world = _number(record.get("tps")), _number(record.get("world_size")) or 1.0
    values = {"loss": _number(record.get("loss")), "lr": _number(record.get("lr")),
              "grad_norm": _number(record.get("grad_norm")),
              "tokens_per_second": None if tps is None else tps * world, "mfu": _number(record.get("mfu"))}
    return Point(TRAIN, step, {k: v for k, v in values.items() if v is not None})


# --- the trackers -----------------------------------------------------------------------------------

class Sink(Protocol):
    written: dict[str, int]
    """The last step held of each kind (-1: none)."""

    def write(self, points: list[Point], axes: Axes) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """One TensorBoard run: RUN_DIR/tensorboard/<step id>/, an event file added by each apply that writes to it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written = tensorboard_written(folder)
        self._writer: Any = None

    def write(self, points: list[Point], axes: Axes) -> None:
        if not points:
            return
        if self._writer is None:  # a new event file only when there is something to put in it
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder), flush_secs=10)
        for p in points:
            for axis, x in axes.at(p.step).items():
                for series, value in p.values.items():
                    self._writer.add_scalar(f"{series}/{axis}", value, global_step=x)
            self.written[p.kind] = p.step
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def tensorboard_written(folder: Path) -> dict[str, int]:
    """The last stage step of each kind in a TensorBoard run's event files (-1: none). A record torn by a kill
    ends its file's reading there."""
    written = {TRAIN: -1, EVAL: -1}
    if not folder.is_dir():
        return written
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag.endswith("/by_step"):
                    kind = EVAL if value.tag.startswith("heldout_loss/") else TRAIN
                    written[kind] = max(written[kind], int(event.step))
    return written


class WandbSink:
    """One W&B run per train step (id: the plan id's first 8 digits and the step id; resumed, never duplicated),
    grouped by family and plan. Its x-axes are the metrics stage/step, family/tokens and family/gflops."""

    def __init__(self, plan: Plan, step: TrainStep, root: Path, sidecar: Path) -> None:
        self.plan, self.step, self.root, self.sidecar = plan, step, root, sidecar
        self.written = {TRAIN: -1, EVAL: -1}
        if sidecar.is_file():
            self.written.update(json.loads(sidecar.read_text(encoding="utf-8")))
        self._run: Any = None

    def open(self) -> None:
        if self._run is not None:
            return
        import wandb

        plan, step = self.plan, self.step
        (self.root / WANDB_FOLDER).mkdir(parents=True, exist_ok=True)
        try:
            self._run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "familyc", dir=str(self.root),
                id=re.sub(r"[^A-Za-z0-9_.-]", "-", f"{plan.plan_id[:8]}-{step.id}"), name=step.id, resume="allow",
                group=f"{plan.family.name}-{plan.plan_id[:8]}",
                job_type="baseline" if plan.is_baseline(step) else "progressive",
                config={"plan_id": plan.plan_id, "family": plan.family.name, "step": step.id, "member": step.member,
                        "num_steps": step.num_steps, "batch_tokens": step.batch_tokens, "max_lr": step.max_lr},
                settings=wandb.Settings(console="off", quiet=True))
        except Exception as exc:  # wandb's errors (no API key, no network) have no common base to catch
            raise FamilycError(f"W&B could not start the run of {step.id}: {exc}",
                               hint="wandb login, or WANDB_MODE=offline (the runs go to RUN_DIR/wandb for "
                                    "`wandb sync`), or apply with --track tensorboard") from None
        for name in ("stage/step", "family/tokens", "family/gflops"):
            self._run.define_metric(name)
        self._run.define_metric("*", step_metric="family/tokens")

    def write(self, points: list[Point], axes: Axes) -> None:
        if not points:
            return
        self.open()
        for p in points:
            x = axes.at(p.step)
            prefix = "eval" if p.kind == EVAL else "train"
            self._run.log({"stage/step": p.step, "family/tokens": x["by_family_tokens"],
                           "family/gflops": x["by_family_gflops"],
                           **{f"{prefix}/{k}": v for k, v in p.values.items()}}, step=p.step)
            self.written[p.kind] = p.step
        atomic_write(self.sidecar, json.dumps(self.written, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


# --- a stage's tracking -------------------------------------------------------------------------------

class StageTracker:
    """A train step's trackers, fed from its metrics.jsonl: `sync()` writes what was appended since the last
    call (the first: the whole file, whatever an earlier attempt logged) beyond what each tracker holds."""

    def __init__(self, plan: Plan, root: Path, step: TrainStep, track: tuple[str, ...]) -> None:
        self.axes = axes_of(plan, step)
        stage_dir = root / "steps" / step.id
        self.metrics = stage_dir / METRICS_FILE
        self.offset = 0
        self.sinks: list[Sink] = []
        if TENSORBOARD in track:
            self.sinks.append(TensorBoardSink(root / TENSORBOARD_FOLDER / step.id))
        if WANDB in track:
            self.sinks.append(WandbSink(plan, step, root, stage_dir / WANDB_WRITTEN))

    def sync(self) -> None:
        if not self.sinks or not self.metrics.is_file():
            return
        with self.metrics.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        points = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill (the next attempt appends after it)
            found = point(record) if isinstance(record, dict) else None
            if found is not None:
                points.append(found)
        for sink in self.sinks:
            new, last = [], dict(sink.written)
            for p in points:
                if p.step > last[p.kind]:  # a resumed stage logs the steps since its checkpoint again
                    new.append(p)
                    last[p.kind] = p.step
            sink.write(new, self.axes)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class Tracker:
    """The run's tracking (an empty `track`: none)."""

    def __init__(self, plan: Plan, root: Path, track: tuple[str, ...]) -> None:
        self.plan, self.root, self.track = plan, root, track

    @contextmanager
    def stage(self, step: TrainStep) -> Iterator[StageTracker]:
        """A training stage's tracking: what is already logged first, then `sync()` as lines arrive, and the rest
        when it ends."""
        tracked = StageTracker(self.plan, self.root, step, self.track)
        try:
            for sink in tracked.sinks:
                if isinstance(sink, WandbSink):
                    sink.open()  # a W&B that cannot start says so before the stage does
            tracked.sync()
            yield tracked
        finally:
            try:
                tracked.sync()
            finally:
                tracked.close()

    def catch_up(self, step: TrainStep) -> None:
        """Write what the trackers miss of a finished step (nothing opens when they miss nothing)."""
        if not self.track:
            return
        tracked = StageTracker(self.plan, self.root, step, self.track)
        try:
            tracked.sync()
        finally:
            tracked.close()
