"""`familyc validate --format json`: the machine-readable diagnostics a CI job (or an editor) reads.

Two kinds of test:
- goldens: `tests/fixtures/specs/*/NAME.json` is exactly what `familyc validate --format json DIR/NAME.yaml`
  prints, run from tests/fixtures/specs/ (as the text goldens are). A new case is a new file: create an empty
  NAME.json next to NAME.yaml, then regenerate and review the diff:

      FAMILYC_REGENERATE_GOLDENS=1 .venv/bin/pytest tests/test_validate_json.py

- the contract, for every fixture: the object has the documented keys and types, the exit code is the text
  output's, and its diagnostics are the text output's lines, one for one (file, line, column, path, message,
  hint), so the two formats cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import assert_golden
from test_validate_golden import CASES, ENV, FIXTURES, run_validate
from typer.testing import CliRunner

from familyc.cli import app
from familyc.cli.plan_commands import VALIDATE_SCHEMA_VERSION

GOLDENS = sorted(f"{p.parent.name}/{p.stem}" for p in FIXTURES.glob("*/*.json"))
FILE_KEYS = {"file": str, "valid": bool, "summary": str, "more_checks_pending": bool, "diagnostics": list,
             "warnings": list, "members": (int, type(None)), "training_stages": (int, type(None)),
             "growth_steps": (int, type(None))}
DIAGNOSTIC_KEYS = {"code": str, "file": str, "line": int, "column": int, "path": str, "message": str,
                   "hint": (str, type(None))}


def run_json(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `familyc validate --format json ARGS` run from the fixtures directory."""
    monkeypatch.chdir(FIXTURES)
    result = CliRunner().invoke(app, ["validate", "--format", "json", *args], env=ENV)
    return result.exit_code, result.stdout, result.stderr


def test_there_are_goldens() -> None:
    assert sum(c.startswith("invalid/") for c in GOLDENS) >= 2
    assert all(c in CASES for c in GOLDENS), f"a NAME.json without its NAME.yaml: {set(GOLDENS) - set(CASES)}"


@pytest.mark.parametrize("case", GOLDENS)
def test_golden(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, stdout, stderr = run_json([f"{case}.yaml"], monkeypatch)
    assert stderr == ""
    assert code == (0 if case.startswith("valid/") else 1)
    assert_golden(FIXTURES / f"{case}.json", stdout)


def _check_keys(obj: dict[str, Any], keys: dict[str, Any]) -> None:
    assert set(obj) == set(keys), obj
    for key, types in keys.items():
        assert isinstance(obj[key], types), (key, obj[key])


def _text_diagnostics(text: str) -> list[tuple[str, int, int, str, str, str | None]]:
    """(file, line, column, path, message, hint) of each diagnostic the text output prints."""
    found: list[tuple[str, int, int, str, str, str | None]] = []
    for line in text.splitlines()[:-2]:  # the count and `exit N` close it
        if line.startswith("  hint: "):
            file, row, col, path, message, _ = found[-1]
            found[-1] = (file, row, col, path, message, line.removeprefix("  hint: "))
            continue
        file, row, col, rest = line.split(":", 3)
        path, message = rest.removeprefix(" ").split(": ", 1)
        found.append((file, int(row), int(col), path, message, None))
    return found


@pytest.mark.parametrize("case", CASES)
def test_contract(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, stdout, stderr = run_json([f"{case}.yaml"], monkeypatch)
    text = run_validate(case, monkeypatch)
    assert stderr == ""
    assert text.endswith(f"exit {code}\n"), "the exit code is the text output's"
    report = json.loads(stdout)
    assert set(report) == {"schema_version", "valid", "files"}
    assert report["schema_version"] == VALIDATE_SCHEMA_VERSION
    (entry,) = report["files"]
    _check_keys(entry, FILE_KEYS)
    for diagnostic in entry["diagnostics"]:
        _check_keys(diagnostic, DIAGNOSTIC_KEYS)
    assert report["valid"] is entry["valid"] is (code == 0)
    assert entry["file"] == f"{case}.yaml"
    if entry["valid"]:
        assert entry["diagnostics"] == [] and entry["members"] >= 1
        assert text == f"{case}.yaml: {entry['summary']}\nexit 0\n"
        return
    assert text.splitlines()[-2] == entry["summary"]
    shown = [(d["file"], d["line"], d["column"], d["path"], d["message"], d["hint"]) for d in entry["diagnostics"]]
    assert shown == _text_diagnostics(text)


def test_several_files_in_one_object(monkeypatch: pytest.MonkeyPatch) -> None:
    code, stdout, _ = run_json(["valid/single_member.yaml", "invalid/enum_typos.yaml"], monkeypatch)
    report = json.loads(stdout)
    assert code == 1 and report["valid"] is False
    assert [(f["file"], f["valid"]) for f in report["files"]] == [
        ("valid/single_member.yaml", True), ("invalid/enum_typos.yaml", False)]


def test_a_missing_file_is_still_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    code, stdout, stderr = run_json(["valid/single_member.yaml", "nowhere.yaml"], monkeypatch)
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: nowhere.yaml: no such file")
