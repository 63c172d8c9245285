"""`familyc apply` end to end on the CPU: a reference run of a small family, and the same family
killed at every hard point (in the middle of a stage, in the middle of an expansion, between the
renames that promote a member) that must still finish with exactly the reference's members.

The family is tests/fixtures/specs-apply/family.yaml: specs/tiny.yaml's four members and three
growth steps on a 25x smaller budget (3, 2, 11 and 13 steps), a full checkpoint every 3 steps,
2 ranks over gloo, no torch.compile. Every run is the command a user types, from the repository
root, in a process group of its own (a failpoint kills its whole group):

    python -m familyc apply tests/fixtures/specs-apply/family.yaml --yes --run-dir DIR

Crashes are real: SIGKILL of apply's process group from the test, or from inside apply at a
failpoint (FAMILYC_FAILPOINTS, familyc/execute/failpoints.py). About three minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan.train", reason="torchtitan (and triton, which it imports) is not installed")
pytest.importorskip("tokenizers", reason="tokenizers is not installed")

from familyc.checkpoint.sidecar import MEMBER_SIDECAR, verify_sidecar  # noqa: E402
from familyc.execute.metrics import read_evaluations, read_records  # noqa: E402
from familyc.execute.rundir import RunDir  # noqa: E402
from familyc.plan import ir  # noqa: E402
from familyc.plan.steps import ExpandStep, TrainStep  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEC = "tests/fixtures/specs-apply/family.yaml"
TIMEOUT = 300
KILLED = -signal.SIGKILL


# --- running apply ------------------------------------------------------------------------------

@dataclass
class Applied:
    run_dir: Path
    returncode: int
    output: str
    seconds: float
    state: dict[str, Any]
    """state.json as this apply left it."""

    def status(self, step_id: str) -> str:
        return self.state["steps"][step_id]["status"]


def state_of(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def apply_env(failpoints: str = "", extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FAMILYC_FAILPOINTS", "OMP_NUM_THREADS")}
    env["COLUMNS"] = "160"
    if failpoints:
        env["FAMILYC_FAILPOINTS"] = failpoints
    return {**env, **(extra or {})}


def apply_argv(run_dir: Path, *args: str, spec: str = SPEC) -> list[str]:
    return [sys.executable, "-m", "familyc", "apply", spec, "--yes", "--run-dir", str(run_dir), *args]


def apply(run_dir: Path, *args: str, spec: str = SPEC, failpoints: str = "",
          env: dict[str, str] | None = None) -> Applied:
    """One `familyc apply` to its end (or its failpoint), in a session of its own (`env`: more variables)."""
    start = time.monotonic()
    proc = subprocess.run(apply_argv(run_dir, *args, spec=spec), cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT, env=apply_env(failpoints, env), start_new_session=True)
    return Applied(run_dir, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start, state_of(run_dir))


def apply_killed_at(run_dir: Path, step_id: str, step: int, *args: str, spec: str = SPEC,
                    env: dict[str, str] | None = None) -> Applied:
    """Start `familyc apply`; SIGKILL its process group once `step_id` has logged `step`.

    That kills apply and torchrun; torchrun starts each worker in a session of its own, so the group kill
    does not reach them, but each worker asks the kernel to kill it when torchrun dies (PR_SET_PDEATHSIG).
    Any worker still found is frozen (SIGSTOP) where it is, so that the next apply would find it whatever
    the machine's speed (running on, it could finish the stage before the next apply starts)."""
    log = run_dir.parent / f"{run_dir.name}-{step_id}-{step}.log"
    metrics = run_dir / "steps" / step_id / "metrics.jsonl"
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(apply_argv(run_dir, *args, spec=spec), cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=apply_env(extra=env), start_new_session=True)
        try:
            while not any(r["step"] >= step for r in read_records(metrics)):
                if proc.poll() is not None or time.monotonic() - start > TIMEOUT:
                    break
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # apply leads its group: pgid == pid
            proc.wait()
            for pid in stage_workers(run_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
    return Applied(run_dir, proc.returncode, log.read_text(), time.monotonic() - start, state_of(run_dir))


def stage_workers(under: Path) -> list[int]:
    """Processes of familyc.backend.stage training a job file under `under` (Linux)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            if "familyc.backend.stage" in argv and str(under) in argv:
                found.append(int(entry.name))
    return found


def kill_stage_workers(under: Path) -> None:
    for pid in stage_workers(under):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # stopped or not


def plan_of(run_dir: Path) -> ir.Plan:
    return ir.loads((run_dir / "plan.json").read_text())


def train_steps(plan: ir.Plan) -> list[TrainStep]:
    return [s for s in plan.steps if isinstance(s, TrainStep)]


def heldout_losses(run_dir: Path, *, tokens: int = 8192) -> dict[str, float]:
    """Every member's mean loss on the run's held-out documents (familyc.backend.evaluate)."""
    from familyc.backend.evaluate import heldout_loss, load_heldout, load_member
    from familyc.execute.data import heldout_dir, prepare_data

    run, plan = RunDir(run_dir), plan_of(run_dir)
    tokenizer = prepare_data(plan, run, plan_file=None).tokenizer_path
    folder = heldout_dir(plan, run)
    assert folder is not None, f"{run_dir} has no held-out split"
    heldout = load_heldout(folder, tokenizer, seq_len=plan.architecture.seq_len, max_tokens=tokens)
    return {m.name: heldout_loss(load_member(plan, m.name, run_dir / "members" / m.name), heldout)
            for m in plan.members}


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a TensorBoard run folder, read back as TensorBoard reads it: (step, value)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def stage_sections(log: Path) -> list[str]:
    """A stage's stdout.log split at each `=== familyc apply` header: one section per attempt."""
    return log.read_text().split("\n=== familyc apply ")[1:]


# --- the reference run --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Applied:
    run_dir = tmp_path_factory.mktemp("apply") / "reference"
    try:
        return apply(run_dir)
    finally:
        kill_stage_workers(run_dir)


@pytest.fixture(scope="module")
def reference_losses(reference: Applied) -> dict[str, float]:
    assert reference.returncode == 0, reference.output[-4000:]
    return heldout_losses(reference.run_dir)


def test_the_reference_run_trains_every_member_and_records_it(reference: Applied) -> None:
    assert reference.returncode == 0, reference.output[-4000:]
    run_dir, plan = reference.run_dir, plan_of(reference.run_dir)
    state = reference.state
    assert state["plan_id"] == plan.plan_id and state["family"] == "tiny-apply"
    assert state["spec"] == {"path": SPEC, "sha256": plan.spec.sha256}
    assert {k: (v["status"], v["attempts"]) for k, v in state["steps"].items()} == {
        **{s.id: ("completed", 1) for s in plan.steps}, **{b.train.id: ("pending", 0) for b in plan.baseline.members}}
    for step in plan.steps:
        line = f"{step.id}: trained" if isinstance(step, TrainStep) else f"{step.id}: wrote"
        assert line in reference.output

    for step in train_steps(plan):
        weights = run_dir / "members" / step.member
        assert (weights / ".metadata").is_file() and (weights / "__1_0.distcp").is_file()  # one file per rank
        assert verify_sidecar(weights, kind="member") == []
        sidecar = json.loads((weights / MEMBER_SIDECAR).read_text())
        assert (sidecar["plan_id"], sidecar["step"], sidecar["init_from"]) == (plan.plan_id, step.id, step.init_from)
        assert sidecar["shape"]["dim"] == plan.member(step.member).dim
        assert state["steps"][step.id]["artefacts"] == {f"members/{step.member}/{name}": digest
                                                        for name, digest in sidecar["files"].items()}
        stage = run_dir / "steps" / step.id
        assert not (stage / "dump" / "checkpoint").exists()  # deleted once the member was safe
        assert not (stage / "stage.pid").exists()
        assert state["steps"][step.id]["log"] == f"steps/{step.id}/stdout.log"
    for step in plan.steps:
        if isinstance(step, ExpandStep):
            assert verify_sidecar(run_dir / "expansions" / step.id) == []
            sidecar = json.loads((run_dir / "expansions" / step.id / "familyc-expansion.json").read_text())
            assert sidecar["growth"]["seed"] == 0
    assert not list((run_dir / "members").glob(".*")) and not list((run_dir / "expansions").glob(".*"))


def test_a_growth_step_that_carries_the_optimizer_hands_its_moments_to_the_grown_stage(reference: Applied) -> None:
    """xs -> s and m -> l carry AdamW's state: xs and m keep their final moments in their folders, the two
    expansions hold them grown (exactly the growth's map of the source's), and train-s and train-l load them
    before their first step, at their own schedule's LR; s -> m starts train-m with a fresh optimizer."""
    import torch

    from familyc.backend.keys import model_keys
    from familyc.backend.moments import CARRIED_KIND
    from familyc.checkpoint.reader import load_state_dict
    from familyc.expand.moments import MomentRecipes

    assert reference.returncode == 0, reference.output[-4000:]
    run_dir, plan = reference.run_dir, plan_of(reference.run_dir)
    for step in train_steps(plan):
        kept = run_dir / "members" / step.member / "optimizer"
        assert kept.is_dir() == (step.member in ("xs", "m")), step.member
        listed = json.loads((kept.parent / MEMBER_SIDECAR).read_text())["files"]
        assert ("optimizer/.metadata" in listed) == kept.is_dir()
    for growth in plan.expand_steps():
        folder = run_dir / "expansions" / growth.id
        assert verify_sidecar(folder, kind="expansion") == []
        assert (folder / "optimizer").is_dir() == (growth.optimizer_state == "carry")
        assert f"{growth.id}: growing" in reference.output
        assert f"optimizer {growth.optimizer_state})" in reference.output
        if growth.optimizer_state == "carry":
            recipes = MomentRecipes(plan.shape(growth.source), plan.shape(growth.member), width=growth.width,
                                    depth=growth.depth, seed=growth.seed)
            source = load_state_dict(run_dir / "members" / growth.source / "optimizer")
            grown = load_state_dict(folder / "optimizer")
            assert set(grown) == set(recipes.target_keys())
            for target in recipes.targets(torch.float32):
                assert torch.equal(grown[target.key], target.compute(source.__getitem__)), target.key
            assert any(bool((t != 0).any()) for k, t in grown.items() if k.endswith(".exp_avg"))
    for step in train_steps(plan):
        metrics = run_dir / "steps" / step.id / "metrics.jsonl"
        carried = read_records(metrics, kind=CARRIED_KIND)
        if step.member not in ("s", "l"):
            assert carried == [], step.id
            continue
        (record,) = carried
        first = read_records(metrics)[0]
        assert first["step"] == 1
        assert record["tensors"] == 3 * len(model_keys(plan.shape(step.member)))
        assert record["group_lrs"] and all(lr == pytest.approx(first["lr"], rel=1e-9) for lr in record["group_lrs"])
        assert "optimizer state tensors carried from" in (run_dir / "steps" / step.id / "stdout.log").read_text()


def test_the_reference_run_records_measured_compute_with_the_plans_formula(reference: Applied) -> None:
    assert reference.returncode == 0, reference.output[-4000:]
    run_dir, plan = reference.run_dir, plan_of(reference.run_dir)
    for step in train_steps(plan):
        metrics = reference.state["steps"][step.id]["metrics"]
        assert metrics["steps"] == step.num_steps
        assert metrics["tokens"] == step.num_steps * step.batch_tokens == step.tokens
        # one formula: torchtitan's FLOPs per token, measured in the trainer, is the plan's
        assert metrics["num_flops_per_token"] == plan.member(step.member).flops_per_token
        assert metrics["flops"] == metrics["tokens"] * metrics["num_flops_per_token"] == step.flops
        assert metrics["wall_seconds"] > 0 and metrics["train_seconds"] > 0 and metrics["world_size"] == 2
        assert math.isfinite(metrics["first_loss"]) and math.isfinite(metrics["final_loss"])
        assert metrics["metrics_file"] == f"steps/{step.id}/metrics.jsonl"
        records = read_records(run_dir / metrics["metrics_file"])
        assert [r["step"] for r in records] == list(range(1, step.num_steps + 1))  # log_interval 1
        assert all(math.isfinite(r["loss"]) for r in records)
        assert records[-1]["n_tokens_seen"] == step.tokens
    # a grown member starts where its source ended, not from scratch (ln 2048 = 7.6)
    first = {s.member: reference.state["steps"][s.id]["metrics"]["first_loss"] for s in train_steps(plan)}
    final = {s.member: reference.state["steps"][s.id]["metrics"]["final_loss"] for s in train_steps(plan)}
    assert first["l"] < 7.0 and first["l"] == pytest.approx(final["m"], abs=0.5)


def test_every_stage_evaluates_the_heldout_split_from_step_0_to_its_last_step(reference: Applied) -> None:
    """family.yaml: 2,048 held-out tokens at step 0, every 4 steps and the last, on the sharded model in the stage."""
    assert reference.returncode == 0, reference.output[-4000:]
    run_dir, plan = reference.run_dir, plan_of(reference.run_dir)
    saved = heldout_losses(run_dir, tokens=2048)  # the report's windows, on the members as saved
    curves = {}
    for step in train_steps(plan):
        assert step.eval is not None and step.eval.interval == 4
        curves[step.member] = curve = read_evaluations(run_dir / "steps" / step.id / "metrics.jsonl")
        assert [s for s, _ in curve] == list(step.eval.steps(step.num_steps))
        assert curve[-1][1] == pytest.approx(saved[step.member], abs=1e-5)
        metrics = reference.state["steps"][step.id]["metrics"]
        assert (metrics["heldout_first"], metrics["heldout_final"]) == (curve[0][1], curve[-1][1])
        assert metrics["evaluations"] == len(curve) and metrics["eval_flops"] == step.eval.flops
        assert metrics["flops"] == step.flops  # the evaluations are not training compute
    for step in train_steps(plan):  # every growth is exact: a grown stage starts at its source's last point
        if step.source is not None:
            assert curves[step.member][0][1] == pytest.approx(curves[step.source][-1][1], abs=1e-5)


def test_each_progressive_stage_continues_in_the_data_where_the_previous_one_stopped(reference: Applied) -> None:
    assert reference.returncode == 0, reference.output[-4000:]
    run_dir, plan = reference.run_dir, plan_of(reference.run_dir)
    previous = None
    for step in plan.steps:
        if step.kind != "train":
            continue
        assert step.data_continues_from == previous
        position = json.loads((run_dir / "members" / step.member / "data_position.json").read_text())
        assert position["world_size"] == 2 and len(position["sample_idx"]) == 2
        log = (run_dir / "steps" / step.id / "stdout.log").read_text()
        if previous is None:
            assert "data starts at document" not in log
        else:
            before = json.loads((run_dir / "members" / plan.step(previous).member / "data_position.json").read_text())
            for rank, start in enumerate(before["sample_idx"]):
                assert f"data starts at document {start} of rank {rank}'s shard" in log
            assert all(b > a for a, b in zip(before["sample_idx"], position["sample_idx"], strict=True))
        previous = step.id


def test_the_job_files_parse_with_torchtitan(reference: Applied) -> None:
    from torchtitan.config import ConfigManager

    assert reference.returncode == 0, reference.output[-4000:]
    run_dir, plan = reference.run_dir, plan_of(reference.run_dir)
    for step in train_steps(plan):
        config = ConfigManager().parse_args(["--job.config_file", str(run_dir / "steps" / step.id / "job.toml")])
        assert (config.model.name, config.model.flavor) == ("llama3", f"familyc-{step.member}")
        assert config.training.steps == step.num_steps and config.optimizer.lr == step.max_lr
        assert config.training.global_batch_size * config.training.seq_len == step.batch_tokens
        assert (config.checkpoint.interval, config.metrics.log_freq, config.compile.enable) == (3, 1, False)
        assert config.job.dump_folder == str((run_dir / "steps" / step.id / "dump").resolve())
        expected = str((run_dir / "expansions" / step.init_from).resolve()) if step.init_from else None
        assert (config.checkpoint.initial_load_path or None) == expected


def test_every_stage_is_one_tensorboard_run_on_the_family_axes(reference: Applied) -> None:
    """RUN_DIR/tensorboard/<step id>: each series by the stage's step, by the tokens and by the GFLOPs the family
    has trained (the progressive stages before it in plan order, then its own steps), the values metrics.jsonl's."""
    assert reference.returncode == 0, reference.output[-4000:]
    run_dir, plan = reference.run_dir, plan_of(reference.run_dir)
    steps = train_steps(plan)
    assert sorted(p.name for p in (run_dir / "tensorboard").iterdir()) == sorted(s.id for s in steps)
    tokens_before = flops_before = 0
    for step in steps:
        folder = run_dir / "tensorboard" / step.id
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1, step.id
        found = tensorboard_scalars(folder)
        records = read_records(run_dir / "steps" / step.id / "metrics.jsonl")
        numbers = range(1, step.num_steps + 1)
        assert [s for s, _ in found["loss/by_step"]] == list(numbers)
        assert [v for _, v in found["loss/by_step"]] == pytest.approx([r["loss"] for r in records], rel=1e-6)
        assert [v for _, v in found["lr/by_step"]] == pytest.approx([r["lr"] for r in records], rel=1e-6)
        assert [v for _, v in found["grad_norm/by_step"]] == pytest.approx([r["grad_norm"] for r in records],
                                                                           rel=1e-6)
        assert len(found["tokens_per_second/by_step"]) == step.num_steps
        tokens = [s for s, _ in found["loss/by_family_tokens"]]
        assert tokens == [tokens_before + k * step.batch_tokens for k in numbers]
        gflops = [s for s, _ in found["loss/by_family_gflops"]]
        assert gflops == sorted(gflops) and gflops[-1] == (flops_before + step.flops) // 10**9
        assert [v for _, v in found["loss/by_family_tokens"]] == [v for _, v in found["loss/by_step"]]
        curve = read_evaluations(run_dir / "steps" / step.id / "metrics.jsonl")
        assert [(s, pytest.approx(v, rel=1e-6)) for s, v in curve] == found["heldout_loss/by_step"]
        assert found["heldout_loss/by_family_tokens"][0][0] == tokens_before  # step 0: where the previous ended
        tokens_before, flops_before = tokens_before + step.tokens, flops_before + step.flops
    assert tokens_before == sum(s.tokens for s in steps)


def test_applying_again_skips_every_step(reference: Applied) -> None:
    assert reference.returncode == 0, reference.output[-4000:]
    before = (reference.run_dir / "state.json").read_bytes()
    again = apply(reference.run_dir)
    assert again.returncode == 0, again.output[-4000:]
    plan = plan_of(reference.run_dir)
    for index, step in enumerate(plan.steps, start=1):
        assert f"[{index}/{len(plan.steps)}] {step.id}: done, skipped" in again.output
    assert "started (" not in again.output
    assert (reference.run_dir / "state.json").read_bytes() == before
    assert again.seconds < 60


# --- the same family, killed at every hard point ------------------------------------------------

@dataclass
class Crashed:
    applies: dict[str, Applied]
    """Each apply by what it was killed at: promote, expand, stage; then finish."""
    left: dict[str, list[str]]
    """What each killed apply left in the folder where it died."""


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Crashed:
    """One run directory through four applies, each but the last killed."""
    run_dir = tmp_path_factory.mktemp("apply") / "crashed"
    out = Crashed(applies={}, left={})

    def names(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    try:
        # 1. train-xs has trained; apply dies with its final checkpoint renamed to .xs.moving, no sidecar yet
        out.applies["promote"] = apply(run_dir, failpoints="promote-moved")
        out.left["promote"] = names(run_dir / "members")
        # 2. train-xs is adopted; apply dies with about half of expand-xs-s's tensors written
        out.applies["expand"] = apply(run_dir, failpoints="expand-midway")
        out.left["expand"] = names(run_dir / "expansions")
        out.left["expand-tmp"] = [f"{p.name}:{p.stat().st_size}" for t in (run_dir / "expansions").glob(".*.tmp-*")
                                  for p in sorted(t.iterdir())]
        # what a kill during train-m's first periodic save would leave: a checkpoint folder, no complete save
        torn = run_dir / "steps" / "train-m" / "dump" / "checkpoint" / "step-3"
        torn.mkdir(parents=True)
        (torn / "__0_0.distcp").write_bytes(b"PK\x03\x04")
        # 3. SIGKILL of apply's process group while train-l trains, past its first periodic checkpoint
        out.applies["stage"] = apply_killed_at(run_dir, "train-l", 4)
        out.left["stage"] = names(run_dir / "steps" / "train-l" / "dump" / "checkpoint")
        # 4. to the end
        out.applies["finish"] = apply(run_dir)
        return out
    finally:
        kill_stage_workers(run_dir)


def test_a_kill_between_the_renames_of_a_member_is_adopted(crashed: Crashed) -> None:
    killed = crashed.applies["promote"]
    assert killed.returncode == KILLED, killed.output[-4000:]
    assert "train-xs: trained" not in killed.output
    assert crashed.left["promote"] == [".xs.moving"]
    nxt = crashed.applies["expand"]
    assert "[1/7] train-xs: found complete, adopted" in nxt.output
    xs = nxt.state["steps"]["train-xs"]
    assert xs["status"] == "completed" and xs["attempts"] == 1
    metrics, step = xs["metrics"], plan_of(nxt.run_dir).step("train-xs")
    assert metrics["tokens"] == step.tokens and metrics["flops"] == step.flops
    assert metrics["wall_seconds"] > 0  # the training's wall time survives the crash
    assert verify_sidecar(nxt.run_dir / "members" / "xs", kind="member") == []


def test_a_kill_in_the_middle_of_an_expansion_leaves_only_a_temporary_folder(crashed: Crashed) -> None:
    killed = crashed.applies["expand"]
    assert killed.returncode == KILLED, killed.output[-4000:]
    assert "expand-xs-s: growing xs -> s" in killed.output and "expand-xs-s: wrote" not in killed.output
    left = crashed.left["expand"]
    # never a half-written expand-xs-s: its temporary folder, and the grown moments (xs -> s carries the optimizer),
    # written first, waiting to be moved inside it
    assert len(left) == 2 and left[0] == ".expand-xs-s.moments" and left[1].startswith(".expand-xs-s.tmp-"), left
    (data,) = crashed.left["expand-tmp"]  # some tensors written; no .metadata, no sidecar
    assert data.startswith("__0_0.distcp:") and int(data.split(":")[1]) > 0, data
    assert killed.status("expand-xs-s") == "running"
    after = crashed.applies["stage"]
    assert "[2/7] expand-xs-s: wrote" in after.output  # grown again; the temporary folder removed
    assert sorted(p.name for p in (after.run_dir / "expansions").iterdir()) == ["expand-m-l", "expand-s-m",
                                                                               "expand-xs-s"]
    assert after.state["steps"]["expand-xs-s"]["attempts"] == 2


def test_a_stage_whose_first_checkpoint_was_torn_starts_from_its_grown_weights(
        crashed: Crashed) -> None:
    run_dir = crashed.applies["finish"].run_dir
    sections = stage_sections(run_dir / "steps" / "train-m" / "stdout.log")
    assert len(sections) == 1
    loaded = {line.split(" - ")[-1] for line in sections[0].splitlines() if "Loading the checkpoint from" in line}
    assert loaded == {f"Loading the checkpoint from {(run_dir / 'expansions' / 'expand-s-m').resolve()}."}


def test_a_kill_mid_stage_resumes_from_the_newest_checkpoint(crashed: Crashed) -> None:
    killed = crashed.applies["stage"]
    assert killed.returncode == KILLED, killed.output[-4000:]
    assert killed.status("train-l") == "running"
    saved = crashed.left["stage"]
    assert "step-3" in saved, saved
    finish = crashed.applies["finish"]
    assert finish.returncode == 0, finish.output[-4000:]
    # the kill takes the workers with it (each asks the kernel to kill it with its torchrun); should one
    # survive anyway (another OS, a race), the next apply stops it before it starts: none is left
    assert stage_workers(finish.run_dir) == []
    run_dir = finish.run_dir
    sections = stage_sections(run_dir / "steps" / "train-l" / "stdout.log")
    assert len(sections) == 2
    resumed = {line.split(" - ")[-1] for line in sections[1].splitlines() if "Loading the checkpoint from" in line}
    assert len(resumed) == 1, resumed  # the same on both ranks
    loaded = resumed.pop()
    assert f"{(run_dir / 'steps' / 'train-l' / 'dump' / 'checkpoint').resolve()}/step-" in loaded, loaded
    step = int(loaded.rsplit("step-", 1)[1].rstrip("."))
    assert step % 3 == 0 and 3 <= step < 13
    assert f"Training starts at step {step + 1}" in sections[1]
    # the steps trained twice (before the kill and after the resume) have bitwise the same loss
    losses: dict[int, set[float]] = {}
    for line in (run_dir / "steps" / "train-l" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") is None:  # a training record, not a held-out evaluation's
            losses.setdefault(record["step"], set()).add(record["loss"])
    assert sorted(losses) == list(range(1, 14)) and all(len(v) == 1 for v in losses.values()), losses
    state = finish.state
    assert all(v["status"] == "completed" for k, v in state["steps"].items() if not k.startswith("baseline-"))
    assert state["steps"]["train-l"]["attempts"] == 2
    # its TensorBoard run: the same folder, an event file from each apply, every step once
    folder = run_dir / "tensorboard" / "train-l"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2
    found = tensorboard_scalars(folder)
    for axis in ("by_step", "by_family_tokens", "by_family_gflops"):
        xs = [s for s, _ in found[f"loss/{axis}"]]
        assert len(xs) == 13 and xs == sorted(set(xs)), (axis, xs)  # strictly increasing: no step twice
    assert [s for s, _ in found["heldout_loss/by_step"]] == list(plan_of(run_dir).step("train-l").eval.steps(13))
    assert [v for _, v in found["loss/by_step"]] == pytest.approx([next(iter(losses[k])) for k in range(1, 14)],
                                                                  rel=1e-6)
    metrics = state["steps"]["train-l"]["metrics"]
    planned = plan_of(run_dir).step("train-l")
    assert (metrics["steps"], metrics["tokens"], metrics["flops"]) == (13, planned.tokens, planned.flops)
    assert metrics["wall_seconds"] > 0


def test_the_killed_run_ends_with_the_reference_members(crashed: Crashed, reference: Applied,
                                                        reference_losses: dict[str, float]) -> None:
    finish = crashed.applies["finish"]
    assert finish.returncode == 0, finish.output[-4000:]
    for member in ("xs", "s", "m", "l"):
        assert verify_sidecar(finish.run_dir / "members" / member, kind="member") == []
    # xs's moments were still in its dump folder when apply died between the renames: the adoption moved them
    assert (finish.run_dir / "members" / "xs" / "optimizer" / ".metadata").is_file()
    losses = heldout_losses(finish.run_dir)
    # resuming restores the weights, AdamW's moments, the schedule and each rank's place in the data:
    # the killed run's members are the reference's (bitwise on torch 2.13 CPU, eager)
    assert losses == pytest.approx(reference_losses, rel=1e-5), (losses, reference_losses)
    # and every stage's held-out curve is the reference's: each evaluation once, the resumed ones included
    for step in train_steps(plan_of(finish.run_dir)):
        curve, expected = (read_evaluations(run / "steps" / step.id / "metrics.jsonl")
                           for run in (finish.run_dir, reference.run_dir))
        assert [s for s, _ in curve] == [s for s, _ in expected]
        assert [v for _, v in curve] == pytest.approx([v for _, v in expected], rel=1e-5)
