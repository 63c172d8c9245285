"""`familyc apply`: walk a plan's steps in order — train, expand, train, … — resumably.

A separate visitor over the plan (building a plan writes nothing; running it is this). For
every step, in order:
- completed in state.json and its artefacts verify against their sha256: skipped;
- its output already exists and verifies (a crash after the work, before the bookkeeping):
  adopted;
- otherwise run: a train step as a torchrun subprocess of familyc.backend.stage, which resumes
  from the newest periodic checkpoint in the step's dump folder when there is one; an expand
  step as a streamed expansion (familyc.expand.checkpoint), atomic by construction.
A trained member's final model-only checkpoint moves from the dump folder to members/<name>/
(or baselines/<name>/) through a temporary folder, with a sidecar of sha256; only then is the
step marked completed, and its periodic checkpoints deleted (the member is safe).

Failures (a non-zero exit, a non-finite loss, a missing dataset, a full disk) stop the run with
a StepError naming the step and its log; state.json stays valid and the next apply continues.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from familyc.errors import FamilycError, PlanError, StepError
from familyc.execute import metrics as stage_metrics
from familyc.execute.failpoints import armed, failpoint, midway
from familyc.execute.launcher import Launch, stage_env, torchrun_argv
from familyc.execute.progress import Progress, StageProgress
from familyc.execute.rundir import LOCK_FILE, MEMBER_SIDECAR, RunDir, all_steps
from familyc.execute.state import COMPLETED, FAILED, RUNNING, RunState, StepState, now
from familyc.plan.ir import ExpandStep, Plan, TrainStep

POLL_SECONDS = 0.5
DATA_POSITION = "data_position.json"
CHECKPOINT_BYTES_PER_PARAM = 4 + 4 + 8
"""A periodic full checkpoint: fp32 weights (4 bytes per parameter) and AdamW's two fp32 moments (8);
gradients are not saved, the extra 4 are headroom for the dataloader and train state."""
KEPT_CHECKPOINTS = 2


@dataclass(kw_only=True, slots=True)
class ApplyOptions:
    launch: Launch
    baselines: bool = False
    only: tuple[str, ...] = ()
    compile: bool | None = None
    """Override the plan's torch.compile setting (None: the plan's)."""
    keep_checkpoints: bool = False
    worker: bool = False
    """A node other than rank 0 of a multi-node run: it trains, and leaves state, growth and
    members to node 0 (which it waits for)."""
    extra_stage_args: tuple[str, ...] = field(default_factory=tuple)
    """More torchtitan options for every stage (tests shorten runs with them)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DataInputs:
    dataset_path: Path
    tokenizer_path: Path
    offline: bool


