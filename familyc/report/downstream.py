"""Downstream evaluation's results file, and what `familyc report` shows of it. Torch-free.

    RUN_DIR/eval/results.json              this file (EvalResults), rewritten atomically after each model
    RUN_DIR/eval/exports/<member>/         the Hugging Face export lm-eval loaded (familyc export's folder)
    RUN_DIR/eval/exports/<member>-baseline/
    RUN_DIR/eval/samples/<label>/<task>.jsonl   lm-eval's logged samples: every request and its response

`familyc eval` (familyc.report.downstream_eval) writes it. Every model's result names the weights it was made
from (`weights_sha256`: the hash of the member sidecar's file hashes, the key of report/quality.json too) and
the export lm-eval read (its folder and the sha256 of its sidecar, which lists the sha256 of every file). A
member trained again after `familyc eval` no longer matches: the report leaves its results out and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from familyc import __version__
from familyc.enums import COMPLETED
from familyc.errors import CheckpointError, FamilycError
from familyc.execute.rundir import RunDir
from familyc.execute.state import RunState
from familyc.files import atomic_write
from familyc.plan.ir import Plan
from familyc.records import from_data, to_data
from familyc.render import Table
from familyc.report.quality import weights_of

RESULTS_SCHEMA_VERSION = 1
EVAL_DIR = "eval"
RESULTS_FILE = "results.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricResult:
    value: float
    stderr: float | None = None
    """lm-eval's standard error of the value; None where it gives none."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskResult:
    metrics: dict[str, MetricResult]
    """By lm-eval's metric name (`acc`, `acc_norm`, `perplexity`; `name,filter` unless the filter is `none`)."""
    higher_is_better: dict[str, bool]
    output_type: str
    num_samples: int
    num_fewshot: int
    limit: int | None
    """--limit: at most this many documents of the task (None: all)."""
    config_sha256: str
    """sha256 of lm-eval's resolved task configuration."""
    samples: str
    """The logged samples (JSON lines), relative to the run directory."""
    lm_eval_version: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportRef:
    path: str
    """The export folder lm-eval loaded, relative to the run directory."""
    sidecar_sha256: str
    """sha256 of its familyc-export.json (which lists every file's sha256)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelResult:
    member: str
    step: str
    """The train step whose weights these are."""
    weights_sha256: str
    """The weights exported: the hash of their sidecar's file hashes (familyc.report.quality.Weights.digest)."""
    export: ExportRef
    tasks: dict[str, TaskResult] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalResults:
    plan_id: str
    family: str
    lm_eval_version: str
    """The lm-eval that wrote the file last (each task's result names its own)."""
    device: str
    dtype: str
    tasks: tuple[str, ...]
    """Every task with a result, sorted."""
    members: dict[str, ModelResult] = field(default_factory=dict)
    """The progressive members, by name."""
    baselines: dict[str, ModelResult] = field(default_factory=dict)
    """The members trained from scratch (apply --baselines), by name."""
    familyc_version: str = __version__
    schema_version: int = RESULTS_SCHEMA_VERSION


def eval_dir(run: RunDir) -> Path:
    return run.root / EVAL_DIR


def results_path(run: RunDir) -> Path:
    return eval_dir(run) / RESULTS_FILE


def label(member: str, *, baseline: bool) -> str:
    """The folder name of a model under eval/exports/ and eval/samples/."""
    return f"{member}-baseline" if baseline else member


def read_results(run: RunDir) -> EvalResults | None:
    """RUN_DIR/eval/results.json, None when `familyc eval` has not run; FamilycError when it is unreadable."""
    path = results_path(run)
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FamilycError(f"{path}: unreadable ({exc})", hint="remove it and run familyc eval again") from None
    version = body.get("schema_version") if isinstance(body, dict) else None
    if version != RESULTS_SCHEMA_VERSION:
        raise FamilycError(f"{path}: schema_version {version!r} is not {RESULTS_SCHEMA_VERSION}",
                           hint="written by another familyc: run familyc eval again to rewrite it")
    return from_data(EvalResults, body, where=str(path))


def write_results(run: RunDir, results: EvalResults) -> None:
    atomic_write(results_path(run), json.dumps(to_data(results), indent=2) + "\n")


