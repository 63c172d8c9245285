"""One result object for `familyc report`: predicted against actual, the family's quality, what is missing.

Built from the run directory alone (plan.json, state.json, every step's metrics.jsonl, the weights).
A run that is still going, or failed, reports what exists and lists what is missing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from familyc.enums import COMPLETED, Family, HeldoutPart, StepKind, StepStatus
from familyc.errors import FamilycError
from familyc.execute import metrics as stage_metrics
from familyc.execute.data import heldout_dir, run_tokenizer_dir
from familyc.execute.jobs import METRICS_FILE
from familyc.execute.rundir import RunDir, open_existing
from familyc.execute.state import RunState
from familyc.meter import Start, quiet
from familyc.plan.ir import Plan, Step
from familyc.plan.steps import ExpandStep
from familyc.report.downstream import Downstream, downstream
from familyc.report.quality import Evaluator, available_weights

REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRow:
    id: str
    kind: StepKind
    member: str
    family: Family
    status: StepStatus
    tokens_planned: int
    tokens_actual: int | None
    predicted_flops: int
    actual_flops: int | None
    predicted_seconds: float
    actual_seconds: float | None
    """Wall time of the step's processes (start-up included), over all attempts."""
    train_seconds: float | None
    """Time inside torchtitan's training loop."""
    predicted_tokens_per_second: float | None
    actual_tokens_per_second: float | None
    mfu: float | None
    """Measured, against the accelerator's peak; None where no peak is known (cpu)."""
    first_loss: float | None
    final_loss: float | None
    num_flops_per_token: int | None
    predicted_eval_flops: int = 0
    """Held-out evaluation during the stage (apart from its training FLOPs)."""
    actual_eval_flops: int | None = None

    @property
    def errors(self) -> dict[str, float | None]:
        """Relative error of each prediction, (actual - predicted) / predicted."""
        def err(predicted: float, actual: float | None) -> float | None:
            return None if actual is None or not predicted else (actual - predicted) / predicted

        return {"tokens": err(self.tokens_planned, self.tokens_actual),
                "flops": err(self.predicted_flops, self.actual_flops),
                "seconds": err(self.predicted_seconds, self.actual_seconds)}


@dataclass(frozen=True, kw_only=True, slots=True)
class MemberQuality:
    name: str
    heldout_loss: float | None
    baseline_heldout_loss: float | None

    @property
    def perplexity(self) -> float | None:
        return math.exp(self.heldout_loss) if self.heldout_loss is not None else None

    @property
    def baseline_perplexity(self) -> float | None:
        return math.exp(self.baseline_heldout_loss) if self.baseline_heldout_loss is not None else None


@dataclass(frozen=True, kw_only=True, slots=True)
class GrowthQuality:
    id: str
    source: str
    target: str
    exactness: str
    loss_before: float | None
    """Held-out loss of the trained source member."""
    loss_after: float | None
    """Held-out loss of the grown weights, before any training of the target."""
    first_train_loss: float | None
    """The target stage's first logged training loss (the same weights, a training batch)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class HeadStart:
    """What a grown member kept of its growth, from its stage's held-out curve (training.eval)."""

    step: str
    """The train step of the grown member."""
    growth: str
    """The expand step that made its initial weights."""
    loss_at_start: float
    """Held-out loss at step 0 (before any update): the grown weights' (the source's, if the growth is exact)."""
    peak_loss: float
    """The highest held-out loss after step 0."""
    peak_step: int
    tokens_to_recover: int | None
    """Training tokens until the held-out loss is first below its step-0 value again (None: never in the stage)."""
    final_loss: float
    evaluations: int

    @property
    def peak_rise(self) -> float:
        """How far above its step-0 value the held-out loss rose (0 when it never did)."""
        return max(0.0, self.peak_loss - self.loss_at_start)


def head_start(curve: list[tuple[int, float]], *, step: str, growth: str, batch_tokens: int) -> HeadStart | None:
    """The head start of one grown stage from its (step, held-out loss) curve; None without a step-0 point and at
    least one after it."""
    if len(curve) < 2 or curve[0][0] != 0:
        return None
    start = curve[0][1]
    peak_step, peak = max(curve[1:], key=lambda point: point[1])
    recovered = next((s for s, loss in curve[1:] if loss < start), None)
    return HeadStart(step=step, growth=growth, loss_at_start=start, peak_loss=peak, peak_step=peak_step,
                     tokens_to_recover=None if recovered is None else recovered * batch_tokens,
                     final_loss=curve[-1][1], evaluations=len(curve))


