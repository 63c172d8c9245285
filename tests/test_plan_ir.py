"""The plan IR answers its own questions (shapes, steps, baselines, lineage), and refuses a plan file whose
steps are not one walk or whose enumerated values are not familyc's, even with a recomputed plan_id."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import REPO

from familyc.cost.storage import stage_disk_bytes
from familyc.errors import PlanError
from familyc.plan import ir
from familyc.plan.ir import ExpandStep, TrainStep

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