def is_current(plan: Plan, run: RunDir, state: RunState, result: ModelResult, *, baseline: bool) -> bool:
    """Whether `result` was made from the weights the run holds now for its member."""
    try:
        step = plan.train_step(result.member, baseline=baseline)
    except KeyError:
        return False
    if step.id != result.step or state.steps.get(step.id) is None or state.step(step.id).status != COMPLETED:
        return False
    try:
        return weights_of(plan, run, step).digest() == result.weights_sha256
    except CheckpointError:
        return False


# --- what the report shows --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class DownstreamRow:
    member: str
    task: str
    metric: str
    progressive: MetricResult | None
    independent: MetricResult | None
    higher_is_better: bool | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Downstream:
    """The current results of RUN_DIR/eval/results.json, one row per member, task and metric."""

    lm_eval_version: str
    tasks: tuple[str, ...]
    rows: tuple[DownstreamRow, ...]
    num_fewshot: dict[str, int]
    num_samples: dict[str, int]
    """Documents per task (the fewest any model was evaluated on)."""
    stale: tuple[str, ...]
    """Models whose results were left out: their weights changed since familyc eval."""

    def to_data(self) -> dict[str, object]:
        data: dict[str, object] = to_data(self)
        return data


def downstream(plan: Plan, run: RunDir, state: RunState) -> Downstream | None:
    """The report's view of the results file (None when familyc eval has not run)."""
    results = read_results(run)
    if results is None:
        return None
    current: dict[tuple[str, bool], ModelResult] = {}
    stale = []
    for baseline, models in ((False, results.members), (True, results.baselines)):
        for name, result in models.items():
            if is_current(plan, run, state, result, baseline=baseline):
                current[(name, baseline)] = result
            else:
                stale.append(label(name, baseline=baseline))
    rows = []
    fewshot: dict[str, int] = {}
    samples: dict[str, int] = {}
    for member in plan.members:
        prog, ind = current.get((member.name, False)), current.get((member.name, True))
        for task in results.tasks:
            scores = [r.tasks[task] for r in (prog, ind) if r is not None and task in r.tasks]
            if not scores:
                continue
            fewshot[task] = scores[0].num_fewshot
            samples[task] = min([samples.get(task, scores[0].num_samples), *(s.num_samples for s in scores)])
            metrics = list(dict.fromkeys(m for s in scores for m in s.metrics))
            for metric in metrics:
                better = next((s.higher_is_better.get(metric.split(",")[0]) for s in scores
                               if metric.split(",")[0] in s.higher_is_better), None)
                rows.append(DownstreamRow(
                    member=member.name, task=task, metric=metric, higher_is_better=better,
                    progressive=prog.tasks[task].metrics.get(metric) if prog and task in prog.tasks else None,
                    independent=ind.tasks[task].metrics.get(metric) if ind and task in ind.tasks else None))
    return Downstream(lm_eval_version=results.lm_eval_version, tasks=results.tasks, rows=tuple(rows),
                      num_fewshot=fewshot, num_samples=samples, stale=tuple(stale))


def downstream_table(found: Downstream) -> Table:
    """One row per member, task and metric: the progressive member's value and its independent twin's, each
    with lm-eval's standard error, and their difference."""
    def value(m: MetricResult | None) -> str:
        return "" if m is None else f"{m.value:.4f}"

    def stderr(m: MetricResult | None) -> str:
        return "" if m is None or m.stderr is None else f"{m.stderr:.4f}"

    def difference(row: DownstreamRow) -> str:
        """Progressive minus independent, and which is better where lm-eval says which way is."""
        if row.progressive is None or row.independent is None:
            return ""
        delta = row.progressive.value - row.independent.value
        if row.higher_is_better is None or delta == 0:
            return f"{delta:+.4f}"
        return f"{delta:+.4f} ({'better' if (delta > 0) == row.higher_is_better else 'worse'})"

    shots = sorted(set(found.num_fewshot.values()))
    setting = "/".join(str(n) for n in shots) + "-shot" if shots else ""
    return Table(
        title=f"Downstream evaluation (lm-eval {found.lm_eval_version}, {setting}, CPU fp32 on the Hugging Face "
              "exports): progressive vs independent, value ± standard error",
        headers=("member", "task", "documents", "metric", "progressive", "±", "independent", "±", "difference"),
        rows=tuple((r.member, r.task, str(found.num_samples.get(r.task, "")), r.metric, value(r.progressive),
                    stderr(r.progressive), value(r.independent), stderr(r.independent), difference(r))
                   for r in found.rows),
        right=frozenset({2, 4, 5, 6, 7, 8}))