@dataclass(frozen=True, kw_only=True, slots=True)
class PairKL:
    small: str
    large: str
    kl_small_large: float
    kl_large_small: float


@dataclass(frozen=True, kw_only=True, slots=True)
class RunReport:
    run_dir: str
    plan: Plan
    steps: tuple[StepRow, ...]
    members: tuple[MemberQuality, ...]
    growth: tuple[GrowthQuality, ...]
    kl: tuple[PairKL, ...]
    kl_independent: tuple[PairKL, ...]
    heldout: dict[str, Any]
    missing: tuple[str, ...]
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Training loss against cumulative FLOPs, per member and baseline (for the plots)."""
    heldout_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """(step, held-out loss) of every stage that evaluated during training (training.eval), by train step id."""
    head_starts: tuple[HeadStart, ...] = ()
    """One per grown stage with a held-out curve."""
    downstream: Downstream | None = None
    """familyc eval's results that still match the run's weights (None: it has not run)."""

    @property
    def complete(self) -> bool:
        return not self.missing

    def totals(self) -> dict[str, Any]:
        prog = [s for s in self.steps if s.family == "progressive"]
        ind = [s for s in self.steps if s.family == "independent" and s.kind == "train"]
        measured = all(s.actual_flops is not None for s in prog if s.kind == "train")
        prog_flops = sum(s.actual_flops or 0 for s in prog)
        ind_flops = sum(s.actual_flops or 0 for s in ind)
        ind_done = bool(ind) and all(s.actual_flops is not None for s in ind)
        t = self.plan.totals
        mfus = [(s.mfu, s.actual_flops) for s in prog if s.mfu is not None and s.actual_flops]
        return {
            "predicted_flops": t.progressive_flops,
            "actual_flops": prog_flops if measured else None,
            "predicted_seconds": t.predicted_seconds,
            "actual_seconds": sum(s.actual_seconds or 0.0 for s in prog) if measured else None,
            "independent_predicted_flops": t.independent_flops,
            "independent_actual_flops": ind_flops if ind_done else None,
            "savings_planned": t.savings_fraction,
            "savings_measured": (1 - prog_flops / ind_flops) if (measured and ind_done and ind_flops) else None,
            "predicted_eval_flops": t.progressive_eval_flops,
            "actual_eval_flops": sum(s.actual_eval_flops or 0 for s in prog) if measured else None,
            "mfu_assumed": self.plan.cluster.mfu,
            "mfu_measured": (sum(m * f for m, f in mfus) / sum(f for _, f in mfus)) if mfus else None,
        }

    def to_data(self) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "run_dir": self.run_dir, "plan_id": self.plan.plan_id, "family": self.plan.family.name,
            "accelerator": self.plan.cluster.accelerator, "complete": self.complete, "missing": list(self.missing),
            "steps": [{**asdict(s), "errors": s.errors} for s in self.steps],
            "members": [{**asdict(m), "perplexity": m.perplexity, "baseline_perplexity": m.baseline_perplexity}
                        for m in self.members],
            "growth": [asdict(g) for g in self.growth],
            "kl": [asdict(k) for k in self.kl],
            "kl_independent": [asdict(k) for k in self.kl_independent],
            "heldout": self.heldout,
            "heldout_curves": {k: [list(p) for p in v] for k, v in self.heldout_curves.items()},
            "head_starts": [{**asdict(h), "peak_rise": h.peak_rise} for h in self.head_starts],
            "totals": self.totals(),
            "downstream": self.downstream.to_data() if self.downstream else None,
        }


def _step_row(plan: Plan, run: RunDir, state: RunState, step: Step, family: Family) -> StepRow:
    st = state.steps.get(step.id)
    m = st.metrics if st else {}
    done = st is not None and st.status == COMPLETED
    status: StepStatus = st.status if st else "pending"
    known_peak = plan.cluster.accelerator != "cpu"
    if isinstance(step, ExpandStep):
        seconds = m.get("wall_seconds") if done else None
        return StepRow(id=step.id, kind="expand", member=step.member, family=family, status=status, tokens_planned=0,
                       tokens_actual=0 if done else None, predicted_flops=0, actual_flops=0 if done else None,
                       predicted_seconds=step.predicted_seconds, actual_seconds=seconds, train_seconds=None,
                       predicted_tokens_per_second=None, actual_tokens_per_second=None, mfu=None, first_loss=None,
                       final_loss=None, num_flops_per_token=None)
    if not done:  # a stage still running or failed: what its metrics say so far
        records = stage_metrics.read_records(run.step_dir(step.id) / METRICS_FILE)
        summary = stage_metrics.summarize(records, batch_tokens=step.batch_tokens, peak_flops=plan.cluster.peak_flops)
        m = summary.to_data() if summary else {}
    predicted_tps = step.tokens / step.predicted_seconds if step.predicted_seconds else None
    return StepRow(
        id=step.id, kind="train", member=step.member, family=family, status=status, tokens_planned=step.tokens,
        tokens_actual=m.get("tokens") if done else None, predicted_flops=step.flops,
        actual_flops=m.get("flops") if done else None, predicted_seconds=step.predicted_seconds,
        actual_seconds=m.get("wall_seconds") if done else None, train_seconds=m.get("train_seconds"),
        predicted_tokens_per_second=predicted_tps, actual_tokens_per_second=m.get("tokens_per_second"),
        mfu=m.get("mfu") if known_peak else None, first_loss=m.get("first_loss"), final_loss=m.get("final_loss"),
        num_flops_per_token=m.get("num_flops_per_token"), predicted_eval_flops=step.eval.flops if step.eval else 0,
        actual_eval_flops=m.get("eval_flops") if done else None)


def _curves(plan: Plan, run: RunDir) -> dict[str, list[tuple[float, float]]]:
    """Training loss against the family's cumulative FLOPs: progressive stages continue each other."""
    curves: dict[str, list[tuple[float, float]]] = {}
    offset = 0.0
    for step in plan.train_steps():
        records = stage_metrics.read_records(run.step_dir(step.id) / METRICS_FILE)
        per_step = step.flops_per_step
        curves[step.id] = [(offset + r["step"] * per_step, r["loss"]) for r in records
                           if isinstance(r.get("loss"), int | float)]
        offset += step.flops
    for b in plan.baseline.members:
        records = stage_metrics.read_records(run.step_dir(b.train.id) / METRICS_FILE)
        if records:
            curves[b.train.id] = [(r["step"] * b.train.flops_per_step, r["loss"]) for r in records
                                  if isinstance(r.get("loss"), int | float)]
    return curves


