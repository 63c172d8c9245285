"""EleutherAI's lm-evaluation-harness (lm_eval 0.4) on a member's Hugging Face export.

lm-eval's vocabulary (TaskManager, HFLM, simple_evaluate) stays in this module. Two calls:

- `load_tasks(names, include_path)`: the task set, checked before any model is exported or loaded. Task names
  are looked up in the include path's YAML definitions first (lm-eval's `TaskManager(include_path=...)`,
  without indexing its own ~15,000 definitions when every name is local) and then among lm-eval's own. Every
  task's data is loaded once here, so a task whose data is not cached (offline: HF_DATASETS_OFFLINE=1) stops
  the command at once, naming the task, before anything slow has run.
- `evaluate_export(folder, tasks, ...)`: one model, as lm-eval's HFLM loads the export (transformers'
  LlamaForCausalLM), on the CPU in fp32, BOS before every context (the members trained on documents that start
  with BOS). It returns each task's metrics with their standard errors and every logged sample (the requests'
  arguments and lm-eval's responses: a log-likelihood request's (sum log p(continuation | context), is greedy)).

lm-eval, transformers, datasets and accelerate log a great deal; their loggers are set to errors and what they
write to stderr (progress bars, warnings) is dropped while they run: familyc prints one line per model instead,
and an error still reaches the user as one FamilycError line (or, with --debug, its traceback).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from familyc.errors import FamilycError, UsageError

LM_EVAL_MODULES = ("lm_eval", "transformers", "accelerate")
"""The top-level modules of the `eval` extra's packages (pyproject.toml)."""
DEVICE = "cpu"
DTYPE = "float32"
_NOISY_LOGGERS = ("lm_eval", "transformers", "datasets", "accelerate", "huggingface_hub", "filelock", "fsspec")


def lm_eval_version() -> str:
    return metadata.version("lm_eval")