class Executor:
    def __init__(self, plan: Plan, run: RunDir, state: RunState, options: ApplyOptions, progress: Progress,
                 data: DataInputs) -> None:
        self.plan, self.run, self.state = plan, run, state
        self.options, self.progress, self.data = options, progress, data

    # --- the walk -------------------------------------------------------------------------------
    def selected(self) -> list[TrainStep | ExpandStep]:
        steps = all_steps(self.plan) if self.options.baselines else list(self.plan.steps)
        if self.options.only:
            known = {s.id for s in all_steps(self.plan)}
            for step_id in self.options.only:
                if step_id not in known:
                    raise FamilycError(f"plan {self.plan.plan_id} has no step {step_id!r}",
                                       hint="steps: " + ", ".join(sorted(known)))
            steps = [s for s in all_steps(self.plan) if s.id in self.options.only]
        return steps

    def apply(self) -> None:
        steps = self.selected()
        for index, step in enumerate(steps, start=1):
            remaining = sum(s.predicted_seconds for s in steps[index:])
            if isinstance(step, ExpandStep):
                if not self.options.worker:
                    self.expand(step, index, len(steps))
            else:
                self.train(step, index, len(steps), remaining)

    # --- bookkeeping ------------------------------------------------------------------------------
    def verified(self, step_state: StepState) -> list[str]:
        """Problems with a completed step's artefacts (empty: all there, all hashes match)."""
        from familyc.expand.checkpoint import sha256_file

        found = []
        for relative, digest in step_state.artefacts.items():
            path = self.run.root / relative
            if not path.is_file():
                found.append(f"{relative} is missing")
            elif sha256_file(path) != digest:
                found.append(f"{relative} changed (sha256)")
        return found

    def done(self, step: TrainStep | ExpandStep) -> bool:
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

    def begin(self, step: TrainStep | ExpandStep, log: Path | None) -> StepState:
        st = self.state.step(step.id)
        st.status, st.attempts, st.started_at, st.ended_at, st.error = RUNNING, st.attempts + 1, now(), None, None
        st.log = self.run.relative(log) if log is not None else None
        self.state.save()
        return st

    def fail(self, step: TrainStep | ExpandStep, message: str, *, log: Path | None = None, hint: str = "") -> StepError:
        st = self.state.step(step.id)
        st.status, st.ended_at, st.error = FAILED, now(), message
        self.state.save()
        return StepError(step.id, message, log=str(log) if log else "", hint=hint)

    def complete(self, step: TrainStep | ExpandStep, weights: Path, metrics: dict[str, Any]) -> None:
        st = self.state.step(step.id)
        sidecar = json.loads((weights / _sidecar_name(step)).read_text())
        st.artefacts = {self.run.relative(weights / name): digest for name, digest in sidecar["files"].items()}
        st.status, st.ended_at, st.error = COMPLETED, now(), None
        st.metrics = metrics
        self.state.save()

    # --- expand -----------------------------------------------------------------------------------
    def expand(self, step: ExpandStep, index: int, total: int) -> None:
        from familyc.compiler.derive_shapes import shape_of
        from familyc.expand.checkpoint import SIDECAR_FILE, CheckpointError, expand_checkpoint, verify_sidecar
        from familyc.expand.operators import Expansion

        if self.done(step):
            self.progress.line(f"[{index}/{total}] {step.id}: done, skipped")
            return
        source = self.run.weights(self.plan.step(f"train-{step.source}"))  # type: ignore[arg-type]
        target = self.run.weights(step)
        if target.exists():
            problems = verify_sidecar(target)
            if problems:
                raise self.fail(step, f"{target} exists but does not verify: {problems[0]}",
                                hint=f"remove {target} and apply again to redo the growth")
            self.complete(step, target, self.state.step(step.id).metrics)
            self.progress.line(f"[{index}/{total}] {step.id}: found complete, adopted")
            return
        if not (source / MEMBER_SIDECAR).is_file():
            raise self.fail(step, f"its source {step.source} has not been trained ({source} is missing)",
                            hint=f"apply train-{step.source} first")
        self.begin(step, None)
        self.progress.line(f"[{index}/{total}] {step.id}: growing {step.source} -> {step.member} "
                           f"({step.width} + {step.depth}, {step.exactness})")
        expansion = Expansion(shape_of(self.plan.member(step.source)), shape_of(self.plan.member(step.member)),
                              width=step.width, depth=step.depth, seed=step.seed, noise=step.noise)
        if armed("expand-midway"):  # the crash tests: die with half of the tensors written
            targets = expansion.targets
            expansion.targets = lambda dtype: midway(targets(dtype), "expand-midway")  # type: ignore[method-assign]
        sidecar = {"plan_id": self.plan.plan_id, "step": step.id, "source": step.source, "target": step.member,
                   "width": step.width, "depth": step.depth, "gqa": step.gqa, "seed": step.seed, "noise": step.noise,
                   "exactness": step.exactness, "optimizer_state": step.optimizer_state}
        try:
            written = expand_checkpoint(source, target, expansion, sidecar=sidecar)
        except (CheckpointError, OSError) as exc:
            raise self.fail(step, str(exc.message if isinstance(exc, FamilycError) else exc)) from None
        assert SIDECAR_FILE == _sidecar_name(step)
        self.complete(step, target, {"bytes_read": written.bytes_read, "bytes_written": written.bytes_written,
                                     "wall_seconds": round(written.seconds, 3)})
        self.progress.line(f"[{index}/{total}] {step.id}: wrote {written.bytes_written / 2**20:.1f} MiB "
                           f"in {written.seconds:.1f}s")

    # --- train ------------------------------------------------------------------------------------
    def train(self, step: TrainStep, index: int, total: int, remaining_predicted: float) -> None:
        if not self.options.worker and self.done(step):
            self.progress.line(f"[{index}/{total}] {step.id}: done, skipped")
            return
        from familyc.backend.job import final_checkpoint

        weights = self.run.weights(step)
        stage_dir = self.run.step_dir(step.id)
        dump = stage_dir / "dump"
        final = final_checkpoint(dump, step.num_steps)
        if self.options.worker and self._trained_before(step, weights, final):
            self.progress.line(f"[{index}/{total}] {step.id}: done, skipped (node {self.options.launch.node_rank})")
            return
        if not self.options.worker and self._adopt(step, weights, final):
            self.progress.line(f"[{index}/{total}] {step.id}: found complete, adopted")
            return
        init_from = self._initial_weights(step)
        if not self.options.worker:
            _drop_torn_checkpoints(dump)
        self._check_disk(step, stage_dir)
        log = stage_dir / "stdout.log"
        if not self.options.worker:
            self.begin(step, log)
        job = self._write_job(step, stage_dir, dump, init_from)
        metrics_path = stage_dir / "metrics.jsonl"
        stage = StageProgress(index=index, total=total, step_id=step.id, num_steps=step.num_steps)
        self.progress.stage_started(stage, remaining_predicted=remaining_predicted)
        started = time.monotonic()
        code = self._run_stage(step, job, log, metrics_path)
        wall = time.monotonic() - started
        if not self.options.worker:  # now, so that a crash before the bookkeeping does not lose it
            st = self.state.step(step.id)
            st.metrics = {**st.metrics, "wall_seconds": round(st.metrics.get("wall_seconds", 0.0) + wall, 3)}
            self.state.save()
        if code != 0 and (final / ".metadata").is_file():  # DCP writes .metadata last: the member is whole
            self.progress.line(f"[{index}/{total}] {step.id}: the stage exited with code {code} after its final "
                               f"checkpoint was complete; keeping it (the end of {log} says why)")
            code = 0
        if code != 0:
            message, hint = _diagnose(log, code)
            if self.options.worker:
                raise StepError(step.id, message, log=str(log), hint=hint)
            raise self.fail(step, message, log=log, hint=hint)
        if self.options.worker:
            self.progress.stage_finished(actual_seconds=wall, predicted_seconds=step.predicted_seconds,
                                         summary=f"trained in {wall:.1f}s (node {self.options.launch.node_rank})")
            return
        if not (final / ".metadata").is_file():
            raise self.fail(step, f"the stage exited 0 but wrote no final checkpoint {final}", log=log)
        summary = self._promote(step, final, weights, wall)
        self.progress.stage_finished(actual_seconds=wall, predicted_seconds=step.predicted_seconds, summary=summary)

    def _trained_before(self, step: TrainStep, weights: Path, final: Path) -> bool:
        """On a node other than 0: whether node 0 (which keeps the state) will not train this stage again.
        Training it here anyway would wait for node 0 in a rendezvous that never comes."""
        status = RunState.load(self.run.state_path).step(step.id).status
        moving = weights.with_name(f".{weights.name}.moving")
        return status == COMPLETED or weights.exists() or moving.exists() or (final / ".metadata").is_file()

    def _initial_weights(self, step: TrainStep) -> Path | None:
        if step.init_from is None:
            return None
        expansion = self.run.weights(self.plan.step(step.init_from))
        if self.options.worker:  # node 0 grows the weights; wait for them
            while not (expansion / "familyc-expansion.json").is_file():
                if RunState.load(self.run.state_path).step(step.init_from).status == FAILED:
                    raise StepError(step.init_from, "failed on node 0", hint="see node 0's output")
                time.sleep(POLL_SECONDS)
            return expansion
        from familyc.expand.checkpoint import verify_sidecar

        problems = verify_sidecar(expansion) if expansion.exists() else [f"{expansion} is missing"]
        if problems:
            raise self.fail(step, f"its initial weights from {step.init_from} are not ready: {problems[0]}",
                            hint=f"apply {step.init_from} first")
        return expansion

    def _check_disk(self, step: TrainStep, stage_dir: Path) -> None:
        params = self.plan.member(step.member).params
        need = params * (CHECKPOINT_BYTES_PER_PARAM * KEPT_CHECKPOINTS + 4 * 2)  # + final, + its move
        stage_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(stage_dir).free
        if free < need:
            raise self.fail(step, f"needs about {need / 2**30:.1f} GiB free in {self.run.root} for its checkpoints, "
                            f"{free / 2**30:.1f} GiB are free", hint="free disk space, or use another --run-dir")

    def _write_job(self, step: TrainStep, stage_dir: Path, dump: Path, init_from: Path | None) -> Path:
        from familyc.backend.job import job_config_toml

        member = self.plan.member(step.member)
        compile_ = self.plan.training.compile if self.options.compile is None else self.options.compile
        text = job_config_toml(step, member, self.plan, dump_folder=dump, dataset_path=self.data.dataset_path,
                               tokenizer_path=self.data.tokenizer_path, flavor=flavor_name(member.name),
                               compile=compile_, init_from=init_from,
                               checkpoint_interval=self.plan.training.checkpoint_interval,
                               seed=self.plan.training.seed)
        job = stage_dir / "job.toml"
        if not job.is_file() or job.read_text() != text:
            job.write_text(text)
        return job

    def _run_stage(self, step: TrainStep, job: Path, log: Path, metrics_path: Path) -> int:
        launch = self.options.launch
        argv = torchrun_argv(launch, job_toml=job, rdzv_id=f"{self.plan.plan_id}-{step.id}")
        argv += list(self.options.extra_stage_args)
        env = stage_env(launch, flavors=self.run.flavors_path, metrics=metrics_path,
                        datasets_cache=self.run.datasets_cache)
        env["FAMILYC_DATA_END"] = str(self.data_position(step.id).resolve())
        start = self._data_start(step)
        if start is not None:
            env["FAMILYC_DATA_START"] = str(start.resolve())
        if not self.data.offline:
            env.pop("HF_HUB_OFFLINE", None)
            env.pop("HF_DATASETS_OFFLINE", None)
        with log.open("a", encoding="utf-8") as out:
            out.write(f"\n=== familyc apply {now()}: {' '.join(argv)}\n")
            out.flush()
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.run.root)
            # node 0's pid only: the run directory is shared, and another node's pid means nothing here
            with nullcontext() if self.options.worker else _pid_file(job.parent / "stage.pid", process.pid):
                try:
                    return self._watch(process, step, metrics_path)
                except BaseException:
                    _stop(process)
                    raise

    def data_position(self, step_id: str) -> Path:
        """Where a stage records each rank's position in the data after its last step (promotion copies it
        into the member's folder, where the next stage reads it)."""
        return self.run.step_dir(step_id) / DATA_POSITION

    def _data_start(self, step: TrainStep) -> Path | None:
        if step.data_continues_from is None:
            return None
        previous = self.plan.step(step.data_continues_from)
        start = self.run.weights(previous) / DATA_POSITION  # type: ignore[arg-type]
        if not start.is_file():
            self.progress.line(f"{step.id}: {start} is missing, so this stage starts at the first document "
                               "instead of where the previous stage stopped")
            return None
        return start

    def _watch(self, process: subprocess.Popen[bytes], step: TrainStep, metrics_path: Path) -> int:
        """Wait for the stage, reading only the metrics lines it appended since the last look."""
        offset = 0
        while True:
            code = process.poll()
            if metrics_path.is_file():
                with metrics_path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                offset += len(complete)
                for line in complete.decode("utf-8", errors="replace").splitlines()[-1:]:
                    try:
                        last = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    tps, world = last.get("tps"), last.get("world_size") or 1
                    self.progress.stage_progress(step=last["step"], loss=last.get("loss"),
                                                 tokens_per_second=tps * world if isinstance(tps, int | float)
                                                 else None)
            if code is not None:
                return code
            time.sleep(POLL_SECONDS)

    def _adopt(self, step: TrainStep, weights: Path, final: Path) -> bool:
        """A member whose training finished before the bookkeeping did (apply was killed in between)."""
        from familyc.expand.checkpoint import verify_sidecar

        moving = weights.with_name(f".{weights.name}.moving")
        if weights.exists():
            problems = verify_sidecar(weights, sidecar=MEMBER_SIDECAR)
            if problems:
                raise self.fail(step, f"{weights} exists but does not verify: {problems[0]}",
                                hint=f"remove {weights} and apply again to retrain {step.member}")
            self.complete(step, weights, self._stage_metrics(step))
            return True
        if (moving / ".metadata").is_file() or (final / ".metadata").is_file():
            self._promote(step, final, weights, wall=None)
            return True
        return False

    def _promote(self, step: TrainStep, final: Path, weights: Path, wall: float | None) -> str:
        """Move the final checkpoint into members/ (or baselines/) with its sidecar; mark the step done."""
        from familyc.expand.checkpoint import sha256_file

        moving = weights.with_name(f".{weights.name}.moving")
        weights.parent.mkdir(parents=True, exist_ok=True)
        if not moving.exists():
            os.rename(final, moving)
        failpoint("promote-moved")
        position = self.data_position(step.id)
        if position.is_file():  # the member keeps where its data ended (the next stage starts there)
            shutil.copyfile(position, moving / position.name)
        files = {p.name: sha256_file(p) for p in sorted(moving.iterdir()) if p.is_file() and p.name != MEMBER_SIDECAR}
        member = self.plan.member(step.member)
        sidecar = {"plan_id": self.plan.plan_id, "step": step.id, "member": step.member,
                   "shape": {k: getattr(member, k) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim",
                                                               "vocab_size")},
                   "init_from": step.init_from, "dtype": "float32", "files": files}
        (moving / MEMBER_SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        os.rename(moving, weights)
        metrics = self._stage_metrics(step)
        self.complete(step, weights, metrics)
        if not self.options.keep_checkpoints:
            shutil.rmtree(self.run.step_dir(step.id) / "dump" / "checkpoint", ignore_errors=True)
        tokens = metrics.get("tokens", 0)
        loss = metrics.get("final_loss")
        return (f"trained {tokens:,} tokens" + (f", loss {loss:.4f}" if isinstance(loss, float) else "")
                + (f" in {wall:.1f}s" if wall is not None else ""))

    def _stage_metrics(self, step: TrainStep) -> dict[str, Any]:
        records = stage_metrics.read_records(self.run.step_dir(step.id) / "metrics.jsonl")
        peak = self.plan.cluster.peak_flops
        summary = stage_metrics.summarize(records, batch_tokens=step.batch_tokens, peak_flops=peak,
                                          completed_steps=step.num_steps)
        out: dict[str, Any] = summary.to_data() if summary else {}
        wall = self.state.step(step.id).metrics.get("wall_seconds")  # every attempt's, recorded as each ended
        if wall is not None:
            out["wall_seconds"] = wall
        out["metrics_file"] = self.run.relative(self.run.step_dir(step.id) / "metrics.jsonl")
        return out


def flavor_name(member: str) -> str:
    return f"familyc-{member}"


def _sidecar_name(step: TrainStep | ExpandStep) -> str:
    return "familyc-expansion.json" if isinstance(step, ExpandStep) else MEMBER_SIDECAR


@contextmanager
def _pid_file(path: Path, pid: int) -> Iterator[None]:
    path.write_text(f"{pid}\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a stage we are abandoning: torchrun forwards SIGTERM to its workers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _drop_torn_checkpoints(dump: Path) -> None:
    """Remove a checkpoint folder without one complete save (apply was killed during the stage's first).

    torchtitan resumes from the folder whenever it exists and ignores `initial_load_path` then; finding
    no complete step in it, it would train the stage from random weights instead of the grown ones."""
    from familyc.backend.job import CHECKPOINT_FOLDER

    folder = dump / CHECKPOINT_FOLDER
    if folder.is_dir() and not any((p / ".metadata").is_file() for p in folder.glob("step-*")):
        shutil.rmtree(folder)


def _tail(path: Path, lines: int = 200) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _diagnose(log: Path, code: int) -> tuple[str, str]:
    """A failed stage's cause, from the end of its log: (message, hint)."""
    text = _tail(log)
    for what, marker in (("loss", "the loss is"), ("gradient", "the gradient norm is")):
        line = next((line for line in text.splitlines() if "familyc stage: " in line and marker in line), None)
        if line is None:
            continue
        return (f"non-finite {what}: {line.split('familyc stage: ')[-1].strip()}",
                "lower the peak learning rate or check the initial weights; apply again resumes from the last "
                "checkpoint")
    if "No space left on device" in text:
        return "the disk is full", "free disk space and apply again: it resumes from the last checkpoint"
    if "is not registered" in text:
        return "torchtitan does not know the member's flavor", "this is a familyc bug; please report it"
    for marker in ("FileNotFoundError", "DatasetNotFoundError", "Unable to find"):
        if marker in text:
            line = next(line for line in reversed(text.splitlines()) if marker in line)
            return f"a file is missing: {line.strip()[:300]}", "check data.dataset and tokenizer in the spec"
    return (f"the stage exited with code {code}",
            "the end of the log says why; apply again resumes from the last checkpoint")


@contextmanager
def run_lock(run: RunDir) -> Iterator[None]:
    """One `familyc apply` per run directory at a time (the lock dies with its process)."""
    run.root.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = (run.root / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FamilycError(f"another familyc apply is running in {run.root}",
                           hint="wait for it, or stop it; its stages stop with it") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def check_plan_consistent(plan: Plan) -> None:
    for step in plan.steps:
        if isinstance(step, TrainStep) and step.init_from and not isinstance(plan.step(step.init_from), ExpandStep):
            raise PlanError(f"{step.id} starts from {step.init_from}, which is not a growth step")
