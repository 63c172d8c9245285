"""One test (or a few) per compiler pass, on small specs built from specs/tiny.yaml."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DELETE, llama_data, mutated, tiny_data

from familyc.compiler import PASSES, compile_spec, load_document, read_spec
from familyc.compiler.state import Compilation
from familyc.cost.accelerators import accelerator
from familyc.errors import SpecError
from familyc.plan.ir import SpecRef
from familyc.plan.steps import ExpandStep, TrainStep

WriteSpec = Callable[..., Path]


def run_until(path: Path, last: str) -> Compilation:
    raw, shown = read_spec(path)
    state = Compilation(doc=load_document(raw, shown), spec_ref=SpecRef(path=shown, sha256="0" * 64))
    for name, run in PASSES:
        state = run(state)
        if name == last:
            return state
    raise AssertionError(last)


def test_passes_are_ordered_and_named_after_their_files() -> None:
    names = [name for name, _ in PASSES]
    assert names == ["resolve_defaults", "check_spec", "derive_shapes", "assign_budgets", "derive_lr",
                     "lower_to_cluster", "attach_costs", "check_plan"]
    for name, fn in PASSES:
        assert fn.__name__ == name and fn.__module__ == f"familyc.compiler.{name}"
        assert fn.__module__ and (fn.__doc__ or __import__(fn.__module__, fromlist=["x"]).__doc__)


# --- resolve_defaults ----------------------------------------------------------------------------

def test_resolve_defaults_applies_schema_defaults_and_parses_quantities(write_spec: WriteSpec) -> None:
    data = mutated(tiny_data(), **{"budget.largest_tokens": "1e6", "training.batch_tokens": "4.096K"})
    del data["architecture"]["rope_theta"]
    del data["members"][0]["n_kv_heads"]
    data["growth"][0] = {"from": "xs", "to": "s"}
    spec = run_until(write_spec(data), "resolve_defaults").spec
    assert spec is not None
    assert spec.architecture.rope_theta == 500000.0
    assert spec.architecture.multiple_of == 256 and spec.architecture.ffn_dim_multiplier is None
    assert spec.members[0].n_kv_heads == spec.members[0].n_heads == 4
    assert (spec.growth[0].width, spec.growth[0].depth, spec.growth[0].noise) == ("fpi", "zero_insert", 0.0)
    assert spec.budget.largest_tokens == 1_000_000 and spec.training.batch_tokens == 4096
    assert spec.training.micro_batch_size is None and spec.training.optimizer.beta2 == 0.95
    assert spec.lr.schedule.restart_warmup is True
    assert spec.data.heldout_fraction == 0.05 and spec.cluster.memory_headroom == 0.1


def test_resolve_defaults_reports_bad_quantities_at_their_line(write_spec: WriteSpec) -> None:
    path = write_spec(mutated(tiny_data(), **{"budget.largest_tokens": "1.5", "training.batch_tokens": "1e40"}))
    with pytest.raises(SpecError) as err:
        run_until(path, "resolve_defaults")
    found = {d.path: d for d in err.value.diagnostics}
    assert "whole number" in found["$.budget.largest_tokens"].message
    assert "absurdly large" in found["$.training.batch_tokens"].message
    assert all(d.line > 1 for d in found.values())


# --- check_spec ----------------------------------------------------------------------------------

def test_check_spec_reports_every_problem_at_once(write_spec: WriteSpec) -> None:
    data = tiny_data()
    data["members"][2]["n_heads"] = 5          # does not divide 128
    data["growth"][2]["from"] = "mm"           # unknown member
    data["lr"] = {"rule": "table", "table": {"xs": 1e-3}}
    with pytest.raises(SpecError) as err:
        run_until(write_spec(data), "check_spec")
    messages = {d.path: d.message for d in err.value.diagnostics}
    assert "does not divide dim" in messages["$.members[2].n_heads"]
    assert "no member is named 'mm'" in messages["$.growth[2].from"]
    assert "no entry for s, m, l" in messages["$.lr.table"]


def test_check_spec_flags_a_false_function_preserving_claim(write_spec: WriteSpec) -> None:
    data = tiny_data()
    data["growth"][0]["depth"] = "stack"
    with pytest.raises(SpecError) as err:
        run_until(write_spec(data), "check_spec")
    (d,) = err.value.diagnostics
    assert d.path == "$.growth[0].function_preserving" and "stack copies whole blocks" in d.message


# --- derive_shapes -------------------------------------------------------------------------------

def test_derive_shapes_matches_llama3_8b(write_spec: WriteSpec) -> None:
    members = run_until(write_spec(llama_data()), "derive_shapes").members
    eight = members[-1]
    assert (eight.ffn_dim, eight.head_dim) == (14336, 128)
    assert eight.params == 8_030_261_248            # Llama 3 8B, untied
    assert eight.embedding_params == 128256 * 4096
    assert eight.flops_per_token == 6 * (eight.params - eight.embedding_params) + 12 * 32 * 4096 * 8192
    assert (eight.torchtitan_multiple_of, eight.torchtitan_ffn_dim_multiplier) == (14336, None)
    assert [m.params for m in members] == sorted(m.params for m in members)


# --- assign_budgets ------------------------------------------------------------------------------

def test_paper_budget_telescopes_to_the_largest_member(write_spec: WriteSpec) -> None:
    state = run_until(write_spec(llama_data()), "assign_budgets")
    fpt = {m.name: m.flops_per_token for m in state.members}
    stage = sum(fpt[b.member] * b.tokens_requested for b in state.budgets)
    largest = fpt["8B"] * state.budgets[-1].baseline_tokens_requested
    assert stage == pytest.approx(largest, rel=1e-9)
    params = {m.name: m.params for m in state.members}
    for b in state.budgets:
        assert b.baseline_tokens_requested == round(20 * params[b.member])
    assert state.budgets[0].tokens_requested == state.budgets[0].baseline_tokens_requested


def test_largest_tokens_sets_the_ratio(write_spec: WriteSpec) -> None:
    state = run_until(write_spec(tiny_data()), "assign_budgets")
    assert state.budgets[-1].baseline_tokens_requested == 1_000_000


def test_tokens_per_param_and_explicit_budgets(write_spec: WriteSpec) -> None:
    data = mutated(tiny_data(), budget={"rule": "tokens_per_param", "tokens_per_param": 2, "params": "non_embedding"})
    state = run_until(write_spec(data), "assign_budgets")
    for b, m in zip(state.budgets, state.members, strict=True):
        assert b.tokens_requested == b.baseline_tokens_requested == 2 * m.non_embedding_params
    data = mutated(tiny_data(), budget={"rule": "explicit", "tokens": {"xs": "100K", "s": "200K", "m": 3e5, "l": "4e5"},
                                        "baseline_tokens": {"l": "1M"}})
    state = run_until(write_spec(data, "explicit.yaml"), "assign_budgets")
    assert [b.tokens_requested for b in state.budgets] == [100_000, 200_000, 300_000, 400_000]
    assert [b.baseline_tokens_requested for b in state.budgets] == [100_000, 200_000, 300_000, 1_000_000]


# --- derive_lr -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, expected", [
    ({"rule": "constant", "value": "1e-3"}, lambda m: 1e-3),
    ({"rule": "table", "table": {"xs": 4e-3, "s": 3e-3, "m": 2e-3, "l": 1e-3}},
     lambda m: {"xs": 4e-3, "s": 3e-3, "m": 2e-3, "l": 1e-3}[m.name]),
    ({"rule": "power_law", "power_law": {"reference_lr": 1e-3, "reference_params": "1M", "exponent": -0.5}},
     lambda m: float(f"{1e-3 * (m.params / 1e6) ** -0.5:.4g}")),
])
def test_derive_lr(write_spec: WriteSpec, rule: dict[str, Any], expected: Callable[[Any], float]) -> None:
    data = tiny_data()
    data["lr"] = {**rule, "schedule": data["lr"]["schedule"]}
    state = run_until(write_spec(data), "derive_lr")
    for m in state.members:
        assert state.max_lr[m.name] == pytest.approx(expected(m))
    if rule["rule"] == "power_law":
        assert state.max_lr["xs"] > state.max_lr["l"]


# --- lower_to_cluster ----------------------------------------------------------------------------

def test_lowering_orders_steps_and_splits_batches(write_spec: WriteSpec) -> None:
    state = run_until(write_spec(tiny_data()), "lower_to_cluster")
    assert [s.id for s in state.steps] == ["train-xs", "expand-xs-s", "train-s", "expand-s-m", "train-m",
                                           "expand-m-l", "train-l"]
    assert [b.train.id for b in state.baseline] == ["baseline-xs", "baseline-s", "baseline-m", "baseline-l"]
    budgets = {b.member: b for b in state.budgets}
    for step in state.steps:
        if isinstance(step, TrainStep):
            assert step.tokens == step.num_steps * 4096
            assert step.num_steps == max(1, round(budgets[step.member].tokens_requested / 4096))
            assert (step.global_batch_size, step.devices, step.fsdp_degree) == (16, 2, 2)
            assert step.local_batch_size * step.grad_accum == 8
            assert step.activation_checkpointing == "none" and step.memory.fits
        else:
            assert isinstance(step, ExpandStep) and step.optimizer_state == "fresh"
            # every step is exact: zero blocks for depth, the zero operator for width (no copies, no noise)
            assert (step.exactness, step.noise) == ("exact", 0)
            expected = ("zero", "none") if step.id == "expand-s-m" else ("none", "zero_insert")
            assert (step.width, step.depth) == expected
    train_s = state.steps[2]
    assert isinstance(train_s, TrainStep) and (train_s.source, train_s.init_from) == ("xs", "expand-xs-s")


def test_lowering_turns_on_checkpointing_only_when_memory_needs_it(write_spec: WriteSpec) -> None:
    data = mutated(llama_data(), **{"cluster.nodes": 1})
    data["training"]["batch_tokens"] = 8 * 8192 * 8
    state = run_until(write_spec(data), "lower_to_cluster")
    trains = [s for s in state.steps if isinstance(s, TrainStep)]
    modes = {s.member: (s.local_batch_size, s.activation_checkpointing) for s in trains}
    # 8 H100s: 8B's parameters, gradients and AdamW state alone take 16 B/param / 8 = 15 GiB per device,
    # so one 8192-token sequence only fits with activation checkpointing.
    assert modes["8B"][1] != "none" and modes["8B"][0] == 1
    assert modes["1B"] == (2, "none")


def test_lowering_uses_a_fixed_micro_batch_and_mode(write_spec: WriteSpec) -> None:
    data = mutated(tiny_data(), **{"training.micro_batch_size": 2, "training.activation_checkpointing": "full"})
    state = run_until(write_spec(data), "lower_to_cluster")
    for s in state.steps:
        if isinstance(s, TrainStep):
            assert (s.local_batch_size, s.grad_accum, s.activation_checkpointing) == (2, 4, "full")


def test_lowering_schedules(write_spec: WriteSpec) -> None:
    data = tiny_data()
    data["lr"]["schedule"] = {"warmup_steps": 45, "decay": "wsd", "decay_fraction": 0.25, "restart_warmup": False}
    state = run_until(write_spec(data), "lower_to_cluster")
    trains = [s for s in state.steps if isinstance(s, TrainStep)]
    assert trains[0].schedule.warmup_steps == min(45, trains[0].num_steps)
    assert all(t.schedule.warmup_steps == 0 for t in trains[1:])
    assert all((t.schedule.decay_type, t.schedule.decay_ratio) == ("linear", 0.25) for t in trains)
    assert all(b.train.schedule.warmup_steps == min(45, b.train.num_steps) for b in state.baseline)
    assert any("warmup of 45 steps is longer" in w for w in state.warnings)


def test_a_growth_steps_lr_policy_sets_its_stages_warmup_and_peak_only(write_spec: WriteSpec) -> None:
    """growth[].lr: no warmup and half the peak after s -> m; 3 warmup steps after m -> l; the first stage, the
    other stages and every baseline keep the family's schedule and their size's peak."""
    data = tiny_data()
    data["growth"][1]["lr"] = {"warmup": "none", "peak_factor": "5e-1"}  # e-notation reaches nested fields too
    data["growth"][2]["lr"] = {"warmup": {"steps": 3}}
    plain = run_until(write_spec(tiny_data(), "plain.yaml"), "lower_to_cluster")
    state = run_until(write_spec(data), "lower_to_cluster")
    train = {s.member: s for s in state.steps if isinstance(s, TrainStep)}
    before = {s.member: s for s in plain.steps if isinstance(s, TrainStep)}
    assert (train["m"].schedule.warmup_steps, train["m"].max_lr) == (0, before["m"].max_lr * 0.5)
    assert (train["l"].schedule.warmup_steps, train["l"].max_lr) == (3, before["l"].max_lr)
    assert train["s"] == before["s"] and train["xs"] == before["xs"]
    assert [b.train for b in state.baseline] == [b.train for b in plain.baseline]
    grown = {s.member: s.lr_after for s in state.steps if isinstance(s, ExpandStep)}
    assert (grown["m"].warmup, grown["m"].peak_factor) == ("none", 0.5)
    assert (grown["l"].warmup, grown["l"].warmup_value, grown["s"].warmup) == ("steps", 3.0, "schedule")
    data["growth"][2]["lr"] = {"warmup": {"fraction": 0.5}}
    state = run_until(write_spec(data), "lower_to_cluster")
    l_stage = next(s for s in state.steps if isinstance(s, TrainStep) and s.member == "l")
    assert l_stage.schedule.warmup_steps == round(0.5 * l_stage.num_steps)


def test_a_growth_step_that_carries_the_optimizer_keeps_its_sources_moments(write_spec: WriteSpec) -> None:
    """growth[].optimizer: carry on s -> m only: that expand step says so, the plan names it, train-s saves its
    moments (more disk), train-m loads them; no other stage, and no baseline, does either."""
    data = tiny_data()
    data["growth"][1]["optimizer"] = "carry"
    plain = run_until(write_spec(tiny_data(), "plain.yaml"), "attach_costs").plan
    plan = run_until(write_spec(data), "attach_costs").plan
    assert plain is not None and plan is not None
    assert {s.id: s.optimizer_state for s in plan.expand_steps()} == {
        "expand-xs-s": "fresh", "expand-s-m": "carry", "expand-m-l": "fresh"}
    assert (plan.training.optimizer_after_growth, plain.training.optimizer_after_growth) == ("carry", "fresh")
    assert [s.member for s in plan.train_steps() if plan.saves_optimizer(s)] == ["s"]
    assert [s.member for s in plan.train_steps() if plan.carries_optimizer(s)] == ["m"]
    baselines = [b.train for b in plan.baseline.members]
    assert not any(plan.saves_optimizer(b) or plan.carries_optimizer(b) for b in baselines)
    s, before = plan.train_step("s"), plain.train_step("s")
    params = plan.member("s").params
    assert plan.disk_bytes(s) - plain.disk_bytes(before) == 2 * 8 * params  # moments saved, then moved
    grown, fresh = plan.step("expand-s-m"), plain.step("expand-s-m")
    assert isinstance(grown, ExpandStep) and isinstance(fresh, ExpandStep)
    assert (grown.bytes_read, grown.bytes_written) == (3 * fresh.bytes_read, 3 * fresh.bytes_written)


def test_an_absurd_peak_factor_is_refused_at_its_key(write_spec: WriteSpec) -> None:
    data = mutated(tiny_data(), **{"growth.1.lr": {"peak_factor": 20}})
    with pytest.raises(SpecError) as info:
        run_until(write_spec(data), "check_spec")
    (problem,) = info.value.diagnostics
    assert problem.path == "$.growth[1].lr.peak_factor" and "above 10" in problem.message


# --- attach_costs --------------------------------------------------------------------------------

def test_costs_follow_the_formulas(write_spec: WriteSpec) -> None:
    plan = run_until(write_spec(llama_data()), "attach_costs").plan
    assert plan is not None
    peak = accelerator("h100").peak("bf16")
    fpt = {m.name: m.flops_per_token for m in plan.members}
    for step in plan.steps:
        if isinstance(step, TrainStep):
            assert step.flops == step.tokens * fpt[step.member]
            evaluation = step.eval.flops if step.eval else 0  # a hub dataset has held-out text as any source does
            assert step.eval is not None and evaluation > 0
            seconds = (step.flops + evaluation) / (64 * peak * 0.40)
            assert step.predicted_seconds == round(seconds, 1)
            assert step.gpu_hours == round(seconds * 64 / 3600, 3)
            assert step.cost_usd == round(seconds * 64 / 3600 * 2.5, 2)
        else:
            assert step.flops == 0
            assert step.predicted_seconds == round((step.bytes_read + step.bytes_written) / 1e9, 1)
    t = plan.totals
    assert t.progressive_flops == sum(s.flops for s in plan.steps)
    assert t.independent_flops == sum(b.flops for b in plan.baseline.members) == plan.baseline.flops
    assert t.savings_fraction == round(1 - t.progressive_flops / t.independent_flops, 4)
    # Real parameter counts: close to the 24.7% of exactly doubling sizes (see README).
    assert 0.20 < t.savings_fraction < 0.30


# --- check_plan ----------------------------------------------------------------------------------

def test_check_plan_refuses_a_member_that_cannot_fit(write_spec: WriteSpec) -> None:
    data = mutated(llama_data(), **{"cluster.nodes": 1, "cluster.gpus_per_node": 1, "training.batch_tokens": 8192})
    with pytest.raises(SpecError) as err:
        run_until(write_spec(data), "check_plan")
    paths = {d.path for d in err.value.diagnostics}
    assert paths == {"$.cluster.gpus_per_node"}
    by_member = {d.message.split()[1]: d for d in err.value.diagnostics}  # one diagnostic per member
    assert "8B" in by_member and "(train-8B, baseline-8B)" in by_member["8B"].message
    assert "add devices" in by_member["8B"].hint


def test_check_plan_warns(write_spec: WriteSpec) -> None:
    data = mutated(tiny_data(), **{"budget.largest_tokens": "20K"})
    plan = run_until(write_spec(data), "check_plan").plan
    assert plan is not None
    assert any("only" in w and "optimizer steps" in w for w in plan.warnings)
    assert len(plan.warnings) == len(set(plan.warnings))


def test_check_plan_warns_about_width_growth_without_noise(write_spec: WriteSpec) -> None:
    """Copies get identical gradients: without noise a widened member never uses its new width."""
    copying = {"growth.1.width": "exact", "growth.1.function_preserving": False}
    symmetric = mutated(tiny_data(), **copying, **{"growth.1.noise": 0})
    (warning,) = [w for w in run_until(write_spec(symmetric), "check_plan").plan.warnings if "with noise 0:" in w]
    assert warning.startswith("expand-s-m: grows the width by copying units with noise 0")
    assert "set this growth step's noise > 0" in warning
    for data in (mutated(tiny_data(), **copying, **{"growth.1.noise": 0.05}), tiny_data()):  # noise, or zero
        assert not [w for w in run_until(write_spec(data, "quiet.yaml"), "check_plan").plan.warnings
                    if "with noise 0:" in w]  # (depth-only steps never warn)


def test_compile_is_deterministic(in_repo: Path) -> None:
    a = compile_spec(Path("specs/llama_1b_8b.yaml"))
    b = compile_spec(Path("specs/llama_1b_8b.yaml"))
    assert a == b and a.plan_id == b.plan_id and len(a.plan_id) == 16
    assert a.spec.path == "specs/llama_1b_8b.yaml"
    assert not math.isnan(a.totals.savings_fraction)


def test_optional_growth_section_defaults_to_empty(write_spec: WriteSpec) -> None:
    data = tiny_data()
    data["members"] = data["members"][:1]
    data["growth"] = DELETE
    del data["growth"]
    plan = run_until(write_spec(data), "check_plan").plan
    assert plan is not None and [s.id for s in plan.steps] == ["train-xs"]
    assert plan.totals.savings_fraction == 0.0