def collect(run_dir: Path, *, evaluate: bool = True, max_tokens: int = 32_768, part: HeldoutPart = "all",
            progress: Start = quiet) -> RunReport:
    """The report of a run directory; `evaluate=False` skips the held-out evaluation (no torch needed); `part`:
    the held-out documents evaluated (familyc.enums.HeldoutPart); `progress` (familyc.meter) counts the
    evaluations (a held-out loss or an adjacent pair's KL each; those in the report's cache take no time)."""
    run, plan, state = open_existing(run_dir)
    steps = [_step_row(plan, run, state, s, "progressive") for s in plan.steps]
    baseline_ran = any(state.steps.get(b.train.id) and state.step(b.train.id).status != "pending"
                       for b in plan.baseline.members)
    if baseline_ran:
        steps += [_step_row(plan, run, state, b.train, "independent") for b in plan.baseline.members]
    missing = [f"{s.id} is {s.status}" for s in steps if s.status != COMPLETED]
    members, growth, kl, kl_ind, heldout = _quality(plan, run, state, evaluate=evaluate, max_tokens=max_tokens,
                                                    part=part, missing=missing, progress=progress)
    heldout_curves = _heldout_curves(plan, run)
    starts = (head_start(heldout_curves.get(s.id, []), step=s.id, growth=s.init_from, batch_tokens=s.batch_tokens)
              for s in plan.train_steps() if s.init_from is not None)
    evaluated = _downstream(plan, run, state, missing)
    return RunReport(run_dir=str(run_dir), plan=plan, steps=tuple(steps), members=members, growth=growth, kl=kl,
                     kl_independent=kl_ind, heldout=heldout, missing=tuple(missing), curves=_curves(plan, run),
                     heldout_curves=heldout_curves, head_starts=tuple(h for h in starts if h is not None),
                     downstream=evaluated)


def _downstream(plan: Plan, run: RunDir, state: RunState, missing: list[str]) -> Downstream | None:
    """familyc eval's results (RUN_DIR/eval/results.json); stale or unreadable ones are listed as missing."""
    try:
        found = downstream(plan, run, state)
    except FamilycError as exc:
        missing.append(f"downstream evaluation ({exc.message})")
        return None
    for label in found.stale if found else ():
        missing.append(f"downstream results of {label} (its weights changed since familyc eval; run familyc eval "
                       f"{run.root} again)")
    return found


