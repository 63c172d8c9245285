"""familyc eval: every trained member (and baseline) of a run through EleutherAI's lm-evaluation-harness."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from familyc.cli.app import app, command, err, out, require_train_extra
from familyc.errors import MissingExtraError, UsageError

EVAL_EXTRA = ("lm_eval", "transformers", "accelerate")
"""The top-level modules of the `eval` extra's packages (pyproject.toml)."""
EVAL_INSTALL = "pip install -e '.[train,eval]' torch==2.13.0"
DEFAULT_TASKS = ("arc_easy", "hellaswag", "piqa", "lambada_openai")
"""Zero-shot tasks small models are usually compared on (their data comes from the Hugging Face Hub)."""


def require_eval_extra(what: str) -> None:
    """Refuse, in one line with the install command, when lm-eval (or what its HFLM needs) is missing."""
    for module in EVAL_EXTRA:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(f"{what} needs the eval extra ({module} is not installed): {EVAL_INSTALL}",
                                    hint="familyc report shows what an earlier familyc eval wrote without it")


def task_names(tasks: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in tasks.split(",") if t.strip())
    if not names:
        raise UsageError(f"--tasks {tasks!r}: no task named", hint="give lm-eval task names, comma-separated")
    return names


@app.command(name="eval")
@command
def eval_(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="The run directory of familyc apply.",
                                   show_default=False),
    tasks: str = typer.Option(",".join(DEFAULT_TASKS), "--tasks",
                              help="lm-eval task names, comma-separated (their data must be cached when offline)."),
    include_path: Path | None = typer.Option(None, "--include-path",
                                                help="A folder of lm-eval task definitions (YAML), e.g. local "
                                                     "tasks on local data for offline use.", show_default=False),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N documents per task.",
                                        show_default=False),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Requests per forward pass."),
    baselines: bool | None = typer.Option(None, "--baselines/--no-baselines",
                                             help="Evaluate the members trained from scratch too (default: when "
                                                  "the run trained them).", show_default=False),
) -> None:
    """Evaluate every trained member (and baseline) on lm-eval tasks; results in RUN_DIR/eval/results.json."""
    require_train_extra("familyc eval")
    require_eval_extra("familyc eval")
    from familyc.execute.rundir import RunDir
    from familyc.report.downstream import results_path
    from familyc.report.downstream_eval import run_eval

    console = err()
    results = run_eval(run_dir, tasks=task_names(tasks), include_path=include_path, limit=limit,
                       batch_size=batch_size, baselines=baselines,
                       progress=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    count = len(results.members) + len(results.baselines)
    out().print(f"wrote {results_path(RunDir(run_dir))}: {count} model{'s' if count != 1 else ''}, "
                f"{len(results.tasks)} task{'s' if len(results.tasks) != 1 else ''} (lm-eval "
                f"{results.lm_eval_version}); familyc report {run_dir} shows them", markup=False)
