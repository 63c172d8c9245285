"""`familyc apply` on node 0: walk a plan's steps in order — train, expand, train, … — resumably.

A separate visitor over the plan (building a plan writes nothing; running it is this). Node 0 keeps
the run's state; other nodes of a multi-node run only train (familyc.execute.worker). For every
step, in order:
- completed in state.json and its artefacts verify against their sha256: skipped;
- its output already exists and verifies (a crash after the work, before the bookkeeping):
  adopted;
- otherwise run: a train step as a torchrun subprocess of familyc.backend.stage, which resumes
  from the newest periodic checkpoint in the step's dump folder when there is one; an expand
  step as a streamed expansion (familyc.expand.stream), atomic by construction.
A trained member's final model-only checkpoint becomes members/<name>/ (or baselines/<name>/)
through familyc.execute.members; only then is the step marked completed.

Failures (a non-zero exit, a non-finite loss, a missing dataset, a full disk) stop the run with
a StepError naming the step and its log; state.json stays valid and the next apply continues.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from familyc.backend.environment import RunEnvironment
from familyc.checkpoint import OPTIMIZER_FOLDER
from familyc.checkpoint.sidecar import sidecar_files, verify_sidecar
from familyc.enums import COMPLETED, FAILED, RUNNING
from familyc.errors import CheckpointError, FamilycError, StepError
from familyc.execute import jobs, members
from familyc.execute.data import DataInputs
from familyc.execute.diagnosis import diagnose
from familyc.execute.failpoints import armed, midway
from familyc.execute.launcher import Launch, run_stage, torchrun_argv
from familyc.execute.processes import PID_FILE
from familyc.execute.progress import Progress, StageProgress, timeline
from familyc.execute.rundir import RunDir, sidecar_kind
from familyc.execute.state import RunState, StepState, now
from familyc.execute.tracking import DEFAULT_TRACK, Tracker
from familyc.files import sha256_file
from familyc.plan.ir import Plan, Step
from familyc.plan.steps import ExpandStep, TrainStep


@dataclass(kw_only=True, slots=True)
class ApplyOptions:
    launch: Launch
    baselines: bool = False
    only: tuple[str, ...] = ()
    compile: bool | None = None
    """Override the plan's torch.compile setting (None: the plan's)."""
    keep_checkpoints: bool = False
    offline: bool = False
    """Keep off the network (hub tokenizers and datasets from the cache only), as HF_HUB_OFFLINE=1 does."""
    extra_stage_args: tuple[str, ...] = field(default_factory=tuple)
    """More torchtitan options for every stage (tests shorten runs with them)."""
    track: tuple[str, ...] = DEFAULT_TRACK
    """Where node 0 writes every stage's metrics besides metrics.jsonl (familyc.execute.tracking; (): nowhere)."""

    @property
    def worker(self) -> bool:
        """A node other than rank 0 of a multi-node run: it trains, and leaves state, growth and members
        to node 0 (familyc.execute.worker)."""
        return self.launch.node_rank > 0


def selected_steps(plan: Plan, options: ApplyOptions) -> list[Step]:
    """The steps this apply walks: the progressive family (and the baseline), or just `--only` ones."""
    everything = plan.all_steps()
    if options.only:
        known = {s.id for s in everything}
        for step_id in options.only:
            if step_id not in known:
                raise FamilycError(f"plan {plan.plan_id} has no step {step_id!r}",
                                   hint="steps: " + ", ".join(sorted(known)))
        return [s for s in everything if s.id in options.only]
    return list(everything if options.baselines else plan.steps)


DISK_HINT = "free disk space, or use another --run-dir"


def disk_problem(plan: Plan, run: RunDir, step: TrainStep) -> str | None:
    """Whether the stage's checkpoints fit on the run directory's disk (familyc.cost.storage estimates them)."""
    need = plan.disk_bytes(step)
    stage_dir = run.step_dir(step.id)
    stage_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(stage_dir).free
    if free >= need:
        return None
    return f"needs about {need / 2**30:.1f} GiB free in {run.root} for its checkpoints, {free / 2**30:.1f} GiB are free"


def on_metrics(progress: Progress, on_line: Callable[[], None] | None = None) -> Callable[[dict[str, Any]], None]:
    """A stage's metrics lines as progress events, and `on_line()` as each arrives (it reads only what is new)."""
    def record(last: dict[str, Any]) -> None:
        if on_line is not None:
            on_line()
        step = last.get("step")
        if not isinstance(step, int) or "kind" in last:  # a held-out evaluation's record
            return
        tps, world = last.get("tps"), last.get("world_size") or 1
        progress.stage_progress(step=step, loss=last.get("loss"),
                                tokens_per_second=tps * world if isinstance(tps, int | float) else None)

    return record


