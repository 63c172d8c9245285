"""familyc doctor's result: one Check per line, and its two renderers (text for people, JSON for scripts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "warn", "FAIL"]
"""ok; warn: it runs, but not as planned; FAIL: apply would refuse, or the run would fail (a blocker)."""
STATUSES: tuple[Status, ...] = ("ok", "warn", "FAIL")
SCHEMA_VERSION = 1
"""Of `familyc doctor --format json`'s object; a change to its keys bumps it."""
NAME_WIDTH = 11
"""The widest check name (`accelerator`, `train extra`): the text output's second column."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    name: str
    """What is checked: `torch`, `disk`, `tokenizer`, ..."""
    status: Status
    found: str
    """What the check found, in one line."""
    hint: str = ""
    """What to do about a warn or a FAIL; empty when the line says it all."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DoctorReport:
    target: str | None
    """The plan or spec checked against; None: the environment only."""
    title: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """No blocker (warnings allowed)."""
        return all(c.status != "FAIL" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}


def doctor_text(report: DoctorReport) -> str:
    """One line per check (`STATUS  NAME  what it found`), a hint under a warn or a FAIL, then the counts."""
    lines = [report.title]
    for check in report.checks:
        lines.append(f"{check.status:<4}  {check.name:<{NAME_WIDTH}}  {check.found}")
        if check.hint:
            lines.append(f"{'':<4}  {'':<{NAME_WIDTH}}  hint: {check.hint}")
    counts = report.counts()
    verdict = "nothing blocks the run" if report.ok else "fix the FAIL lines first"
    if report.target is None:
        verdict = "the environment is ready" if report.ok else "fix the FAIL lines first"
    lines.append(f"{counts['ok']} ok, {counts['warn']} warn, {counts['FAIL']} FAIL: {verdict}")
    return "\n".join(lines) + "\n"


def doctor_data(report: DoctorReport) -> dict[str, object]:
    return {"schema_version": SCHEMA_VERSION, "target": report.target, "ok": report.ok, "counts": report.counts(),
            "checks": [{"name": c.name, "status": c.status, "found": c.found, "hint": c.hint or None}
                       for c in report.checks]}