@dataclass(frozen=True, kw_only=True, slots=True)
class Metric:
    value: float
    stderr: float | None
    """lm-eval's standard error of the value (None where it gives none, "N/A")."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskScore:
    """One task's result for one model, as lm-eval reports it."""

    task: str
    output_type: str
    metrics: dict[str, Metric]
    """By lm-eval's metric name, with its filter after a comma unless the filter is `none` (`exact_match,flexible`)."""
    higher_is_better: dict[str, bool]
    num_samples: int
    """Documents evaluated (after --limit)."""
    num_fewshot: int
    config_sha256: str
    """sha256 of the task's resolved configuration (lm-eval's `configs` entry): a changed definition shows."""
    samples: tuple[dict[str, Any], ...]
    """Per document: doc_id, target, the requests' arguments, lm-eval's (filtered) responses, per-document metrics."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSet:
    names: tuple[str, ...]
    include_path: Path | None
    manager: Any
    """lm-eval's TaskManager that resolved the names."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lm-eval's and its libraries' logging and progress bars off while they run; restored afterwards."""
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    previous = {key: os.environ.get(key) for key in ("TQDM_DISABLE", "TRANSFORMERS_VERBOSITY")}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.update(TQDM_DISABLE="1", TRANSFORMERS_VERBOSITY="error")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # lm-eval's tqdm bars ask for disable=False explicitly
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_tasks(names: Sequence[str], include_path: Path | None, *,
               announce: Callable[[str], None] | None = None) -> TaskSet:
    """Resolve `names` with lm-eval's TaskManager and load each task's data once (refusals before any model runs).

    `announce(line)` is told when lm-eval's own task index is built (it reads every YAML file it ships: seconds)."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not include_path.is_dir():
        raise UsageError(f"--include-path {include_path}: not a directory",
                         hint="give a folder of lm-eval task definitions (YAML files with a `task:` name)")
    with quiet():
        manager = None
        if include_path is not None:
            manager = TaskManager(include_path=str(include_path), include_defaults=False)
        if manager is None or any(name not in manager.all_tasks for name in names):
            if announce is not None:
                announce("indexing lm-eval's own task definitions...")
            manager = TaskManager(include_path=str(include_path) if include_path else None)
        unknown = [name for name in names if name not in manager.all_tasks]
        if unknown:
            raise FamilycError(_unknown_message(unknown, manager.all_tasks, include_path),
                               hint="lm-eval's task names: python -m lm_eval ls tasks; a task of your own: a YAML "
                                    "definition in a folder given as --include-path")
        for name in names:
            try:
                manager.load([name])
            except Exception as exc:  # datasets and lm-eval raise many kinds; each means "cannot load this task"
                raise _data_error(name, exc) from None
    return TaskSet(names=tuple(names), include_path=include_path, manager=manager)


def _unknown_message(unknown: list[str], known: Sequence[str], include_path: Path | None) -> str:
    where = f"in {include_path} nor among lm-eval's" if include_path else "among lm-eval's"
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3)
        parts.append(name + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return f"no lm-eval task {'named' if len(unknown) == 1 else 'names'} {'; '.join(parts)} {where} task definitions"


def _data_error(name: str, exc: BaseException) -> FamilycError:
    import datasets.config

    offline = bool(datasets.config.HF_HUB_OFFLINE)  # HF_DATASETS_OFFLINE, else HF_HUB_OFFLINE, as datasets read them
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    if offline:
        return FamilycError(f"task {name}: its data is not in the Hugging Face cache and this machine is offline "
                            f"(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); lm-eval said {detail}",
                            hint="fetch it once where the network is reachable (the same command without the "
                                 "offline variables caches it), or evaluate a local task: a YAML definition with "
                                 "`dataset_path: json` and `dataset_kwargs: {data_files: ...}` in a folder given "
                                 "as --include-path")
    return FamilycError(f"task {name}: lm-eval cannot load its data ({detail})",
                        hint="check the task's dataset_path and data_files; --debug shows the traceback")


def evaluate_export(folder: Path, tasks: TaskSet, *, limit: int | None, batch_size: int) -> dict[str, TaskScore]:
    """Every task of `tasks` on the Hugging Face folder `folder` (lm-eval's HFLM, CPU, fp32); by task name."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    with quiet():
        try:
            model = HFLM(pretrained=str(folder), device=DEVICE, dtype=DTYPE, batch_size=batch_size,
                         add_bos_token=True, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise FamilycError(f"{folder}: lm-eval cannot load the export ({type(exc).__name__}: {exc})",
                               hint="remove the folder; familyc eval exports the member again") from None
        results = lm_eval.simple_evaluate(model=model, tasks=list(tasks.names), task_manager=tasks.manager,
                                          limit=limit, log_samples=True, batch_size=batch_size)
    if results is None:  # simple_evaluate returns None on ranks other than 0; there is one rank here
        raise FamilycError(f"lm-eval returned no results for {folder}")
    return {name: _score(name, results) for name in results["results"]}


def _score(name: str, results: dict[str, Any]) -> TaskScore:
    row = results["results"][name]
    metrics: dict[str, Metric] = {}
    for key, value in row.items():
        if "," not in key or "_stderr," in key or not isinstance(value, int | float):
            continue
        metric, filter_name = key.split(",", 1)
        stderr = row.get(f"{metric}_stderr,{filter_name}")
        label = metric if filter_name == "none" else f"{metric},{filter_name}"
        metrics[label] = Metric(value=float(value),
                                stderr=float(stderr) if isinstance(stderr, int | float) else None)
    config = results.get("configs", {}).get(name, {})
    counts = results.get("n-samples", {}).get(name, {})
    better = results.get("higher_is_better", {}).get(name, {}) or {}
    samples = tuple(_sample(s) for s in results.get("samples", {}).get(name, ()))
    names = {m.split(",")[0] for m in metrics}
    return TaskScore(task=name, output_type=str(config.get("output_type", "")), metrics=metrics,
                     higher_is_better={k: bool(v) for k, v in better.items() if k in names},
                     num_samples=int(counts.get("effective", len(samples))),
                     num_fewshot=int(results.get("n-shot", {}).get(name, 0) or 0),
                     config_sha256=hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest(),
                     samples=samples)


def _sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A logged sample, as plain JSON: the document's id and target, every request's arguments and response."""
    keep = {"doc_id": sample.get("doc_id"), "target": sample.get("target"),
            "arguments": sample.get("arguments"), "responses": sample.get("filtered_resps"),
            **{m: sample.get(m) for m in sample.get("metrics", ())}}
    plain: dict[str, Any] = json.loads(json.dumps(keep, default=str))
    return plain
