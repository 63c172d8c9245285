"""Guard tests for the architecture: the planning half of familyc never imports torch or torchtitan.

`validate`, `plan`, `show`, `diff` and `schema` must work on a machine without torch (a CI job
without GPUs reviews plans) and stay fast. The first test runs them in a fresh interpreter,
where nothing else can have imported torch, and inspects sys.modules afterwards. The second
scans the source: only familyc/backend/ may import torchtitan.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "familyc"
SPECS = ("specs/tiny.yaml", "specs/llama_1b_8b.yaml")
FORBIDDEN = ("torch", "torchtitan")

_PROBE = r"""
import json, sys
from pathlib import Path

import familyc.cli
from familyc.cli import app
from typer.testing import CliRunner

out = Path(sys.argv[1])
specs = sys.argv[2:]
runner = CliRunner()
codes = {}

def run(*args):
    result = runner.invoke(app, list(args))
    codes[" ".join(args)] = [result.exit_code, result.output[-2000:]]

plans = []
for i, spec in enumerate(specs):
    plan_file = str(out / f"plan{i}.json")
    plans.append(plan_file)
    run("validate", spec)
    run("plan", spec)
    run("plan", spec, "--format", "json")
    run("plan", spec, "--format", "markdown")
    run("plan", spec, "-o", plan_file)
    run("plan", spec, "--check", plan_file)
    run("show", plan_file)
    run("show", plan_file, "--format", "json")
    run("show", plan_file, "--format", "markdown")
run("validate", *specs)
run("validate", "--format", "json", *specs)
run("diff", plans[0], plans[0])
run("diff", plans[0], plans[-1])
run("diff", plans[0], plans[-1], "--format", "markdown")
run("diff", plans[0], plans[-1], "--format", "json")
run("schema")

loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "torchtitan"))
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


def test_planning_commands_do_not_import_torch(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path), *SPECS],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = {cmd: code_and_output for cmd, code_and_output in report["codes"].items() if code_and_output[0] != 0}
    assert not failed, failed
    assert report["loaded"] == [], f"the planning commands imported {report['loaded']}"


def test_the_probe_can_see_torch(tmp_path: Path) -> None:
    """The probe is not vacuous: importing torch in the same way does show up in sys.modules."""
    pytest.importorskip("torch")
    code = "import sys, torch; print(sorted(n for n in sys.modules if n.split('.')[0] == 'torch')[:1])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['torch']"


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import, and of importlib.import_module / __import__ with a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _sources_outside_backend() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "backend" not in p.relative_to(PACKAGE).parts[:1])


def test_only_the_backend_imports_torchtitan() -> None:
    sources = _sources_outside_backend()
    assert len(sources) > 10, "the scan found too few modules; is PACKAGE right?"
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in sources
        for line, module in _imported_modules(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        if module == "torchtitan" or module.startswith("torchtitan.")
    ]
    assert not offenders, "\n".join(offenders)


def test_the_scan_recognises_every_import_form() -> None:
    sample = (
        "import torchtitan\nimport os, torchtitan.train as t\nfrom torchtitan.models import llama3\n"
        "def f():\n    import importlib\n    importlib.import_module('torchtitan.config')\n"
        "    __import__('torchtitan')\nfrom . import torchtitan_names\n"
    )
    modules = sorted(_imported_modules(ast.parse(sample)))
    assert [m for _, m in modules if m.split(".")[0] == "torchtitan"] == [
        "torchtitan", "torchtitan.train", "torchtitan.models", "torchtitan.config", "torchtitan"]
