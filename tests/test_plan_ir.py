"""The plan IR answers its own questions (shapes, steps, baselines, lineage), and refuses a plan file whose
steps are not one walk or whose enumerated values are not familyc's, even with a recomputed plan_id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from familyc.cost.storage import stage_disk_bytes
from familyc.errors import PlanError
from familyc.plan import ir
from familyc.plan.steps import ExpandStep, TrainStep, evaluated_steps

TEXT = (REPO / "plans" / "tiny.plan.json").read_text()
PLAN = ir.loads(TEXT)


def test_every_step_in_execution_order_then_the_baseline() -> None:
    assert [s.id for s in PLAN.all_steps()] == [
        "train-xs", "expand-xs-s", "train-s", "expand-s-m", "train-m", "expand-m-l", "train-l",
        "baseline-xs", "baseline-s", "baseline-m", "baseline-l"]
    assert [s.id for s in PLAN.train_steps()] == ["train-xs", "train-s", "train-m", "train-l"]
    assert [s.id for s in PLAN.expand_steps()] == ["expand-xs-s", "expand-s-m", "expand-m-l"]


def test_a_members_train_steps_growth_and_lineage() -> None:
    assert PLAN.train_step("m").id == "train-m" and PLAN.train_step("m", baseline=True).id == "baseline-m"
    assert PLAN.is_baseline(PLAN.train_step("m", baseline=True)) and not PLAN.is_baseline(PLAN.train_step("m"))
    assert not any(PLAN.is_baseline(s) for s in PLAN.steps)
    grown = PLAN.growth_into("m")
    assert isinstance(grown, ExpandStep) and grown.source == "s" and PLAN.growth_into("xs") is None
    assert PLAN.lineage("l") == ("xs", "s", "m") and PLAN.lineage("xs") == ()
    with pytest.raises(KeyError, match="no progressive step for 'xl'"):
        PLAN.train_step("xl")


def test_a_members_shape_is_its_weights() -> None:
    m = PLAN.member("m")
    shape = PLAN.shape("m")
    assert (shape.dim, shape.n_layers, shape.n_heads, shape.n_kv_heads, shape.ffn_dim, shape.vocab_size) == (
        m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.ffn_dim, m.vocab_size)
    assert PLAN.disk_bytes(PLAN.train_step("m")) == stage_disk_bytes(m.params)


def edited(change: Any) -> str:
    """The tiny plan with `change(data)` applied and its plan_id recomputed (as a careful forger would)."""
    data = json.loads(TEXT)
    change(data)
    data["plan_id"] = ir.compute_plan_id(data)
    return json.dumps(data)


def test_the_compiler_plans_are_one_walk() -> None:
    for path in sorted((REPO / "plans").glob("*.plan.json")):
        assert ir.loads(path.read_text()).structure_problems() == [], path


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d["steps"][2].update(init_from="train-xs"),
     "train-s: init_from 'train-xs' is not an earlier ExpandStep"),
    (lambda d: d["steps"][2].update(data_continues_from="train-l"),
     "train-s: data_continues_from 'train-l' is not an earlier TrainStep"),
    (lambda d: d["steps"].insert(0, d["steps"].pop(1)), "expand-xs-s grows xs, which no earlier step trains"),
    (lambda d: d["steps"][2].update(id="train-xs"), "step id 'train-xs' is used twice"),
    (lambda d: d["steps"][0].update(member="xl"), "train-xs is about member 'xl', which the plan does not have"),
])
def test_a_plan_whose_steps_are_not_one_walk_is_refused(change: Any, problem: str) -> None:
    with pytest.raises(PlanError) as info:
        ir.loads(edited(change), source="forged.plan.json")
    assert info.value.message.startswith("forged.plan.json: not a plan familyc can run: ")
    assert problem in info.value.message


@pytest.mark.parametrize(("change", "where"), [
    (lambda d: d["steps"][1].update(exactness="nearly"), "forged.plan.json.steps[1].exactness: 'nearly' is not one of"),
    (lambda d: d["steps"][0].update(precision="fp8"), "forged.plan.json.steps[0].precision: 'fp8' is not one of"),
    (lambda d: d["cluster"].update(accelerator="tpu"), "forged.plan.json.cluster.accelerator: 'tpu' is not one of"),
    (lambda d: d["steps"][1].update(kind="grow"), "forged.plan.json.steps[1]: unknown step kind 'grow'"),
])
def test_an_enumerated_value_outside_familycs_is_refused(change: Any, where: str) -> None:
    with pytest.raises(PlanError, match="^" + where.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        ir.loads(edited(change), source="forged.plan.json")


def test_step_kinds_are_told_apart_on_load() -> None:
    assert isinstance(PLAN.step("train-s"), TrainStep) and isinstance(PLAN.step("expand-xs-s"), ExpandStep)
    assert ir.dumps(PLAN) == TEXT


def test_a_version_1_plan_is_still_read_with_every_member_at_the_architectures_eps() -> None:
    """Run directories made by familyc 0.1 (plan schema 1, no per-member norm eps) can still be reported on."""
    v1 = (REPO / "tests" / "fixtures" / "plans" / "tiny.v1.plan.json").read_text()
    old = ir.loads(v1, source="tiny.v1.plan.json")
    assert old.schema_version == 1 and old.plan_id == json.loads(v1)["plan_id"]
    assert {m.norm_eps for m in old.members} == {old.architecture.norm_eps}
    assert [m.name for m in old.members] == [m.name for m in PLAN.members]
    with pytest.raises(PlanError, match="does not match its content"):  # an edit is still caught
        ir.loads(v1.replace('"seed": 0', '"seed": 1', 1), source="tiny.v1.plan.json")


def test_a_version_2_plan_is_still_read_and_evaluates_nothing_during_training() -> None:
    """Plans of schema 2 (before held-out curves) load with no evaluation in any stage."""
    v2 = (REPO / "tests" / "fixtures" / "plans" / "tiny.v2.plan.json").read_text()
    old = ir.loads(v2, source="tiny.v2.plan.json")
    assert old.schema_version == 2 and old.plan_id == json.loads(v2)["plan_id"]
    assert all(s.eval is None for s in old.all_steps() if isinstance(s, TrainStep))
    assert old.totals.progressive_eval_flops == 0


def test_a_version_7_plan_is_still_read_with_no_fixed_cost_per_step() -> None:
    """Plans of schema 7 (cost model 3: a start-up, no fixed cost per step or evaluation) load as they were made."""
    v7 = (REPO / "tests" / "fixtures" / "plans" / "tiny.v7.plan.json").read_text()
    old = ir.loads(v7, source="tiny.v7.plan.json")
    assert old.schema_version == 7 and old.plan_id == json.loads(v7)["plan_id"]
    start = old.cluster.startup
    assert start is not None and start.step_seconds == start.eval_seconds == 0.0
    assert start.fixed_seconds(steps=100, evaluations=10) == start.seconds


def test_every_stage_evaluates_at_step_0_every_interval_and_its_last_step() -> None:
    """tiny.yaml: 4,096 held-out tokens (16 sequences of 256, 8 per device), auto interval (5% of the stage); the
    evaluations' FLOPs are a third of training's per token, counted apart."""
    for step in [*PLAN.train_steps(), *(b.train for b in PLAN.baseline.members)]:
        assert step.eval is not None
        assert step.eval.tokens == 4096 and step.eval.interval == max(1, int(0.05 * step.num_steps))
        points = step.eval.steps(step.num_steps)
        assert points[0] == 0 and points[-1] == step.num_steps and len(points) == step.eval.evaluations
        assert all(b - a <= step.eval.interval for a, b in zip(points, points[1:], strict=False))
        fpt = PLAN.member(step.member).flops_per_token
        assert step.eval.flops == step.eval.evaluations * fpt // 3 * 4096
    assert PLAN.totals.progressive_eval_flops == sum(s.eval.flops for s in PLAN.train_steps() if s.eval)
    assert PLAN.totals.progressive_flops == sum(s.flops for s in PLAN.train_steps())  # evaluation apart


@pytest.mark.parametrize(("steps", "interval", "expected"), [
    (10, 3, (0, 3, 6, 9, 10)), (10, 5, (0, 5, 10)), (1, 1, (0, 1)), (3, 7, (0, 3))])
def test_evaluated_steps(steps: int, interval: int, expected: tuple[int, ...]) -> None:
    assert evaluated_steps(steps, interval) == expected


def test_a_plan_of_an_unknown_version_is_refused() -> None:
    data = json.loads(TEXT)
    data["schema_version"] = 99
    with pytest.raises(PlanError, match="plan schema_version 99 is not 8"):
        ir.loads(json.dumps(data))


def test_an_old_run_resumes_with_its_version_1_plan_and_a_new_run_needs_the_current_version(tmp_path: Path) -> None:
    from familyc.execute.rundir import RunDir, open_run_dir
    from familyc.execute.state import RunState, StepState

    v1_text = (REPO / "tests" / "fixtures" / "plans" / "tiny.v1.plan.json").read_text()
    v1 = ir.loads(v1_text)
    with pytest.raises(PlanError, match="is of schema version 1; a new run starts from a plan of version 8"):
        open_run_dir(tmp_path / "new", v1)
    old = tmp_path / "old"  # as familyc 0.1 left it
    old.mkdir()
    (old / "plan.json").write_text(v1_text)
    RunState(path=RunDir(old).state_path, plan_id=v1.plan_id, family=v1.family.name, spec={},
             steps={s.id: StepState(kind=s.kind) for s in v1.all_steps()}, created_at="then").save()
    run, state = open_run_dir(old, v1)
    assert state.plan_id == v1.plan_id and (old / "plan.json").read_text() == v1_text  # untouched
    with pytest.raises(PlanError, match="made by plan"):
        open_run_dir(old, PLAN)


def test_diff_names_a_change_of_a_stages_heldout_evaluation() -> None:
    import dataclasses

    from familyc.plan.diff import diff_plans

    step = PLAN.step("train-l")
    assert isinstance(step, TrainStep) and step.eval is not None
    changed = dataclasses.replace(step, eval=dataclasses.replace(step.eval, interval=10))
    new = dataclasses.replace(PLAN, steps=tuple(changed if s.id == "train-l" else s for s in PLAN.steps))
    (change,) = diff_plans(PLAN, new).steps
    assert change.id == "train-l" and change.details == ("eval every 7 steps, 4,096 tokens -> every 10 steps, "
                                                         "4,096 tokens",)


def test_diff_names_a_change_of_a_growth_steps_optimizer_policy() -> None:
    import dataclasses

    from familyc.plan.diff import diff_plans

    step = PLAN.step("expand-s-m")
    assert isinstance(step, ExpandStep) and step.optimizer_state == "fresh"
    changed = dataclasses.replace(step, optimizer_state="carry")
    new = dataclasses.replace(PLAN, steps=tuple(changed if s.id == step.id else s for s in PLAN.steps))
    (change,) = diff_plans(PLAN, new).steps
    assert change.id == "expand-s-m" and change.details == ("optimizer_state fresh -> carry",)