class _Walker(Protocol):
    plan: Plan
    run: RunDir
    options: ApplyOptions
    progress: Progress
    data: DataInputs
    environment: RunEnvironment


def stage_progress(plan: Plan, step: TrainStep, index: int, total: int) -> StageProgress:
    """What the progress view knows of a stage before it starts: the plan's time for it and its start-up."""
    start = plan.cluster.startup
    return StageProgress(index=index, total=total, step_id=step.id, num_steps=step.num_steps,
                         predicted_seconds=step.predicted_seconds, startup_seconds=step.startup_seconds or 0.0,
                         finish_seconds=start.finish_seconds if start is not None and step.startup_seconds else 0.0)


def remaining_time(steps: list[Step]) -> tuple[float, float]:
    """The predicted start-up and the rest (training, evaluation, growth) of `steps`."""
    startup = sum(s.startup_seconds or 0.0 for s in steps if isinstance(s, TrainStep))
    return startup, sum(s.predicted_seconds for s in steps) - startup


def train_stage(walker: _Walker, step: TrainStep, stage: StageProgress, *, remaining: tuple[float, float],
                pid_path: Path | None, on_line: Callable[[], None] | None = None) -> tuple[int, float]:
    """Write the stage's job, run it under torchrun and watch it (node 0 and the other nodes alike):
    (its exit code, its wall seconds). `on_line` is called as metrics lines arrive (node 0's tracking)."""
    plan, run, options = walker.plan, walker.run, walker.options
    job = jobs.write_job(plan, run, step, walker.data, compile=options.compile)
    walker.progress.stage_started(stage, remaining_startup=remaining[0], remaining_train=remaining[1])
    started = stage.started = time.monotonic()
    argv = torchrun_argv(options.launch, job_toml=job, rdzv_id=f"{plan.plan_id}-{step.id}")
    code = run_stage(argv + list(options.extra_stage_args), jobs.stage_environment(plan, run, step, walker.environment),
                     log=run.step_dir(step.id) / jobs.LOG_FILE, cwd=run.root, pid_path=pid_path,
                     on_record=on_metrics(walker.progress, on_line))
    return code, time.monotonic() - started


