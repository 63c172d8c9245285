"""The typer app, its consoles and the single error boundary.

Exit codes are a contract: 0 ok, 1 problems found (an invalid spec, a stale plan, a failed
step), 2 usage (a missing file, clashing options). A FamilycError becomes one red line with
its hint; anything else becomes an "internal error" line. `--debug` shows the traceback.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from familyc.errors import FamilycError, MissingExtraError, SpecError

app = typer.Typer(
    name="familyc",
    help="Plan, train and report a family of language models grown progressively (arXiv 2504.00623).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}
P = ParamSpec("P")
R = TypeVar("R")

TRAIN_EXTRA = ("torch", "torchtitan", "triton", "tokenizers", "matplotlib")
"""The top-level modules of the `train` extra's packages (pyproject.toml)."""
TRAIN_INSTALL = "pip install -e '.[train]' torch==2.13.0"
"""How to install it (pin torch: an unpinned one pulls a multi-GB CUDA build)."""


def missing_train_extra(what: str, module: str) -> MissingExtraError:
    return MissingExtraError(f"{what} needs the train extra ({module} is not installed): {TRAIN_INSTALL}",
                             hint="the planning commands (validate, plan, show, diff, schema) work without it")


def require_train_extra(what: str) -> None:
    """Refuse, in one line with the install command, a command that needs torch when the extra is missing."""
    for module in TRAIN_EXTRA:
        if importlib.util.find_spec(module) is None:
            raise missing_train_extra(what, module)


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "160"))
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def out() -> Console:
    return _console(stderr=False)


def err() -> Console:
    return _console(stderr=True)


def report_error(exc: FamilycError) -> None:
    console = err()
    if isinstance(exc, SpecError):
        for diagnostic in exc.diagnostics:  # one line each, never wrapped: editors parse FILE:LINE:COL
            console.print(diagnostic.format(), markup=False, highlight=False, soft_wrap=True)
        console.print(f"{exc.message}", style="red", markup=False, soft_wrap=True)
        return
    console.print(f"error: {exc.message}", style="red", markup=False, soft_wrap=True)
    if exc.hint:
        console.print(f"  hint: {exc.hint}", markup=False, soft_wrap=True)


def command(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command in the error boundary."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            try:
                return fn(*args, **kwargs)
            except ModuleNotFoundError as exc:  # a lazy import of the train extra, on a planning-only install
                root = (exc.name or "").split(".")[0]
                if root not in TRAIN_EXTRA:
                    raise
                raise missing_train_extra(f"familyc {fn.__name__}", root) from exc
        except FamilycError as exc:
            if _state["debug"]:
                raise
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: say so plainly, keep the traceback for --debug
            if _state["debug"]:
                raise
            err().print(f"internal error: {type(exc).__name__}: {exc}", style="red", markup=False, soft_wrap=True)
            err().print("  hint: rerun with --debug for the traceback, and report it", markup=False, soft_wrap=True)
            raise typer.Exit(3) from None

    return wrapper


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
) -> None:
    _state["debug"] = debug
