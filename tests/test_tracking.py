"""familyc.execute.tracking without training: the --track option, its refusals, the family axes' offsets, and
a stage's TensorBoard run (and W&B's, offline, where wandb is installed) fed from a metrics.jsonl written here
as a stage would write it, resumed and caught up without a duplicated step. The real runs' event files are
checked in tests/test_apply.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from familyc.cli import app
from familyc.compiler import compile_spec
from familyc.errors import FamilycError, UsageError
from familyc.execute import tracking
from familyc.plan.ir import Plan
from familyc.plan.steps import TrainStep

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "tests" / "fixtures" / "specs-apply" / "family.yaml"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_spec(SPEC)


def test_track_names_trackers_separated_by_commas_or_none() -> None:
    assert tracking.parse_track("tensorboard") == ("tensorboard",)
    assert tracking.parse_track("tensorboard, wandb,tensorboard") == ("tensorboard", "wandb")
    assert tracking.parse_track("none") == tracking.parse_track("") == ()
    with pytest.raises(UsageError, match="unknown tracker 'mlflow'"):
        tracking.parse_track("tensorboard,mlflow")


def test_wandb_asked_for_but_not_installed_is_refused_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch", reason="familyc apply needs the train extra")
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    with pytest.raises(FamilycError, match="--track wandb needs the wandb package") as info:
        tracking.require(("tensorboard", "wandb"))
    assert "WANDB_MODE=offline" in info.value.hint and ".[track]" in info.value.hint
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["apply", str(SPEC), "--yes", "--run-dir", str(run_dir), "--track", "wandb"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "error: --track wandb needs the wandb package, which is not installed" in result.output
    assert "Traceback" not in result.output and not run_dir.exists()
    result = CliRunner().invoke(app, ["apply", str(SPEC), "--yes", "--run-dir", str(run_dir), "--track", "csv"])
    assert result.exit_code == 2 and "unknown tracker 'csv'" in result.output and not run_dir.exists()


def test_the_family_axes_continue_the_progressive_stages_in_plan_order(plan: Plan) -> None:
    tokens = flops = 0
    for step in plan.train_steps():
        axes = tracking.axes_of(plan, step)
        assert (axes.tokens_before, axes.flops_before) == (tokens, flops)
        end = axes.at(step.num_steps)
        tokens, flops = tokens + step.tokens, flops + step.flops
        assert end == {"by_step": step.num_steps, "by_family_tokens": tokens, "by_family_gflops": flops // 10**9}
    for baseline in plan.baseline.members:  # an independent member starts from scratch: its axes at 0
        axes = tracking.axes_of(plan, baseline.train)
        assert (axes.tokens_before, axes.flops_before) == (0, 0)


# --- a stage's run, fed from its metrics -----------------------------------------------------------

def records(step: TrainStep, first: int, last: int, *, evals: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """What a stage's rank 0 appends for steps first..last (a resumed stage starts after its checkpoint)."""
    out: list[dict[str, Any]] = []
    for k in range(first, last + 1):
        if k in evals and k == 0:
            out.append({"kind": "eval", "step": 0, "heldout_loss": 7.5})
            continue
        out.append({"step": k, "loss": 8.0 - k / 10, "lr": 1e-3 * k, "grad_norm": 1.5, "tps": 100.0,
                    "world_size": 2, "mfu": None, "elapsed_s": 1.0})
        if k in evals:
            out.append({"kind": "eval", "step": k, "heldout_loss": 7.5 - k / 10})
    return out


def append(path: Path, lines: list[dict[str, Any]], *, torn: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in lines) + ('{"step": 9, "lo' if torn else ""))


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_resumed_stage_continues_its_one_run_without_a_duplicated_step(plan: Plan, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the TensorBoard writer is torch's")
    pytest.importorskip("tensorboard")
    step = list(plan.train_steps())[1]  # train-s: its family axes start after train-xs
    metrics = tmp_path / "steps" / step.id / "metrics.jsonl"
    folder = tmp_path / "tensorboard" / step.id
    tracker = tracking.Tracker(plan, tmp_path, ("tensorboard",))
    # the first attempt logs steps 0..2 (torn at the end: killed), then a resume from a checkpoint at step 1
    # logs 2 again and goes on; the second attempt's tracking is a new one (a new apply)
    append(metrics, records(step, 0, 1, evals=(0,)))
    with tracker.stage(step) as tracked:
        append(metrics, records(step, 2, 2), torn=True)
        tracked.sync()
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    with tracking.Tracker(plan, tmp_path, ("tensorboard",)).stage(step) as tracked:  # its first line joins the torn one
        append(metrics, records(step, 2, step.num_steps, evals=(step.num_steps,)))
        tracked.sync()
    tracker.catch_up(step)  # nothing missing: no new file
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2  # one run: the same folder
    found = scalars(folder)
    axes = tracking.axes_of(plan, step)
    train = list(range(1, step.num_steps + 1))
    assert [s for s, _ in found["loss/by_step"]] == train
    assert [s for s, _ in found["loss/by_family_tokens"]] == [axes.at(k)["by_family_tokens"] for k in train]
    assert found["loss/by_family_tokens"][0][0] == plan.step("train-xs").tokens + step.batch_tokens
    assert [s for s, _ in found["lr/by_family_gflops"]] == [axes.at(k)["by_family_gflops"] for k in train]
    assert [v for _, v in found["tokens_per_second/by_step"]] == [200.0] * len(train)  # the cluster's
    assert [s for s, _ in found["heldout_loss/by_step"]] == [0, step.num_steps]
    assert "mfu/by_step" not in found  # unknown on a CPU
    assert found["loss/by_step"] == [(k, pytest.approx(8.0 - k / 10)) for k in train]


def test_a_finished_stage_is_caught_up_by_the_next_apply(plan: Plan, tmp_path: Path) -> None:
    """A run trained with --track none (or before tracking) gets its TensorBoard runs when applied again."""
    pytest.importorskip("torch", reason="the TensorBoard writer is torch's")
    step = plan.baseline.members[0].train
    append(tmp_path / "steps" / step.id / "metrics.jsonl", records(step, 1, step.num_steps))
    tracking.Tracker(plan, tmp_path, ()).catch_up(step)
    assert not (tmp_path / "tensorboard").exists()
    tracking.Tracker(plan, tmp_path, ("tensorboard",)).catch_up(step)
    found = scalars(tmp_path / "tensorboard" / step.id)
    assert [s for s, _ in found["loss/by_family_tokens"]] == [k * step.batch_tokens
                                                              for k in range(1, step.num_steps + 1)]


def test_wandb_offline_writes_one_run_per_stage_under_the_run_directory(
        plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed (pip install -e '.[track]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    step = list(plan.train_steps())[0]
    metrics = tmp_path / "steps" / step.id / "metrics.jsonl"
    append(metrics, records(step, 0, 2, evals=(0,)))
    with tracking.Tracker(plan, tmp_path, ("wandb",)).stage(step) as tracked:
        tracked.sync()
    written = tmp_path / "steps" / step.id / "wandb.json"
    assert json.loads(written.read_text()) == {"eval": 0, "train": 2}
    (offline,) = (tmp_path / "wandb").glob(f"offline-run-*-{plan.plan_id[:8]}-{step.id}")
    assert any(p.suffix == ".wandb" and p.stat().st_size > 0 for p in offline.iterdir())
    tracking.Tracker(plan, tmp_path, ("wandb",)).catch_up(step)  # nothing new: no second W&B run
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
