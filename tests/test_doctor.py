"""familyc doctor: one line per check, ok / warn / FAIL, exit 1 on a FAIL; nothing is downloaded.

- the tiny plan passes on this CPU box (and its text output is a golden, with what varies between machines
  normalised: versions, CPU counts, sizes, plan ids, paths);
- the flagship spec fails here: no GPUs, and with an empty HF_HOME and HF_HUB_OFFLINE=1 its tokenizer and
  dataset are not in the cache (run in a fresh interpreter, where huggingface_hub reads that HF_HOME);
- a full disk, given to the checks as the function that reads free space;
- without the train extra each missing package is a FAIL line, not a crash;
- the pins the checks use are pyproject.toml's.

Regenerate the golden with FAMILYC_REGENERATE_GOLDENS=1 .venv/bin/pytest tests/test_doctor.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, assert_golden
from typer.testing import CliRunner

from familyc import units
from familyc.cli import app
from familyc.cli.app import TRAIN_EXTRA
from familyc.execute.doctor import PYTHON_PIN, TORCH_PIN, TORCHTITAN_PIN, doctor, satisfies
from familyc.execute.doctor_report import SCHEMA_VERSION, doctor_text
from familyc.plan.ir import read_plan

GOLDEN = REPO / "tests" / "fixtures" / "doctor" / "tiny.txt"
TINY = "plans/tiny.plan.json"
ENV = {"NO_COLOR": "1", "COLUMNS": "160", "HF_HUB_OFFLINE": None}
LINE = re.compile(r"^(ok|warn|FAIL) +(\S+( extra)?) +\S")
needs_train_extra = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in TRAIN_EXTRA),
                                       reason="needs the train extra")


def statuses(output: str) -> dict[str, list[str]]:
    """{check name: [status, ...]} of the text output's check lines."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        match = LINE.match(line)
        if match:
            found.setdefault(match[2], []).append(match[1])
    return found


def normalised(text: str, tmp: Path) -> str:
    """The text output with what differs between machines and runs replaced by placeholders."""
    text = text.replace(str(tmp), "<tmp>")
    text = re.sub(r"^(ok|warn|FAIL)( +)(python|torch|torchtitan|triton)( +)\S+", r"\1\2\3\4<version>", text,
                  flags=re.M)
    text = re.sub(r"\b(tokenizers|matplotlib|tensorboard|wandb) \d\S*?(?=,|$)", r"\1 <version>", text, flags=re.M)
    text = re.sub(r"\b\d+ CPUs\b", "<n> CPUs", text)
    text = re.sub(r"\b\d+(\.\d+)? (GiB|MiB)\b", "<size>", text)
    text = re.sub(r"\b[0-9a-f]{16}\b", "<plan id>", text)
    text = re.sub(r"the Hugging Face cache \([^)]*\)", "the Hugging Face cache (<cache>)", text)
    return text


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["doctor", *args], env=ENV)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    return result.exit_code, result.output


# --- pins ------------------------------------------------------------------------------------------

def test_the_pins_are_pyprojects() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == PYTHON_PIN
    train = [r.replace(" ", "") for r in project["optional-dependencies"]["train"]]
    assert "torch" + ",".join(sorted(TORCH_PIN.split(","))) in ["torch" + ",".join(sorted(r[5:].split(",")))
                                                                   for r in train if r.startswith("torch>")]
    assert f"torchtitan{TORCHTITAN_PIN}" in train
    assert {"torch", "torchtitan", "triton"} <= set(TRAIN_EXTRA)


@pytest.mark.parametrize(("version", "pin", "ok"), [
    ("2.13.0+cpu", ">=2.11,<2.14", True), ("2.11.0", ">=2.11,<2.14", True), ("2.14.0", ">=2.11,<2.14", False),
    ("2.10.1+cu126", ">=2.11,<2.14", False), ("0.2.2", "==0.2.2", True), ("0.2.3", "==0.2.2", False),
    ("3.11.7", ">=3.11", True), ("3.10.14", ">=3.11", False), ("2.14.0.dev20260101", "<2.14", False),
])
def test_version_pins(version: str, pin: str, ok: bool) -> None:
    assert satisfies(version, pin) is ok


# --- the tiny plan, here ----------------------------------------------------------------------------

@needs_train_extra
def test_the_tiny_plan_passes_on_this_box(in_repo: Path, tmp_path: Path) -> None:
    code, output = run([TINY, "--run-dir", str(tmp_path / "run")])
    assert code == 0, output
    found = statuses(output)
    assert set(found) == {"plan", "python", "torch", "torchtitan", "triton", "train extra", "accelerator", "disk",
                          "offline", "tokenizer", "data"}, output
    assert all(s == ["ok"] for s in found.values()), output
    assert output.splitlines()[-1] == "11 ok, 0 warn, 0 FAIL: nothing blocks the run"
    assert_golden(GOLDEN, normalised(output, tmp_path))


