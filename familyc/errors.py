"""familyc's errors: one flat hierarchy, each error carrying where the problem is.

A `Diagnostic` is one located problem in an input file (a spec, a plan). A `FamilycError` is
what a command raises when it cannot go on; the CLI's single error boundary turns it into a
red line and an exit code, never a traceback (unless `--debug`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Diagnostic:
    """One problem in an input file, located as precisely as we can."""

    code: str
    """Stable identifier of the kind of problem, e.g. `schema`, `unknown-key`, `yaml-syntax`."""
    file: str
    """The file as the user named it."""
    path: str
    """JSON path of the offending value, `$` for the document itself."""
    line: int
    """1-based line; 0 when the problem has no place in the text (an empty file)."""
    col: int
    """1-based column; 0 when unknown."""
    message: str
    hint: str = ""
    """What to do about it; empty when the message says it all."""

    def format(self) -> str:
        """`FILE:LINE:COL: $.json.path: message`, then the hint indented on its own line."""
        head = f"{self.file}:{self.line}:{self.col}: {self.path}: {self.message}"
        return f"{head}\n  hint: {self.hint}" if self.hint else head

    def sort_key(self) -> tuple[int, int, str, str]:
        return (self.line, self.col, self.path, self.message)


class FamilycError(Exception):
    """A problem the user can act on. `exit_code` follows the CLI contract (1: problems found)."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(FamilycError):
    """The command was called wrongly (a missing file, clashing options): exit 2."""

    exit_code = 2


class SpecError(FamilycError):
    """A spec that does not validate; carries every diagnostic found, best first."""

    def __init__(self, diagnostics: list[Diagnostic], *, more_checks_pending: bool = False) -> None:
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        count = len(self.diagnostics)
        pending = " (the semantic checks run once these are fixed)" if more_checks_pending else ""
        super().__init__(f"{count} problem{'s' if count != 1 else ''} found{pending}")
        self.more_checks_pending = more_checks_pending


class PlanError(FamilycError):
    """A plan that is malformed, tampered with, stale, or cannot be built (it does not fit, …)."""


class StepError(FamilycError):
    """A step of a run failed; names the step and where its log is."""

    def __init__(self, step_id: str, message: str, *, log: str = "", hint: str = "") -> None:
        where = f" (log: {log})" if log else ""
        super().__init__(f"step {step_id} failed: {message}{where}", hint=hint)
        self.step_id = step_id
        self.log = log


_MAX_LINES = 12
"""Problems shown of a longer list (the rest are counted)."""


class CheckpointError(FamilycError):
    """A checkpoint that cannot be read or written; every line names the file and, where there is one, the key."""

    def __init__(self, problems: str | Sequence[str], *, hint: str = "") -> None:
        lines = [problems] if isinstance(problems, str) else list(problems)
        shown = lines[:_MAX_LINES]
        if len(lines) > _MAX_LINES:
            shown.append(f"(and {len(lines) - _MAX_LINES} more problems)")
        super().__init__("\n".join(shown), hint=hint)
        self.problems = tuple(lines)


class ExpansionError(FamilycError):
    """A growth the operators cannot perform, or a source state dict that does not fit the source shape."""


class MissingExtraError(FamilycError):
    """A command needs packages of an optional extra that is not installed (the planning-only install)."""
