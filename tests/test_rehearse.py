"""familyc rehearse: every stage at its real shape and world size on fake tensors, against the plan.

The tiny spec's, the flagship's and one of the GPU check's stages are rehearsed here; the 8B -> 70B spec is a
benchmark (benchmarks/rehearse.py). The check against a real run's allocator-level peak is in
test_backend_runs.py (it needs a real two-rank stage).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import REPO, mutated, tiny_data

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan.train", reason="torchtitan (and triton, which it imports) is not installed")

from typer.testing import CliRunner  # noqa: E402

from familyc.cli import app  # noqa: E402
from familyc.compiler import compile_spec  # noqa: E402
from familyc.cost.params import count_params  # noqa: E402
from familyc.execute.rehearse import PLANNED_PARTS, rehearsal_document, rehearse_plan  # noqa: E402
from familyc.plan.ir import Plan, loads  # noqa: E402
from familyc.plan.steps import TrainStep  # noqa: E402
from familyc.render import text  # noqa: E402

TINY = loads((REPO / "plans" / "tiny.plan.json").read_text())
FLAGSHIP = loads((REPO / "plans" / "llama_1b_8b.plan.json").read_text())
runner = CliRunner()


def norm_weights(plan: Plan, member: str) -> int:
    shape = plan.shape(member)
    return (2 * shape.n_layers + 1) * shape.dim


@pytest.fixture(scope="module")
def tiny() -> object:
    return rehearse_plan(TINY)


def test_every_tiny_stage_rehearses_part_for_part_as_planned(tiny) -> None:  # type: ignore[no-untyped-def]
    """The calibrated memory model (familyc/cost/memory.py) is exact on the tiny stages, part for part; what it
    leaves out (the inputs, freqs_cis) is under 0.1% of the peak."""
    assert tiny.ok and [s.step.id for s in tiny.stages] == [s.id for s in TINY.train_steps()]
    for stage in tiny.stages:
        step, rehearsed = stage.step, stage.rehearsed_parts()
        assert stage.fits and stage.rehearsal.world_size == step.devices == 2
        for part in PLANNED_PARTS:
            assert rehearsed[part] == pytest.approx(getattr(step.memory, part), rel=0.001, abs=64), (step.id, part)
        assert step.grad_accum == 1 and rehearsed["gradients"] == 0  # zero_grad freed them before the forward
        assert 0 < rehearsed["other"] < 0.001 * stage.rehearsal.peak
        assert stage.rehearsal.peak == pytest.approx(step.memory.total, rel=0.001)


def test_counted_flops_are_the_plans_formula_less_its_norm_weights(tiny) -> None:  # type: ignore[no-untyped-def]
    """FlopCounterMode on one micro-batch: every matmul and the attention (the backward by the MFU convention)
    is torchtitan's 6 N + 12 L d s exactly; the formula's only excess is 6 per RMSNorm weight."""
    for stage in tiny.stages:
        member = TINY.member(stage.step.member)
        assert stage.rehearsal.flops_per_token == member.flops_per_token - 6 * norm_weights(TINY, member.name)


def test_every_growth_reads_what_its_source_saves_and_writes_what_the_grown_member_loads(tiny) -> None:  # type: ignore[no-untyped-def]
    assert [(g.step.id, g.ok) for g in tiny.growths] == [(s.id, True) for s in TINY.steps if s.kind == "expand"]
    depth = next(g for g in tiny.growths if g.step.id == "expand-xs-s").rehearsal
    assert depth.tensors == depth.computed == len(tiny.stages[1].rehearsal.model_keys)
    width = next(g for g in tiny.growths if g.step.id == "expand-s-m").rehearsal
    assert width.tensors == len(tiny.stages[2].rehearsal.model_keys) and 0 < width.computed < width.tensors


def test_a_stage_that_does_not_fit_fails_the_rehearsal_by_name(tiny) -> None:  # type: ignore[no-untyped-def]
    """A plan whose model promised more room than the stage needs (what an uncalibrated estimate does)."""
    stage = tiny.stages[-1]
    squeezed = dataclasses.replace(stage, step=dataclasses.replace(
        stage.step, memory=dataclasses.replace(stage.step.memory, capacity=stage.rehearsal.peak - 1)))
    result = dataclasses.replace(tiny, stages=(*tiny.stages[:-1], squeezed))
    assert not result.ok
    rendered = text(rehearsal_document(result))
    assert "train-l: does not fit: 232.7 MiB rehearsed, 232.7 MiB usable per device" in rendered
    assert "| NO " not in rendered and " NO " in rendered


def test_the_optimizer_moments_a_carrying_growth_writes_are_those_the_grown_stage_loads(write_spec) -> None:  # type: ignore[no-untyped-def]
    data = tiny_data()
    data = mutated(data, **{f"growth.{i}.optimizer": "carry" for i in range(len(data["growth"]))})
    plan = compile_spec(write_spec(data))
    result = rehearse_plan(plan, only=("train-s", "expand-s-m", "train-m"))
    assert result.ok
    growth = result.growths[0].rehearsal
    moments = len(result.stages[1].rehearsal.optimizer_keys)
    assert moments == 3 * len(result.stages[1].rehearsal.model_keys)  # step, exp_avg, exp_avg_sq
    assert growth.tensors == len(result.stages[1].rehearsal.model_keys) + moments


def test_a_growth_whose_keys_the_next_stage_cannot_load_exits_1_naming_them(
        monkeypatch: pytest.MonkeyPatch, in_repo: Path) -> None:
    """The growth writes under torchtitan 0.3's name for the output projection (lm_head), which the pinned
    0.2.2 model does not have: caught before any GPU is spent."""
    from familyc.backend import keys
    from familyc.expand import operators

    def renamed(shape):  # type: ignore[no-untyped-def]
        return {("lm_head.weight" if k == "output.weight" else k): v for k, v in keys.model_keys(shape).items()}

    monkeypatch.setattr(operators, "model_keys", renamed)
    result = runner.invoke(app, ["rehearse", "plans/tiny.plan.json", "--step", "train-xs", "--step", "expand-xs-s",
                                 "--step", "train-s"], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert ("expand-xs-s: weights read: 1 key expand-xs-s needs, the xs stage's checkpoint has not: lm_head.weight"
            in result.output)
    assert "weights written: 1 key the s stage's model needs, expand-xs-s has not: output.weight" in result.output


def test_the_flagship_rehearses_whole_every_stage_as_planned_at_64_ranks(in_repo: Path) -> None:
    """`familyc rehearse specs/llama_1b_8b.yaml`: its four stages and three growth steps (about 90 s here)."""
    result = runner.invoke(app, ["rehearse", "specs/llama_1b_8b.yaml", "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout[result.stdout.index("{"):])
    assert body["ok"] and [s["step"] for s in body["stages"]] == [s.id for s in FLAGSHIP.train_steps()]
    assert [g["step"] for g in body["growths"]] == [s.id for s in FLAGSHIP.steps if s.kind == "expand"]
    for stage in body["stages"]:
        step = FLAGSHIP.step(stage["step"])
        assert isinstance(step, TrainStep) and stage["fits"] and stage["devices"] == 64
        assert stage["rehearsed"]["total"] == pytest.approx(step.memory.total, rel=0.005), stage["step"]
        shape = FLAGSHIP.shape(step.member)
        assert stage["rehearsed"]["parameters"] == pytest.approx(4 * count_params(shape).total / 64, rel=0.001)
        member = FLAGSHIP.member(step.member)
        assert stage["flops_per_token_counted"] == member.flops_per_token - 6 * norm_weights(FLAGSHIP, member.name)


def test_a_stage_on_one_gpu_rehearses_as_planned_with_autocasts_copies(in_repo: Path) -> None:
    """specs/gpu_check.yaml trains on one GPU, where torchtitan applies no FSDP2 and computes by autocast: the
    model's single-rank terms (autocast's bf16 weight copies, each linear's own cast of its input) hold."""
    plan = loads((REPO / "plans" / "gpu_check.plan.json").read_text())
    result = rehearse_plan(plan, only=("train-125M",))
    (stage,) = result.stages
    assert result.ok and stage.step.devices == 1 and stage.step.precision == "bf16"
    assert stage.rehearsal.peak == pytest.approx(stage.step.memory.total, rel=0.005)
    assert "autocast" in text(rehearsal_document(result))