@needs_train_extra
def test_json_has_the_same_checks(in_repo: Path, tmp_path: Path) -> None:
    code, output = run([TINY, "--run-dir", str(tmp_path / "run"), "--format", "json"])
    report = json.loads(output)
    assert code == 0 and report["ok"] is True
    assert set(report) == {"schema_version", "target", "ok", "counts", "checks"}
    assert report["schema_version"] == SCHEMA_VERSION and report["target"] == TINY
    assert report["counts"] == {"ok": len(report["checks"]), "warn": 0, "FAIL": 0}
    for check in report["checks"]:
        assert set(check) == {"name", "status", "found", "hint"} and check["status"] == "ok"


def test_the_environment_alone(in_repo: Path) -> None:
    code, output = run([])
    assert output.startswith("familyc doctor: the environment (no plan)\n")
    assert {"python", "torch", "accelerator", "offline"} <= set(statuses(output))
    assert "disk" not in statuses(output) and "tokenizer" not in statuses(output)
    blocked = any("FAIL" in found for found in statuses(output).values())
    assert code == (1 if blocked else 0)


def test_a_missing_target_is_a_usage_error(in_repo: Path) -> None:
    code, output = run(["plans/nowhere.plan.json"])
    assert code == 2 and output.startswith("error: plans/nowhere.plan.json: no such file")


# --- a full disk ------------------------------------------------------------------------------------

def test_a_full_disk_fails(in_repo: Path, tmp_path: Path) -> None:
    plan = read_plan(REPO / TINY)
    need = max(plan.disk_bytes(s) for s in plan.train_steps())
    report = doctor(plan, plan_file=REPO / TINY, target=TINY, run_dir=tmp_path / "run", free_bytes=lambda _: 1024)
    (disk,) = [c for c in report.checks if c.name == "disk"]
    assert disk.status == "FAIL" and not report.ok
    assert disk.found.startswith(f"0.0 MiB free at {tmp_path / 'run'} (not made yet: the disk of {tmp_path})")
    assert disk.found.endswith(f"needs {units.gib(need)}")
    assert disk.hint == "free disk space, or use another --run-dir"
    assert "FAIL  disk" in doctor_text(report)


def test_the_disk_check_reads_where_the_run_will_be(tmp_path: Path) -> None:
    plan = read_plan(REPO / TINY)
    need = max(plan.disk_bytes(s) for s in plan.train_steps())
    asked: list[Path] = []

    def free(path: Path) -> int:
        asked.append(path)
        return need  # just enough for the largest stage, not for the members kept beside it

    report = doctor(plan, plan_file=REPO / TINY, run_dir=tmp_path / "a" / "b", free_bytes=free)
    (disk,) = [c for c in report.checks if c.name == "disk"]
    assert asked == [tmp_path]
    assert disk.status == "warn" and "the members kept before it" in disk.found


# --- the flagship, here -----------------------------------------------------------------------------

def test_the_flagship_fails_here_offline_with_an_empty_cache(tmp_path: Path) -> None:
    home = tmp_path / "hf"
    home.mkdir()
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-m", "familyc", "doctor", "specs/llama_1b_8b.yaml", "--format", "json",
                           "--run-dir", str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["accelerator"]["status"] == "FAIL"  # no GPUs here, or fewer than the plan's 8 per node
    assert checks["offline"]["found"].startswith("offline mode is on (HF_HUB_OFFLINE=1)")
    assert str(home) in checks["offline"]["found"]
    assert checks["tokenizer"]["status"] == "FAIL"
    assert checks["tokenizer"]["found"] == "hf meta-llama/Meta-Llama-3-8B: not in the cache, and offline mode is on"
    assert "hf download meta-llama/Meta-Llama-3-8B" in checks["tokenizer"]["hint"]
    assert checks["data"]["status"] == "FAIL" and "not in the cache" in checks["data"]["found"]
    assert not any(home.rglob("*.json")), "nothing was downloaded"


# --- without the train extra ------------------------------------------------------------------------

def test_without_the_train_extra_each_package_is_a_fail_line(in_repo: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for module in TRAIN_EXTRA:
        monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    code, output = run([TINY, "--run-dir", str(tmp_path / "run")])
    assert code == 1, output
    found = statuses(output)
    assert found["torch"] == ["FAIL"] and found["torchtitan"] == ["FAIL"] and found["triton"] == ["FAIL"]
    assert found["train extra"] == ["FAIL"] and found["disk"] == ["ok"] and found["data"] == ["ok"]
    assert "FAIL  torch        not installed (the train extra)" in output
    assert "hint: pip install -e '.[train]' torch==2.13.0" in output
