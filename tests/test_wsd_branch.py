"""lr.schedule.grow_from: stable — the family-wide warmup-stable-decay.

A member that is grown from trains as two steps: its warmup and stable phase (train-<m>), which the next growth
reads, and its decay branch (decay-<m>), which continues those weights, AdamW state and data position over the
last decay_fraction of the member's steps and is the member released. Checked at plan time (the split, the
costs, the references between steps, the refusal without decay: wsd, the diff), against torchtitan's own
scheduler (the two phases are step for step the whole stage's LR), and in one `familyc apply` of
tests/fixtures/specs-apply/branch.yaml (xs: 5 stable + 3 decay steps, s grown from the stable weights).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import tiny_data

from familyc.compiler import compile_spec
from familyc.errors import SpecError
from familyc.execute.rundir import RunDir
from familyc.plan.diff import diff_plans
from familyc.plan.ir import Plan
from familyc.plan.steps import TrainStep
from familyc.plan.view import plan_document
from familyc.render import text as render_text

WriteSpec = Callable[..., Path]
BRANCH = "tests/fixtures/specs-apply/branch.yaml"


def wsd(data: dict, *, grow_from: str) -> dict:
    data["lr"]["schedule"] = {"warmup_fraction": 0.1, "decay": "wsd", "decay_fraction": 0.2, "min_lr_factor": 0.1,
                              "grow_from": grow_from}
    return data


@pytest.fixture
def plans(write_spec: WriteSpec) -> tuple[Plan, Plan]:
    """specs/tiny.yaml on a WSD schedule: growing from final weights, and from the stable phase."""
    return (compile_spec(write_spec(wsd(tiny_data(), grow_from="final"), "final.yaml")),
            compile_spec(write_spec(wsd(tiny_data(), grow_from="stable"), "stable.yaml")))


def test_every_member_that_is_grown_from_branches_into_its_stable_phase_and_its_decay(plans: tuple[Plan, Plan]) -> None:
    final, stable = plans
    assert [s.id for s in stable.steps] == [
        "train-xs", "decay-xs", "expand-xs-s", "train-s", "decay-s", "expand-s-m", "train-m", "decay-m",
        "expand-m-l", "train-l"]
    assert stable.structure_problems() == []
    for member in ("xs", "s", "m"):
        whole = final.train_step(member)
        phase, branch = stable.stages_of(member)
        assert (phase.phase, branch.phase, branch.continues, branch.init_from) == ("stable", "decay", phase.id, None)
        assert branch.num_steps == round(whole.num_steps * 0.2)
        assert phase.num_steps + branch.num_steps == whole.num_steps
        assert phase.tokens + branch.tokens == whole.tokens and phase.flops + branch.flops == whole.flops
        assert phase.tokens_requested + branch.tokens_requested == whole.tokens_requested
        assert (phase.schedule.warmup_steps, phase.schedule.decay_ratio) == (whole.schedule.warmup_steps, 0.0)
        assert (branch.schedule.warmup_steps, branch.schedule.decay_ratio) == (0, 1.0)
        assert phase.max_lr == branch.max_lr == whole.max_lr and phase.init_from == whole.init_from
        assert stable.train_step(member) is branch and stable.growth_source(member) is phase  # released / grown
        assert stable.saves_optimizer(phase) and not stable.saves_optimizer(branch)
        assert stable.carries_optimizer(branch) and not stable.carries_optimizer(phase)
        assert stable.start_of(branch) is phase and stable.continued_by(phase) is branch
        assert phase.eval is not None and branch.eval is not None and whole.eval is not None
        assert phase.eval.interval == branch.eval.interval == whole.eval.interval  # the twin's points, in two parts
    (last,) = stable.stages_of("l")  # nothing grows from l: one whole stage, after m's decay branch in the data
    assert replace(last, data_continues_from="train-m") == final.train_step("l")
    # the data runs on through the branch: each stage starts where the one before it in the plan stopped
    trains = list(stable.train_steps())
    assert [t.data_continues_from for t in trains] == [None, *(t.id for t in trains[:-1])]
    # the decay branches are the progressive family's compute; the independent family is the same WSD shape
    assert stable.totals.progressive_flops == final.totals.progressive_flops
    assert stable.totals.savings_fraction == final.totals.savings_fraction
    assert [b.train for b in stable.baseline.members] == [b.train for b in final.baseline.members]
    assert all(b.train.phase == "whole" and b.train.schedule.decay_ratio == 0.2 for b in stable.baseline.members)
    run = RunDir(Path("/runs/r"))
    assert run.weights(stable, stable.step("train-s")) == Path("/runs/r/stable/s")
    assert run.weights(stable, stable.step("decay-s")) == Path("/runs/r/members/s")


def test_the_plan_and_its_diff_show_the_branches(plans: tuple[Plan, Plan]) -> None:
    final, stable = plans
    text = render_text(plan_document(stable))
    assert "family-wide warmup-stable-decay" in text and "xs 34 + 8" in text
    assert "family-wide" not in render_text(plan_document(final))
    d = diff_plans(final, stable)
    changes = {c.id: (c.change, c.details) for c in d.steps}
    assert changes["decay-m"][0] == "added" and changes["train-m"][0] == "changed"
    assert "phase whole -> stable" in changes["train-m"][1] and "LR schedule" in changes["train-m"][1]
    assert "train-l" not in changes


def test_growing_from_the_stable_phase_needs_a_wsd_schedule(write_spec: WriteSpec) -> None:
    data = tiny_data()
    data["lr"]["schedule"] = {"warmup_fraction": 0.1, "decay": "cosine", "grow_from": "stable"}
    with pytest.raises(SpecError) as info:
        compile_spec(write_spec(data))
    (problem,) = info.value.diagnostics
    assert problem.path == "$.lr.schedule.grow_from"
    assert "needs decay: wsd, not cosine" in problem.message and "decay: wsd" in problem.hint


def test_a_stage_too_short_to_branch_grows_its_final_weights_with_a_warning(write_spec: WriteSpec) -> None:
    data = wsd(tiny_data(), grow_from="stable")
    data["lr"]["schedule"]["decay_fraction"] = 0.01  # round(42 x 0.01) = 0 decay steps for xs
    plan = compile_spec(write_spec(data))
    assert [s.phase for s in plan.stages_of("xs")] == ["whole"]
    assert any("train-xs: 42 steps leave no decay phase" in w for w in plan.warnings)


# --- against torchtitan's scheduler ---------------------------------------------------------------

def _factors(step: TrainStep, plan: Plan) -> list[float]:
    """The LR factor of each of the step's optimizer steps, from torchtitan 0.2.2's scheduler built from the job
    familyc writes (the trainer steps the scheduler after every optimizer step: step k uses lr_lambda(k-1))."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchtitan.components.lr_scheduler")
    from torchtitan.components.lr_scheduler import build_lr_schedulers
    from torchtitan.config import LRScheduler

    from familyc.backend.job import job_config

    job = job_config(step, plan.member(step.member), plan, dump_folder="/d", dataset_path="/d", tokenizer_path="/t",
                     flavor="f", compile=False, init_from=None, checkpoint_interval=10, seed=0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedulers = build_lr_schedulers([optimizer], LRScheduler(**job["lr_scheduler"]), step.num_steps)  # type: ignore[arg-type]
    (scheduler,) = schedulers
    return [scheduler.lr_lambdas[0](k) for k in range(step.num_steps)]


@pytest.mark.parametrize("decay_fraction", [0.2, 0.35, 0.5])
def test_stable_phase_then_decay_branch_is_the_whole_stages_schedule_step_for_step(
        write_spec: WriteSpec, decay_fraction: float) -> None:
    final_data, stable_data = (wsd(tiny_data(), grow_from=g) for g in ("final", "stable"))
    for data in (final_data, stable_data):
        data["lr"]["schedule"].update(decay_fraction=decay_fraction, wsd_decay="cosine")
    final, stable = compile_spec(write_spec(final_data, "f.yaml")), compile_spec(write_spec(stable_data, "s.yaml"))
    for member in ("xs", "s", "m"):
        whole = _factors(final.train_step(member), final)
        phase, branch = stable.stages_of(member)
        assert _factors(phase, stable) + _factors(branch, stable) == pytest.approx(whole, abs=1e-12), member
        assert whole[-1] < 1.0 and max(_factors(phase, stable)) == 1.0


# --- one apply ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pytest.importorskip("torchtitan.train", reason="torchtitan (and triton, which it imports) is not installed")
    pytest.importorskip("tokenizers", reason="tokenizers is not installed")
    from test_apply import apply, kill_stage_workers

    run_dir = tmp_path_factory.mktemp("branch") / "run"
    try:
        return apply(run_dir, spec=BRANCH)
    finally:
        kill_stage_workers(run_dir)


def test_apply_trains_the_stable_phase_branches_the_member_off_it_and_grows_from_it(applied) -> None:  # type: ignore[no-untyped-def]
    """train-xs keeps its weights, moments and data position in stable/xs; decay-xs starts from all three
    (its held-out step 0 is train-xs's last point, its first LR the peak, its documents the next ones) and is
    members/xs; expand-xs-s grows stable/xs, so train-s starts at train-xs's last point, not at decay-xs's."""
    from test_apply import plan_of

    from familyc.backend.keys import model_keys
    from familyc.backend.moments import CARRIED_KIND
    from familyc.checkpoint.sidecar import verify_sidecar
    from familyc.execute.metrics import read_evaluations, read_records

    assert applied.returncode == 0, applied.output[-4000:]
    run_dir, plan = applied.run_dir, plan_of(applied.run_dir)
    assert all(applied.status(s.id) == "completed" for s in plan.steps)
    stable, released = run_dir / "stable" / "xs", run_dir / "members" / "xs"
    assert verify_sidecar(stable, kind="member") == [] and verify_sidecar(released, kind="member") == []
    assert (stable / "optimizer" / ".metadata").is_file() and not (released / "optimizer").exists()

    metrics = {s.id: run_dir / "steps" / s.id / "metrics.jsonl" for s in plan.train_steps()}
    curves = {k: read_evaluations(v) for k, v in metrics.items()}
    assert curves["decay-xs"][0][1] == pytest.approx(curves["train-xs"][-1][1], abs=1e-5)
    assert curves["train-s"][0][1] == pytest.approx(curves["train-xs"][-1][1], abs=1e-5)  # grown from stable
    assert curves["decay-xs"][-1][1] < curves["train-xs"][-1][1]  # the decay is what a released member gets

    (carried,) = read_records(metrics["decay-xs"], kind=CARRIED_KIND)
    assert carried["tensors"] == 3 * len(model_keys(plan.shape("xs")))
    lrs = [r["lr"] for r in read_records(metrics["train-xs"]) + read_records(metrics["decay-xs"])]
    peak = plan.train_step("xs").max_lr
    # warmup 1; stable to step N - D = 5; then linear decay 1 - k/3 towards 0.1 x peak (tiny-branch: N 8, D 3)
    expected = [1, 1, 1, 1, 1, 1, *(0.1 + 0.9 * (1 - k / 3) for k in (1, 2))]
    assert lrs == pytest.approx([peak * f for f in expected], rel=1e-9)
    assert all(lr == pytest.approx(lrs[5], rel=1e-9) for lr in carried["group_lrs"])

    positions = {name: json.loads((run_dir / name / "data_position.json").read_text())["sample_idx"]
                 for name in ("stable/xs", "members/xs", "members/s")}
    log = (run_dir / "steps" / "decay-xs" / "stdout.log").read_text()
    assert all(f"data starts at document {start} of rank {rank}'s shard" in log
               for rank, start in enumerate(positions["stable/xs"]))
    assert all(a < b < c for a, b, c in zip(*positions.values(), strict=True))


def test_the_report_measures_a_growth_against_the_weights_it_grew_from(applied) -> None:  # type: ignore[no-untyped-def]
    from familyc.report.collect import collect

    assert applied.returncode == 0, applied.output[-4000:]
    report = collect(applied.run_dir, max_tokens=2048)
    (growth,) = report.growth
    xs = next(m for m in report.members if m.name == "xs")
    assert growth.loss_before is not None and growth.loss_after is not None and xs.heldout_loss is not None
    assert growth.loss_after == pytest.approx(growth.loss_before, abs=1e-4)  # exact growth of the stable weights
    assert xs.heldout_loss < growth.loss_before  # the released xs is its decay branch
    (start,) = report.head_starts
    assert start.step == "train-s" and math.isfinite(start.loss_at_start)


def test_a_model_card_counts_the_tokens_its_weights_saw(applied) -> None:  # type: ignore[no-untyped-def]
    """xs saw its stable phase and its decay branch (5 + 3 steps); s grew from the stable weights, so its lineage
    is its own 4 steps and xs's 5, not xs's decay branch."""
    from familyc.execute.rundir import open_existing
    from familyc.report.export import card_facts

    assert applied.returncode == 0, applied.output[-4000:]
    run, plan, state = open_existing(applied.run_dir)
    xs, s = (card_facts(plan, run, state, plan.train_step(m)) for m in ("xs", "s"))
    assert (xs.step, xs.tokens, xs.lineage_tokens) == ("decay-xs", 8 * 2048, 8 * 2048)
    assert (s.step, s.tokens, s.lineage, s.lineage_tokens) == ("train-s", 4 * 2048, ("xs",), (4 + 5) * 2048)