class Executor:
    def __init__(self, plan: Plan, run: RunDir, state: RunState, options: ApplyOptions, progress: Progress,
                 data: DataInputs) -> None:
        self.plan, self.run, self.state = plan, run, state
        self.options, self.progress, self.data = options, progress, data
        self.environment = jobs.run_environment(plan, run, data, options.launch)
        self.tracker = Tracker(plan, run.root, options.track)

    # --- the walk -------------------------------------------------------------------------------
    def apply(self) -> None:
        steps = selected_steps(self.plan, self.options)
        for index, step in enumerate(steps, start=1):
            where = f"[{index}/{len(steps)}] {step.id}"
            if self.done(step):
                self.progress.line(f"{where}: done, skipped")
            elif isinstance(step, ExpandStep):
                self.expand(step, where)
            else:
                self.train(step, index, len(steps), remaining_time(steps[index:]))
            if isinstance(step, TrainStep):  # adopted or done: what tracking misses of it (a run tracked anew)
                self.tracker.catch_up(step)

    # --- bookkeeping ------------------------------------------------------------------------------
    def verified(self, step_state: StepState) -> list[str]:
        """Problems with a completed step's artefacts (empty: all there, all hashes match)."""
        found = []
        for relative, digest in step_state.artefacts.items():
            path = self.run.root / relative
            if not path.is_file():
                found.append(f"{relative} is missing")
            elif sha256_file(path) != digest:
                found.append(f"{relative} changed (sha256)")
        return found

    def done(self, step: Step) -> bool:
        st = self.state.step(step.id)
        if st.status != COMPLETED:
            return False
        problems = self.verified(st)
        if not problems:
            return True
        self.progress.line(f"{step.id}: was completed but {problems[0]}; running it again")
        st.status = FAILED
        st.error = "; ".join(problems)
        self.state.save()
        return False

    def begin(self, step: Step, log: Path | None) -> StepState:
        st = self.state.step(step.id)
        st.status, st.attempts, st.started_at, st.ended_at, st.error = RUNNING, st.attempts + 1, now(), None, None
        st.log = self.run.relative(log) if log is not None else None
        self.state.save()
        return st

    def fail(self, step: Step, message: str, *, log: Path | None = None, hint: str = "") -> StepError:
        st = self.state.step(step.id)
        st.status, st.ended_at, st.error = FAILED, now(), message
        self.state.save()
        return StepError(step.id, message, log=str(log) if log else "", hint=hint)

    def complete(self, step: Step, weights: Path, metrics: dict[str, Any]) -> None:
        st = self.state.step(step.id)
        files = sidecar_files(weights, sidecar_kind(step))
        st.artefacts = {self.run.relative(weights / name): digest for name, digest in files.items()}
        st.status, st.ended_at, st.error = COMPLETED, now(), None
        st.metrics = metrics
        self.state.save()

    # --- expand -----------------------------------------------------------------------------------
    def expand(self, step: ExpandStep, where: str) -> None:
        from familyc.expand.operators import Expansion
        from familyc.expand.stream import Recipes, expand_checkpoint

        source_step = self.plan.growth_source(step.source)
        source = self.run.weights(self.plan, source_step)
        target = self.run.weights(self.plan, step)
        if target.exists():
            problems = verify_sidecar(target, kind="expansion")
            if problems:
                raise self.fail(step, f"{target} exists but does not verify: {problems[0]}",
                                hint=f"remove {target} and apply again to redo the growth")
            self.complete(step, target, self.state.step(step.id).metrics)
            self.progress.line(f"{where}: found complete, adopted")
            return
        if not members.is_trained(source):
            raise self.fail(step, f"its source {step.source} has not been trained ({source} is missing)",
                            hint=f"apply {source_step.id} first")
        carried = source / OPTIMIZER_FOLDER
        if step.optimizer_state == "carry" and not members.is_complete(carried):
            raise self.fail(step, f"it carries the optimizer, but {step.source} kept no optimizer moments "
                            f"({carried} is missing)",
                            hint=f"{step.source} was trained by a plan that did not carry its optimizer: remove "
                                 f"{source} and apply again to retrain it, or set optimizer: fresh on this growth step")
        self.begin(step, None)
        self.progress.line(f"{where}: growing {step.source} -> {step.member} ({step.width} + {step.depth}, "
                           f"{step.exactness}; optimizer {step.optimizer_state})")
        expansion: Recipes = Expansion(self.plan.shape(step.source), self.plan.shape(step.member), width=step.width,
                              depth=step.depth, seed=step.seed, noise=step.noise)
        if armed("expand-midway"):  # the crash tests: die with half of the tensors written
            expansion = midway(expansion, "expand-midway")
        try:
            include = self._grow_moments(step, carried, target) if step.optimizer_state == "carry" else None
            written = expand_checkpoint(source, target, expansion, sidecar=members.expansion_sidecar(self.plan, step),
                                        include=include)
        except (CheckpointError, OSError) as exc:
            raise self.fail(step, str(exc.message if isinstance(exc, FamilycError) else exc)) from None
        self.complete(step, target, {"bytes_read": written.bytes_read, "bytes_written": written.bytes_written,
                                     "wall_seconds": round(written.seconds, 3)})
        self.progress.line(f"{where}: wrote {written.bytes_written / 2**20:.1f} MiB in {written.seconds:.1f}s")

    def _grow_moments(self, step: ExpandStep, carried: Path, target: Path) -> dict[str, Path]:
        """The source's final AdamW moments through the growth's maps (familyc.execute.grow.grow_moments)."""
        from familyc.execute.grow import grow_moments

        return grow_moments(self.plan, step.source, step.member, carried, target, width=step.width,
                            depth=step.depth, seed=step.seed)

    # --- train ------------------------------------------------------------------------------------
    def train(self, step: TrainStep, index: int, total: int, remaining: tuple[float, float]) -> None:
        weights = self.run.weights(self.plan, step)
        stage_dir = self.run.step_dir(step.id)
        dump = jobs.dump_folder(self.run, step)
        final = members.final_checkpoint(dump, step)
        if self._adopt(step, weights, final):
            self.progress.line(f"[{index}/{total}] {step.id}: found complete, adopted")
            return
        self._check_initial_weights(step)
        members.drop_torn_checkpoints(dump)
        self._check_disk(step, stage_dir)
        log = stage_dir / jobs.LOG_FILE
        with self.tracker.stage(step) as tracked:  # a W&B run that cannot start stops apply here, before begin
            self.begin(step, log)
            start = jobs.data_start(self.plan, self.run, step)
            if start is not None and not start.is_file():
                self.progress.line(f"{step.id}: {start} is missing, so this stage starts at the first document "
                                   "instead of where the previous stage stopped")
            stage = stage_progress(self.plan, step, index, total)
            code, wall = train_stage(self, step, stage, remaining=remaining, pid_path=stage_dir / PID_FILE,
                                     on_line=tracked.sync)
        st = self.state.step(step.id)  # now, so that a crash before the bookkeeping does not lose it
        st.metrics = {**st.metrics, "wall_seconds": round(st.metrics.get("wall_seconds", 0.0) + wall, 3),
                      **timeline(stage, wall)}
        self.state.save()
        if code != 0 and members.is_complete(final):
            self.progress.line(f"[{index}/{total}] {step.id}: the stage exited with code {code} after its final "
                               f"checkpoint was complete; keeping it (the end of {log} says why)")
            code = 0
        if code != 0:
            message, hint = diagnose(log, code)
            raise self.fail(step, message, log=log, hint=hint)
        if not members.is_complete(final):
            raise self.fail(step, f"the stage exited 0 but wrote no final checkpoint {final}", log=log)
        summary = self._promote(step, final, weights, wall)
        self.progress.stage_finished(actual_seconds=wall, predicted_seconds=step.predicted_seconds, summary=summary)

    def _check_initial_weights(self, step: TrainStep) -> None:
        start = self.plan.start_of(step)
        if start is None:
            return
        weights = self.run.weights(self.plan, start)
        problems = verify_sidecar(weights, kind=sidecar_kind(start)) if weights.exists() else [f"{weights} is missing"]
        if not problems and self.plan.carries_optimizer(step) and not members.is_complete(weights / OPTIMIZER_FOLDER):
            problems = [f"{weights / OPTIMIZER_FOLDER} (the carried optimizer moments) is missing"]
        if problems:
            raise self.fail(step, f"its initial weights from {start.id} are not ready: {problems[0]}",
                            hint=f"apply {start.id} first")

    def _check_disk(self, step: TrainStep, stage_dir: Path) -> None:
        problem = disk_problem(self.plan, self.run, step)
        if problem:
            raise self.fail(step, problem, hint=DISK_HINT)

    def _adopt(self, step: TrainStep, weights: Path, final: Path) -> bool:
        """A member whose training finished before the bookkeeping did (apply was killed in between)."""
        if weights.exists():
            problems = verify_sidecar(weights, kind="member")
            if problems:
                raise self.fail(step, f"{weights} exists but does not verify: {problems[0]}",
                                hint=f"remove {weights} and apply again to retrain {step.member}")
            self.complete(step, weights, self._stage_metrics(step))
            return True
        if members.is_complete(members.moving(weights)) or members.is_complete(final):
            self._promote(step, final, weights, wall=None)
            return True
        return False

    def _promote(self, step: TrainStep, final: Path, weights: Path, wall: float | None) -> str:
        """Make the final checkpoint the member (with its sidecar); mark the step done."""
        members.promote(self.plan, step, final, weights, data_position=jobs.data_end(self.run, step),
                        moments=jobs.optimizer_end(self.plan, self.run, step))
        metrics = self._stage_metrics(step)
        self.complete(step, weights, metrics)
        if not self.options.keep_checkpoints:
            members.drop_periodic_checkpoints(jobs.dump_folder(self.run, step))
        tokens = metrics.get("tokens", 0)
        loss = metrics.get("final_loss")
        return (f"trained {tokens:,} tokens" + (f", loss {loss:.4f}" if isinstance(loss, float) else "")
                + (f" in {wall:.1f}s" if wall is not None else ""))

    def _stage_metrics(self, step: TrainStep) -> dict[str, Any]:
        from familyc.execute import metrics as stage_metrics

        metrics_file = self.run.step_dir(step.id) / jobs.METRICS_FILE
        summary = stage_metrics.summarize(stage_metrics.read_records(metrics_file), batch_tokens=step.batch_tokens,
                                          peak_flops=self.plan.cluster.peak_flops, completed_steps=step.num_steps)
        out: dict[str, Any] = summary.to_data() if summary else {}
        records = stage_metrics.read_records(metrics_file, kind=stage_metrics.EVAL_KIND)
        if curve := stage_metrics.evaluations(records):
            out.update(heldout_first=curve[0][1], heldout_final=curve[-1][1], evaluations=len(curve),
                       eval_flops=stage_metrics.evaluation_flops(records))
        recorded = self.state.step(step.id).metrics
        wall = recorded.get("wall_seconds")  # every attempt's, recorded as each ended
        if wall is not None:
            out["wall_seconds"] = wall
        if "timeline" in recorded:
            out["timeline"] = recorded["timeline"]
            startup = stage_metrics.stage_startup(stage_metrics.read_records(metrics_file), recorded["timeline"],
                                                  num_steps=step.num_steps)
            if startup is not None:
                out["startup"] = startup
        out["metrics_file"] = self.run.relative(metrics_file)
        return out
