"""`familyc eval`: every trained member of a run (and its independent twin) through EleutherAI's lm-eval.

1. The run directory is opened and the models chosen: every progressive member whose train step completed,
   and, unless --no-baselines, every completed baseline (with --baselines at least one must be).
2. The tasks are resolved and their data loaded once (familyc.backend.lm_eval_runner.load_tasks): an unknown
   task, or one whose data is not cached on an offline machine, stops the command before anything is exported.
3. Each model is exported into RUN_DIR/eval/exports/<label>/ by familyc export's own code, unless the folder
   there is the export of these very weights (results.json names the weights it was made from, and its sidecar
   still verifies); then lm-eval's HFLM evaluates it on the CPU in fp32.
4. After each model, RUN_DIR/eval/results.json is rewritten (familyc.report.downstream): an interrupted run
   keeps what it finished. Results of tasks not asked for this time are kept while the weights are unchanged.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from familyc.backend.lm_eval_runner import DEVICE, DTYPE, TaskScore, evaluate_export, lm_eval_version, load_tasks
from familyc.checkpoint.sidecar import EXPORT_SIDECAR, verify_sidecar
from familyc.enums import COMPLETED
from familyc.errors import FamilycError
from familyc.execute.rundir import RunDir, open_existing
from familyc.execute.state import RunState
from familyc.files import atomic_write, sha256_file
from familyc.plan.ir import Plan
from familyc.plan.steps import TrainStep
from familyc.report.downstream import (
    EvalResults,
    ExportRef,
    MetricResult,
    ModelResult,
    TaskResult,
    eval_dir,
    label,
    read_results,
    write_results,
)
from familyc.report.quality import weights_of


@dataclass(frozen=True, kw_only=True, slots=True)
class Model:
    """One model to evaluate: a progressive member or its baseline twin."""

    member: str
    baseline: bool
    step: TrainStep

    @property
    def label(self) -> str:
        return label(self.member, baseline=self.baseline)

    @property
    def title(self) -> str:
        return f"{self.member} (baseline)" if self.baseline else self.member


def choose_models(plan: Plan, run: RunDir, state: RunState, *, baselines: bool | None) -> list[Model]:
    """Trained members, then trained baselines (None: those the run trained; True: they must exist)."""
    def done(step: TrainStep) -> bool:
        return state.steps.get(step.id) is not None and state.step(step.id).status == COMPLETED

    how = f"familyc apply {run.plan_path} --run-dir {run.root}"
    members = [Model(member=m.name, baseline=False, step=plan.train_step(m.name)) for m in plan.members]
    models = [m for m in members if done(m.step)]
    if not models:
        raise FamilycError(f"{run.root}: no member is trained yet", hint=f"train the family first: {how}")
    if baselines is not False:
        twins = [Model(member=b.name, baseline=True, step=b.train) for b in plan.baseline.members]
        trained = [m for m in twins if done(m.step)]
        if baselines and not trained:
            raise FamilycError(f"--baselines: {run.root} has no baseline trained",
                               hint=f"train them first: {how} --baselines; or leave out --baselines")
        models += trained
    return models


def run_eval(run_dir: Path, *, tasks: Sequence[str], include_path: Path | None, limit: int | None,
             batch_size: int, baselines: bool | None, progress: Callable[[str], None]) -> EvalResults:
    """Evaluate every chosen model of the run on `tasks`; the results file as written at the end."""
    run, plan, state = open_existing(run_dir)
    models = choose_models(plan, run, state, baselines=baselines)
    names = tuple(dict.fromkeys(tasks))
    task_set = load_tasks(names, include_path, announce=progress)
    version = lm_eval_version()
    previous = read_results(run)
    if previous is not None and previous.plan_id != plan.plan_id:
        previous = None
    results = previous or EvalResults(plan_id=plan.plan_id, family=plan.family.name, lm_eval_version=version,
                                      device=DEVICE, dtype=DTYPE, tasks=())
    for index, model in enumerate(models, start=1):
        progress(f"[{index}/{len(models)}] eval {model.title}: {len(names)} task{'s' if len(names) != 1 else ''}...")
        started = time.monotonic()
        earlier = (results.baselines if model.baseline else results.members).get(model.member)
        digest = weights_of(plan, run, model.step).digest()
        folder, export = _export(plan, run, model, digest, earlier, progress)
        scores = evaluate_export(folder, task_set, limit=limit, batch_size=batch_size)
        kept = earlier.tasks if earlier is not None and earlier.weights_sha256 == digest else {}
        fresh = {name: _task_result(run, model, score, limit=limit, version=version) for name, score in scores.items()}
        result = ModelResult(member=model.member, step=model.step.id, weights_sha256=digest, export=export,
                             tasks=dict(sorted({**kept, **fresh}.items())))
        results = _with(results, model, result, version=version)
        write_results(run, results)
        progress(f"      {model.title}: " + "; ".join(_summary(name, s.metrics) for name, s in fresh.items())
                 + f" ({time.monotonic() - started:.1f} s)")
    return results


def _export(plan: Plan, run: RunDir, model: Model, digest: str, earlier: ModelResult | None,
            progress: Callable[[str], None]) -> tuple[Path, ExportRef]:
    """The model's export under eval/exports/: the one there if it is of these weights and verifies, else a new one."""
    from familyc.report.export import export_run_member

    folder = eval_dir(run) / "exports" / model.label
    sidecar = folder / EXPORT_SIDECAR
    if (earlier is not None and earlier.weights_sha256 == digest and sidecar.is_file()
            and sha256_file(sidecar) == earlier.export.sidecar_sha256 and not verify_sidecar(folder, kind="export")):
        return folder, earlier.export
    if folder.exists() or folder.is_symlink():  # an export of other weights, or one of unknown origin: redone
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        else:
            folder.unlink()
    folder.parent.mkdir(parents=True, exist_ok=True)
    export_run_member(run.root, model.member, folder, baseline=model.baseline, dtype="float32")
    progress(f"      exported {model.title} -> {run.relative(folder)}")
    return folder, ExportRef(path=run.relative(folder), sidecar_sha256=sha256_file(sidecar))


def _task_result(run: RunDir, model: Model, score: TaskScore, *, limit: int | None, version: str) -> TaskResult:
    path = eval_dir(run) / "samples" / model.label / f"{score.task.replace('/', '_')}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(json.dumps(s, sort_keys=True) + "\n" for s in score.samples))
    return TaskResult(metrics={k: MetricResult(value=m.value, stderr=m.stderr) for k, m in score.metrics.items()},
                      higher_is_better=score.higher_is_better, output_type=score.output_type,
                      num_samples=score.num_samples, num_fewshot=score.num_fewshot, limit=limit,
                      config_sha256=score.config_sha256, samples=run.relative(path), lm_eval_version=version)


def _with(results: EvalResults, model: Model, result: ModelResult, *, version: str) -> EvalResults:
    members, twins = dict(results.members), dict(results.baselines)
    (twins if model.baseline else members)[model.member] = result
    tasks = sorted({t for r in (*members.values(), *twins.values()) for t in r.tasks})
    return EvalResults(plan_id=results.plan_id, family=results.family, lm_eval_version=version,
                       device=results.device, dtype=results.dtype, tasks=tuple(tasks), members=members,
                       baselines=twins)


def _summary(task: str, metrics: dict[str, MetricResult]) -> str:
    shown = [f"{k} {m.value:.4f}" + (f" ± {m.stderr:.4f}" if m.stderr is not None else "")
             for k, m in list(metrics.items())[:2]]
    return f"{task} " + ", ".join(shown)
