"""Pass 7, attach_costs: FLOPs, time, GPU-hours and dollars for every step; the plan and its totals.

Needs: `steps`, `baseline`. Adds: `plan` (its plan_id is set once the last pass is done).
- A train step's FLOPs are its tokens x its member's FLOPs per token (familyc.cost.flops,
  torchtitan's formula; the same function turns measured tokens into actual FLOPs).
- Its held-out evaluations (forward only, a third of the training FLOPs per token) are counted apart, in the
  step's eval.flops and the totals' *_eval_flops, never in the FLOPs the saving compares; their time is in the
  step's time.
- Its time is (training + evaluation FLOPs) / (devices x peak x MFU) plus the fixed costs below; an expand
  step's time is the bytes it reads and writes over cluster.io_gb_per_s, and it performs no FLOPs worth counting.
- Every training stage adds its fixed costs (familyc.cost.startup: launch, torch.compile, finish, and a fixed cost
  per step and per evaluation), measured for the accelerator; with a calibration profile
  (familyc.cost.calibration) the MFU and the start-up are the profile's, and the per-member MFU it measured from
  the steady rate holds the per-step costs. An accelerator without either has no start-up in the plan (None),
  and the plan says so.
- GPU-hours count every device of the allocation for the step's whole time; dollars are
  GPU-hours x price. Reported values are rounded (seconds to 0.1, GPU-hours to 0.001,
  dollars to 0.01, the saving to 4 digits) so the plan reads well; totals are rounded sums
  of the unrounded values.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypedDict

from familyc import __version__
from familyc.compiler.assign_budgets import tokens_per_param
from familyc.compiler.lower_to_cluster import device_memory
from familyc.compiler.state import Compilation
from familyc.cost import COST_MODEL_VERSION
from familyc.cost.accelerators import accelerator
from familyc.cost.calibration import shape_key
from familyc.cost.flops import FLOPS_FORMULA, FLOPS_FORMULA_SOURCE, eval_flops, train_flops
from familyc.cost.startup import startup
from familyc.cost.time import gpu_hours, io_seconds, train_seconds
from familyc.plan.ir import (
    SCHEMA_VERSION,
    ArchitecturePlan,
    Baseline,
    BudgetPlan,
    CalibrationRef,
    ClusterPlan,
    CostModelRef,
    DataPlan,
    FamilyRef,
    OptimizerPlan,
    Plan,
    StartupPlan,
    TokenizerPlan,
    Totals,
    TrainingPlan,
)
from familyc.plan.steps import ExpandStep, TrainStep
from familyc.spec.model import FamilySpec


def _costed_train(step: TrainStep, c: Compilation, raw: dict[str, float], start: StartupPlan | None) -> TrainStep:
    spec = c.spec
    assert spec is not None
    cluster = spec.cluster
    peak = accelerator(cluster.accelerator).peak(spec.training.precision)
    member = c.member(step.member)
    flops = train_flops(member.flops_per_token, step.tokens)
    evaluation = None if step.eval is None else replace(
        step.eval, flops=step.eval.evaluations * eval_flops(member.flops_per_token, step.eval.tokens))
    mfu = c.profile.mfu_for(shape_key(member), step.devices) if c.profile else cluster.mfu
    seconds = train_seconds(flops + (evaluation.flops if evaluation else 0), devices=step.devices, peak_flops=peak,
                            mfu=mfu)
    if start is not None:
        seconds += start.fixed_seconds(steps=step.num_steps, evaluations=evaluation.evaluations if evaluation else 0)
    raw[step.id] = seconds
    return replace(step, mfu=mfu, flops_per_step=train_flops(member.flops_per_token, step.batch_tokens), flops=flops,
                   eval=evaluation, startup_seconds=None if start is None else round(start.seconds, 1),
                   **_allocation(seconds, spec))


def _startup(c: Compilation) -> StartupPlan | None:
    """A training stage's start-up: the calibration profile's, else the one measured for the accelerator."""
    assert c.spec is not None
    if c.profile is not None:  # its MFU, measured per member from the steady rate, holds the steps' fixed costs
        return StartupPlan(launch_seconds=c.profile.launch_seconds, compile_seconds=0.0,
                           finish_seconds=c.profile.finish_seconds, source=f"calibration profile {c.profile.path}")
    measured = startup(c.spec.cluster.accelerator)
    if measured is None:
        return None
    return StartupPlan(launch_seconds=measured.launch_seconds,
                       compile_seconds=measured.compile_seconds if c.spec.training.compile else 0.0,
                       finish_seconds=measured.finish_seconds, source=measured.source,
                       step_seconds=measured.step_seconds, eval_seconds=measured.eval_seconds)


def _costed_expand(step: ExpandStep, c: Compilation, raw: dict[str, float]) -> ExpandStep:
    assert c.spec is not None
    seconds = io_seconds(step.bytes_read + step.bytes_written, gb_per_s=c.spec.cluster.io_gb_per_s)
    raw[step.id] = seconds
    return replace(step, flops=0, **_allocation(seconds, c.spec))


class _Allocation(TypedDict):
    predicted_seconds: float
    gpu_hours: float
    cost_usd: float


def _allocation(seconds: float, spec: FamilySpec) -> _Allocation:
    """The time, GPU-hours and dollars of a step that holds the whole allocation for `seconds`, rounded."""
    hours = gpu_hours(seconds, spec.cluster.devices)
    return {"predicted_seconds": round(seconds, 1), "gpu_hours": round(hours, 3),
            "cost_usd": round(hours * spec.cluster.price_per_gpu_hour, 2)}


def _cluster_plan(spec: FamilySpec, start: StartupPlan | None) -> ClusterPlan:
    c = spec.cluster
    acc = accelerator(c.accelerator)
    precision = spec.training.precision
    return ClusterPlan(
        accelerator=c.accelerator, accelerator_name=acc.name, devices=c.devices, nodes=c.nodes,
        gpus_per_node=c.gpus_per_node, precision=precision, peak_flops=acc.peak(precision), mfu=c.mfu,
        price_per_gpu_hour=c.price_per_gpu_hour, memory_bytes=device_memory(spec),
        memory_headroom=c.memory_headroom, io_gb_per_s=c.io_gb_per_s, startup=start,
    )


def attach_costs(c: Compilation) -> Compilation:
    spec = c.spec
    assert spec is not None
    raw: dict[str, float] = {}
    start = _startup(c)  # the same for every training stage, and the cluster's
    steps = tuple(_costed_train(s, c, raw, start) if isinstance(s, TrainStep) else _costed_expand(s, c, raw)
                  for s in c.steps)
    baseline_members = []
    for b in c.baseline:
        train = _costed_train(b.train, c, raw, start)
        baseline_members.append(replace(b, flops=train.flops, train=train))
    price = spec.cluster.price_per_gpu_hour
    devices = spec.cluster.devices

    prog_seconds = sum(raw[s.id] for s in steps)
    ind_seconds = sum(raw[b.train.id] for b in baseline_members)
    prog_flops = sum(s.flops for s in steps)
    ind_flops = sum(b.flops for b in baseline_members)
    prog_hours, ind_hours = gpu_hours(prog_seconds, devices), gpu_hours(ind_seconds, devices)
    totals = Totals(
        progressive_flops=prog_flops, independent_flops=ind_flops,
        savings_fraction=round(1 - prog_flops / ind_flops, 4) if ind_flops else 0.0,
        predicted_seconds=round(prog_seconds, 1), predicted_gpu_hours=round(prog_hours, 3),
        predicted_cost_usd=round(prog_hours * price, 2), independent_seconds=round(ind_seconds, 1),
        independent_gpu_hours=round(ind_hours, 3), independent_cost_usd=round(ind_hours * price, 2),
        progressive_eval_flops=sum(s.eval.flops for s in steps if isinstance(s, TrainStep) and s.eval),
        independent_eval_flops=sum(b.train.eval.flops for b in baseline_members if b.train.eval),
    )
    baseline = Baseline(members=tuple(baseline_members), flops=ind_flops, predicted_seconds=round(ind_seconds, 1),
                        gpu_hours=round(ind_hours, 3), cost_usd=round(ind_hours * price, 2))
    t, o, arch = spec.training, spec.training.optimizer, spec.architecture
    r = tokens_per_param(c)
    plan = Plan(
        schema_version=SCHEMA_VERSION, plan_id="", familyc_version=__version__,
        cost_model=CostModelRef(version=COST_MODEL_VERSION, flops_formula=FLOPS_FORMULA,
                                flops_formula_source=FLOPS_FORMULA_SOURCE),
        spec=c.spec_ref, family=FamilyRef(name=spec.name, description=spec.description),
        architecture=ArchitecturePlan(vocab_size=arch.vocab_size, seq_len=arch.seq_len, rope_theta=arch.rope_theta,
                                      norm_eps=arch.norm_eps),
        data=DataPlan(sources=spec.data.sources,
                      heldout_fraction=spec.data.heldout_fraction, progressive_stages=spec.data.progressive_stages,
                      shuffle=spec.data.shuffle),
        tokenizer=TokenizerPlan(kind=spec.tokenizer.kind, name=spec.tokenizer.name,
                                revision=spec.tokenizer.revision),
        cluster=_cluster_plan(spec, start),
        training=TrainingPlan(
            optimizer=OptimizerPlan(name="AdamW", weight_decay=o.weight_decay, beta1=o.beta1, beta2=o.beta2,
                                    eps=o.eps, max_grad_norm=o.max_grad_norm),
            compile=t.compile, checkpoint_interval=t.checkpoint_interval, log_interval=t.log_interval, seed=t.seed,
            optimizer_after_growth="carry" if any(isinstance(s, ExpandStep) and s.optimizer_state == "carry"
                                                  for s in steps) else "fresh",
        ),
        budget=BudgetPlan(rule=spec.budget.rule, tokens_per_param=None if r is None else float(f"{r:.6g}"),
                          params=spec.budget.params),
        members=c.members, steps=steps, baseline=baseline, totals=totals, warnings=c.warnings,
        calibration=None if c.profile is None else CalibrationRef(
            path=c.profile.path, sha256=c.profile.sha256, mfu=c.profile.mfu,
            stage_overhead_seconds=c.profile.stage_overhead_seconds),
    )
    return replace(c, plan=plan, steps=steps, baseline=tuple(baseline_members))
