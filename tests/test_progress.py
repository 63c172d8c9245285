"""The ETA model of `familyc apply`'s progress view and the start-up a run measures: the plan's start-up until a
stage has a steady rate, then its rate without the first step's launch and compile; the family's ETA trusts a
measured speed by the share of the family's training it covers. Torch-free, on a fake clock."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from familyc.compiler import compile_spec
from familyc.cost.accelerators import accelerator
from familyc.cost.startup import startup
from familyc.execute.metrics import stage_startup, steady_step_seconds
from familyc.execute.progress import TRACE_ENV, Progress, StageProgress, timeline


def quiet() -> Console:
    return Console(file=io.StringIO())


def stage(**kw: object) -> StageProgress:
    values: dict[str, object] = dict(index=1, total=1, step_id="train-x", num_steps=100, predicted_seconds=60.0,
                                     startup_seconds=30.0, finish_seconds=5.0, started=0.0)
    values.update(kw)
    return StageProgress(**values)  # type: ignore[arg-type]


def run_steps(s: StageProgress, *, launch: float, per_step: float, upto: int, log_every: int = 5) -> float:
    """Log steps 1, log_every, 2 log_every ... up to `upto` at a steady rate after `launch` (step 1 included in
    it, as torch.compile makes it); the clock at the last one."""
    now = launch
    s.logged(1, now)
    for step in range(log_every, upto + 1, log_every):
        now = launch + (step - 1) * per_step
        s.logged(step, now)
    return now


def test_before_a_rate_the_eta_is_the_plans_prediction_less_the_time_elapsed() -> None:
    s = stage()
    assert s.eta(now=10.0) == pytest.approx(50.0)
    s.logged(1, 25.0)  # one logged step: no rate yet (it holds the launch and torch.compile)
    assert s.seconds_per_step() is None and s.eta(now=25.0) == pytest.approx(35.0)
    assert s.eta(now=200.0) == pytest.approx(5.0)  # past the prediction: at least the finish is left


def test_the_steady_rate_leaves_out_the_first_steps_launch_and_compile() -> None:
    s = stage()
    now = run_steps(s, launch=25.0, per_step=0.3, upto=10)
    assert s.seconds_per_step() == pytest.approx(0.3)
    truth = 25.0 + 99 * 0.3 + 5.0 - now  # the last step at the steady rate, then the finish
    assert s.eta(now=now) == pytest.approx(truth)
    assert s.eta(now=now + 1.0) == pytest.approx(truth - 1.0)  # the clock runs between two records


def test_a_small_first_stage_barely_moves_the_family_eta_a_large_one_sets_it() -> None:
    progress = Progress(quiet())
    small = stage(num_steps=10, predicted_seconds=33.0, startup_seconds=30.0)  # 3 s of training predicted
    progress.stage_started(small, remaining_startup=60.0, remaining_train=297.0)  # of 300 s in the family
    run_steps(small, launch=25.0, per_step=0.9, upto=10)  # 3x slower than predicted
    progress.stage_finished(actual_seconds=40.0, predicted_seconds=33.0, summary="done")
    assert 1.0 < progress.speed_ratio() < 1.03  # 1% of the family's training measured: trusted 1%
    large = stage(step_id="train-l", num_steps=100, predicted_seconds=330.0, startup_seconds=30.0)
    progress.stage_started(large, remaining_startup=0.0, remaining_train=0.0)
    run_steps(large, launch=25.0, per_step=6.0, upto=100)  # the largest: twice its prediction, to the end
    assert progress.speed_ratio() == pytest.approx((0.9 * 10 + 6.0 * 100) / 303.0, rel=0.02)


def test_the_family_eta_adds_the_remaining_steps_start_up_unscaled() -> None:
    progress = Progress(quiet())
    s = stage()
    progress.stage_started(s, remaining_startup=64.0, remaining_train=100.0)
    assert progress.family_eta(now=10.0) == pytest.approx(50.0 + 64.0 + 100.0)


def test_the_trace_has_every_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    progress = Progress(quiet())
    s = stage(started=time.monotonic())
    progress.stage_started(s, remaining_startup=0.0, remaining_train=0.0)
    for step in (1, 5, 10):
        progress.stage_progress(step=step, loss=1.0, tokens_per_second=None)
    progress.close()
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 5, 10]
    assert all(line["eta"] is not None and line["family_eta"] is not None for line in lines)


def test_the_run_measures_the_start_up_the_plan_predicts() -> None:
    records = [{"step": 1, "end_to_end_s": 9.0}, *({"step": k, "end_to_end_s": 0.3} for k in range(5, 45, 5))]
    assert steady_step_seconds(records) == pytest.approx(0.3)
    s = stage(num_steps=42)
    run_steps(s, launch=25.3, per_step=0.3, upto=40)
    wall = 25.3 + 41 * 0.3 + 6.0  # the launch (with step 1), the other 41 steps, a 6 s finish
    measured = stage_startup(records, timeline(s, wall)["timeline"], num_steps=42)
    assert measured == {"launch_seconds": pytest.approx(25.0), "finish_seconds": pytest.approx(6.0),
                        "steady_step_seconds": 0.3}
    resumed = {**timeline(s, wall)["timeline"], "first_step": 55}
    assert stage_startup(records, resumed, num_steps=42) is None  # a resumed attempt logs no first step


def test_a_cpu_plan_includes_the_measured_start_up_and_a_gpu_plan_says_it_has_none(in_repo: Path) -> None:
    tiny = compile_spec(Path("specs/tiny.yaml"))
    measured = startup("cpu")
    assert measured is not None and tiny.cluster.startup is not None
    assert tiny.cluster.startup.seconds == pytest.approx(measured.seconds(compile=True))
    assert (tiny.cluster.startup.step_seconds, tiny.cluster.startup.eval_seconds) == (measured.step_seconds,
                                                                                      measured.eval_seconds)
    assert measured.step_seconds > 0 and measured.eval_seconds > 0
    peak = accelerator("cpu").peak("fp32")
    for step in tiny.train_steps():
        assert step.startup_seconds == pytest.approx(measured.seconds(compile=True), abs=0.05)
        assert step.eval is not None
        # the stage's time: start-up + every step's and evaluation's fixed cost + all FLOPs at the assumed MFU
        flops = (step.flops + step.eval.flops) / (step.devices * peak * step.mfu)
        fixed = step.num_steps * measured.step_seconds + step.eval.evaluations * measured.eval_seconds
        assert step.predicted_seconds == pytest.approx(measured.seconds(compile=True) + fixed + flops, abs=0.05)
    flagship = compile_spec(Path("specs/llama_1b_8b.yaml"))
    assert flagship.cluster.startup is None
    assert all(s.startup_seconds is None for s in flagship.train_steps())
