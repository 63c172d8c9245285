"""The typer app, its consoles and the single error boundary.

Exit codes are a contract: 0 ok, 1 problems found (an invalid spec, a stale plan, a failed
step), 2 usage (a missing file, clashing options). A FamilycError becomes one red line with
its hint; anything else becomes an "internal error" line. `--debug` shows the traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from familyc.errors import FamilycError, SpecError

app = typer.Typer(
    name="familyc",
    help="Plan, train and report a family of language models grown progressively (arXiv 2504.00623).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


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


def command(fn: F) -> F:
    """Wrap a command in the error boundary."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
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

    return wrapper  # type: ignore[return-value]


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
) -> None:
    _state["debug"] = debug