def _heldout_curves(plan: Plan, run: RunDir) -> dict[str, list[tuple[int, float]]]:
    stages = [*plan.train_steps(), *(b.train for b in plan.baseline.members)]
    curves = {s.id: stage_metrics.read_evaluations(run.step_dir(s.id) / METRICS_FILE) for s in stages}
    return {k: v for k, v in curves.items() if v}


def _quality(plan: Plan, run: RunDir, state: RunState, *, evaluate: bool, max_tokens: int, part: HeldoutPart,
             missing: list[str], progress: Start) -> tuple[tuple[MemberQuality, ...], tuple[GrowthQuality, ...],
                                                            tuple[PairKL, ...], tuple[PairKL, ...], dict[str, Any]]:
    weights = available_weights(plan, run, state)
    evaluator = None
    heldout: dict[str, Any] = {}
    if evaluate and weights:
        evaluator, heldout = _evaluator(plan, run, max_tokens, part, missing)
    if evaluator is None:
        missing.append("held-out evaluation (not run)" if not evaluate else "held-out evaluation (no weights)")
    names = [m.name for m in plan.members]
    adjacent = [(small, large, baseline) for baseline in (False, True)
                for small, large in zip(names, names[1:], strict=False)
                if all(plan.train_step(n, baseline=baseline).id in weights for n in (small, large))]
    needed = [plan.train_step(m.name, baseline=baseline).id for baseline in (False, True) for m in plan.members]
    for expand in plan.expand_steps():
        needed += [plan.growth_source(expand.source).id, expand.id]
    evaluated = [step_id for step_id in dict.fromkeys(needed) if step_id in weights]
    losses: dict[str, float] = {}
    kls: dict[tuple[str, str, bool], tuple[float, float]] = {}
    if evaluator is not None:  # every evaluation first, so that progress can count them
        advance = progress("held-out evaluation", len(evaluated) + len(adjacent), "items")
        for step_id in evaluated:
            advance(0, f"loss of {weights[step_id].label}")
            losses[step_id] = evaluator.loss(weights[step_id])
            advance(1, "")
        for small, large, baseline in adjacent:
            a, b = (weights[plan.train_step(n, baseline=baseline).id] for n in (small, large))
            advance(0, f"KL {a.label} / {b.label}")
            kls[small, large, baseline] = evaluator.kl(a, b)
            advance(1, "")

    def loss(step: Step) -> float | None:
        return losses.get(step.id)

    def member_loss(name: str, *, baseline: bool = False) -> float | None:
        return loss(plan.train_step(name, baseline=baseline))

    members = tuple(MemberQuality(name=m.name, heldout_loss=member_loss(m.name),
                                  baseline_heldout_loss=member_loss(m.name, baseline=True)) for m in plan.members)
    growth = []
    for step in plan.expand_steps():
        first = state.steps.get(plan.growth_source(step.member).id)  # the stage the growth starts
        growth.append(GrowthQuality(id=step.id, source=step.source, target=step.member, exactness=step.exactness,
                                    loss_before=loss(plan.growth_source(step.source)), loss_after=loss(step),
                                    first_train_loss=first.metrics.get("first_loss") if first else None))

    def pairs(*, baseline: bool) -> tuple[PairKL, ...]:
        return tuple(PairKL(small=small, large=large, kl_small_large=kls[small, large, b][0],
                            kl_large_small=kls[small, large, b][1])
                     for small, large, b in adjacent if b == baseline and (small, large, b) in kls)

    return members, tuple(growth), pairs(baseline=False), pairs(baseline=True), heldout


def _evaluator(plan: Plan, run: RunDir, max_tokens: int, part: HeldoutPart,
               missing: list[str]) -> tuple[Evaluator | None, dict[str, Any]]:
    folder = heldout_dir(plan, run)
    try:
        tokenizer: Path | None = run_tokenizer_dir(plan, run)
    except FamilycError:
        tokenizer = None
    if folder is None or tokenizer is None:
        missing.append("held-out evaluation (this run's data has no held-out split familyc made)")
        return None, {}
    try:
        evaluator = Evaluator(plan, run, folder, tokenizer, max_tokens=max_tokens, part=part)
    except ImportError as exc:  # the planning-only install has no torch
        missing.append(f"held-out evaluation (needs the train extra: {exc.name})")
        return None, {}
    return evaluator, {"path": run.relative(folder), "part": part, "tokens": evaluator.heldout.tokens,
                       "documents": evaluator.heldout.documents}
