"""Golden-file tests for `familyc validate`: one case per file, no case in code.

Cases live in tests/fixtures/specs/:

    invalid/NAME.yaml   a spec with one family of mistakes (a comment on its first line says which)
    valid/NAME.yaml     a spec that must validate, exercising options
    */NAME.expected     exactly what `familyc validate DIR/NAME.yaml` prints: stdout and stderr
                        interleaved as a terminal shows them, colour off, 160 columns, then the
                        exit code on a last line of its own, `exit N`

The real CLI runs in-process (typer's CliRunner on `familyc.cli.app`) with tests/fixtures/specs/
as the working directory, so paths print as `invalid/NAME.yaml` wherever the checkout is.

Two tests per case: `test_golden` compares the output with NAME.expected byte for byte;
`test_contract` checks what must hold whatever the wording: invalid specs exit 1 and valid ones
0, nothing prints a traceback or an internal error, every diagnostic reads
`FILE:LINE:COL: $.json.path: message` on one line, hints are indented `  hint: ` lines, and the
last line counts the problems. Known violations are listed in KNOWN_ISSUES as strict xfails, so
fixing one makes its test XPASS (fail) until the entry is removed.

A new case is a new file: add NAME.yaml under invalid/ or valid/, then regenerate the goldens
from the current behaviour and review the diff before committing it (in its own commit):

    FAMILYC_REGENERATE_GOLDENS=1 .venv/bin/pytest tests/test_validate_golden.py

Regenerating rewrites every NAME.expected (and deletes any .expected whose .yaml is gone).
Some fixtures are deliberately not UTF-8 text; see fixtures/specs/.gitattributes.
"""

from __future__ import annotations

import os
import re
import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner

from familyc.cli import app

FIXTURES = Path(__file__).parent / "fixtures" / "specs"
REGENERATE = os.environ.get("FAMILYC_REGENERATE_GOLDENS", "") not in ("", "0")
REGENERATE_COMMAND = "FAMILYC_REGENERATE_GOLDENS=1 .venv/bin/pytest tests/test_validate_golden.py"

ENV = {
    "NO_COLOR": "1",  # rich: no ANSI styles
    "COLUMNS": "160",  # the CLI's width when not writing to a terminal (its default, pinned)
    "FORCE_COLOR": None,  # None unsets: a developer's shell must not change the goldens
    "TTY_COMPATIBLE": None,
    "TTY_INTERACTIVE": None,
}

DIAGNOSTIC = re.compile(r"^[^:]+:\d+:\d+: \$[^:]*: ")
LOCATION = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): ")
SUMMARY = re.compile(r"^(?P<count>\d+) problems? found( \(the semantic checks run once these are fixed\))?$")

KNOWN_ISSUES: dict[str, str] = {}


def _cases() -> list[str]:
    kinds = ("invalid", "valid")
    return sorted(f"{p.parent.name}/{p.stem}" for kind in kinds for p in (FIXTURES / kind).glob("*.yaml"))


CASES = _cases()


def _params(with_known_issues: bool) -> list[object]:
    out = []
    for case in CASES:
        marks = []
        if with_known_issues and case in KNOWN_ISSUES:
            marks.append(pytest.mark.xfail(reason=KNOWN_ISSUES[case], strict=True))
        out.append(pytest.param(case, id=case, marks=marks))
    return out


def run_validate(case: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """What `familyc validate CASE.yaml` prints, run from the fixtures directory, then `exit N`."""
    monkeypatch.chdir(FIXTURES)
    result = CliRunner().invoke(app, ["validate", f"{case}.yaml"], env=ENV, catch_exceptions=True)
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        # An exception escaped the CLI's error boundary: put its traceback into the output,
        # so that the golden shows it and the no-traceback assertions fail.
        text += "".join(traceback.format_exception(*result.exc_info))
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{text}exit {result.exit_code}\n"


def golden_path(case: str) -> Path:
    return FIXTURES / f"{case}.expected"


def test_fixtures_exist() -> None:
    assert sum(c.startswith("invalid/") for c in CASES) >= 40
    assert sum(c.startswith("valid/") for c in CASES) >= 6


def test_every_golden_has_a_case() -> None:
    orphans = sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*.expected")
                     if f"{p.parent.name}/{p.stem}" not in CASES)
    if orphans and REGENERATE:
        for orphan in orphans:
            (FIXTURES / orphan).unlink()
        return
    assert not orphans, f".expected files without a .yaml case: {orphans}; delete them or run {REGENERATE_COMMAND}"


@pytest.mark.parametrize("case", _params(with_known_issues=False))
def test_golden(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    actual = run_validate(case, monkeypatch)
    path = golden_path(case)
    if REGENERATE:
        path.write_text(actual, encoding="utf-8", newline="\n")
    assert "Traceback" not in actual
    assert path.exists(), f"no golden {path.name}: run {REGENERATE_COMMAND}"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"validate's output for {case}.yaml changed; if intended, run {REGENERATE_COMMAND}"


@pytest.mark.parametrize("case", _params(with_known_issues=True))
def test_contract(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    output = run_validate(case, monkeypatch)
    lines = output.splitlines()
    shown = f"{case}.yaml"
    assert "Traceback" not in output
    assert "internal error" not in output
    *body, exit_line = lines
    if case.startswith("valid/"):
        assert exit_line == "exit 0", output
        assert len(body) == 1 and re.fullmatch(
            rf"{re.escape(shown)}: valid \(\d+ members?, \d+ training stages?, \d+ growth steps?\)", body[0]
        ), output
        return

    assert exit_line == "exit 1", output
    assert body, output
    *report, summary = body
    match = SUMMARY.match(summary)
    assert match, f"the last line before `exit` should count the problems: {summary!r}"
    source_lines = (FIXTURES / shown).read_bytes().count(b"\n") + 1
    diagnostics = 0
    for line in report:
        if line.startswith("  hint: "):
            assert diagnostics, f"a hint before any diagnostic: {line!r}"
            assert line.strip() != "hint:", f"an empty hint: {line!r}"
            continue
        assert DIAGNOSTIC.match(line), f"not FILE:LINE:COL: $.path: message: {line!r}"
        where = LOCATION.match(line)
        assert where and where["file"] == shown, f"the file should print as {shown}: {line!r}"
        assert 1 <= int(where["line"]) <= source_lines, f"line out of the file's range: {line!r}"
        assert int(where["col"]) >= 1, line
        diagnostics += 1
    assert diagnostics == int(match["count"]), output
