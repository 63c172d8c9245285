"""`familyc apply` refuses what it must not run, and stops cleanly at a failing stage.

Refusals run in this process (typer's CliRunner) and train nothing: each is exit 1 (2 for a usage
error) with one `error:` line, and leaves no run directory behind (or the existing one as it was).
The failing stage is real: a two-member family whose second member diverges to a NaN loss under an
absurd learning rate and weight decay (the first stage trains normally), run twice as a user would.
About 50 seconds on 2 cores.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("torch", reason="familyc apply needs the train extra (pip install -e '.[train]')")
pytest.importorskip("torchtitan.train", reason="torchtitan (and triton, which it imports) is not installed")

from familyc.cli import app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAMILY = REPO / "tests" / "fixtures" / "specs-apply" / "family.yaml"
PAIR = REPO / "tests" / "fixtures" / "specs-apply" / "pair.yaml"
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "160"})
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def one_error(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "started (" not in output and "growing" not in output, output
    return errors[0]


def spec_copy(folder: Path, source: Path = FAMILY, **changes: Any) -> Path:
    """A copy of `source` in `folder`, with top-level sections updated."""
    data = yaml.safe_load(source.read_text())
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- refusals -----------------------------------------------------------------------------------

def test_a_plan_whose_spec_changed_since_planning_is_refused(tmp_path: Path, in_repo: Path) -> None:
    spec = spec_copy(tmp_path)
    code, output = invoke("plan", str(spec), "-o", str(tmp_path / "plan.json"))
    assert code == 0, output
    spec.write_text(spec.read_text().replace("mfu: 0.3", "mfu: 0.35"))
    code, output = invoke("apply", str(tmp_path / "plan.json"), "--yes", "--run-dir", str(tmp_path / "run"))
    assert code == 1
    assert re.search(r"error: .*spec\.yaml changed since plan [0-9a-f]{16} was made from it", one_error(output))
    assert "hint: re-plan" in output
    assert not (tmp_path / "run").exists()


def test_a_plan_edited_by_hand_is_refused(tmp_path: Path, in_repo: Path) -> None:
    plan = tmp_path / "plan.json"
    code, output = invoke("plan", str(FAMILY.relative_to(REPO)), "-o", str(plan))
    assert code == 0, output
    text = plan.read_text()
    assert '"num_steps": 13,' in text
    plan.write_text(text.replace('"num_steps": 13,', '"num_steps": 12,', 1))
    code, output = invoke("apply", str(plan), "--yes", "--run-dir", str(tmp_path / "run"))
    assert code == 1
    assert re.search(r"error: .*plan\.json: plan_id [0-9a-f]{16} does not match its content", one_error(output))
    assert not (tmp_path / "run").exists()


def test_a_run_directory_made_by_another_plan_is_refused(tmp_path: Path, in_repo: Path) -> None:
    from familyc.compiler import compile_spec
    from familyc.execute.rundir import open_run_dir

    run = tmp_path / "run"
    other = compile_spec(PAIR.relative_to(REPO))
    open_run_dir(run, other)  # what `familyc apply pair.yaml --run-dir run` starts with
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    code, output = invoke("apply", str(FAMILY.relative_to(REPO)), "--yes", "--run-dir", str(run))
    assert code == 1
    line = one_error(output)
    assert f"was made by plan {other.plan_id}, not " in line and "(family tiny-pair)" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before


def test_a_directory_that_is_not_a_run_directory_is_refused(tmp_path: Path, in_repo: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a run\n")
    code, output = invoke("apply", str(FAMILY.relative_to(REPO)), "--yes", "--run-dir", str(folder))
    assert code == 1
    assert "exists and is not a familyc run directory (no state.json)" in one_error(output)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # not even a lock file


def test_a_dataset_folder_that_does_not_exist_is_refused(tmp_path: Path, in_repo: Path) -> None:
    spec = spec_copy(tmp_path, data={"dataset": {"path": "no-such-corpus"}})
    code, output = invoke("apply", str(spec), "--yes", "--run-dir", str(tmp_path / "run"))
    assert code == 1
    line = one_error(output)
    assert f"the dataset folder {tmp_path / 'no-such-corpus'} does not exist" in line
    assert not (tmp_path / "run").exists()


def test_several_nodes_need_a_rendezvous_endpoint(tmp_path: Path, in_repo: Path) -> None:
    code, output = invoke("apply", str(PAIR.relative_to(REPO)), "--yes", "--run-dir", str(tmp_path / "run"),
                          "--nnodes", "2")
    assert code == 2
    assert "several nodes need --rdzv-endpoint host:port" in one_error(output)
    assert not (tmp_path / "run").exists()


def test_a_second_apply_on_the_same_run_directory_is_refused(tmp_path: Path, in_repo: Path) -> None:
    from familyc.compiler import compile_spec
    from familyc.execute.rundir import open_run_dir

    run = tmp_path / "run"
    open_run_dir(run, compile_spec(PAIR.relative_to(REPO)))
    with (run / ".lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running apply holds it
        code, output = invoke("apply", str(PAIR.relative_to(REPO)), "--yes", "--run-dir", str(run))
    assert code == 1
    assert f"another familyc apply is running in {run}" in one_error(output)


def test_a_full_disk_stops_the_stage_before_it_starts(tmp_path: Path, in_repo: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=2**20))  # 1 MiB left
    run = tmp_path / "run"
    code, output = invoke("apply", str(PAIR.relative_to(REPO)), "--yes", "--run-dir", str(run))
    assert code == 1
    assert re.fullmatch(rf"error: step train-xs failed: needs about \d+\.\d GiB free in {re.escape(str(run))} for "
                        r"its checkpoints, 0\.0 GiB are free", one_error(output)), output
    assert "hint: free disk space, or use another --run-dir" in output
    state = json.loads((run / "state.json").read_text())
    assert [(k, v["status"]) for k, v in state["steps"].items()] == [
        ("train-xs", "failed"), ("expand-xs-s", "pending"), ("train-s", "pending"), ("baseline-xs", "pending"),
        ("baseline-s", "pending")]
    assert not (run / "steps" / "train-xs" / "checkpoint").exists()


@pytest.mark.parametrize(("tail", "message", "hint"), [
    ("[rank1]: familyc stage: step 7: the loss is nan on rank 1; stopped before the optimizer step (nothing saved).",
     "non-finite loss: step 7: the loss is nan on rank 1; stopped", "lower the peak learning rate"),
    ("OSError: [Errno 28] No space left on device: 'ckpt/step-200/__0_0.distcp'", "the disk is full",
     "free disk space and apply again"),
    ("FileNotFoundError: [Errno 2] No such file or directory: 'data/corpus'", "a file is missing: FileNotFoundError",
     "check data.dataset and tokenizer in the spec"),
    ("[rank0]: familyc stage: data of rank 0 continues at [...]\n"
     "[rank1]: familyc stage error: /data/c4/part-7.jsonl.gz: not a readable jsonl.gz file (EOFError: ...)\n"
     "[rank1]:   hint: download the shard again, or remove it from the dataset",
     "/data/c4/part-7.jsonl.gz: not a readable jsonl.gz file", "download the shard again"),
    ("Segmentation fault (core dumped)", "the stage exited with code 139", "the end of the log says why"),
])
def test_a_failed_stage_is_diagnosed_from_the_end_of_its_log(tmp_path: Path, tail: str, message: str,
                                                             hint: str) -> None:
    from familyc.execute.diagnosis import diagnose

    log = tmp_path / "stdout.log"
    log.write_text("".join(f"[rank0]: step {i} loss 6.1\n" for i in range(5000)) + tail + "\n")
    got_message, got_hint = diagnose(log, 139)
    assert got_message.startswith(message) and got_hint.startswith(hint), (got_message, got_hint)


# --- a stage that fails -------------------------------------------------------------------------

def test_a_diverging_stage_stops_the_run_and_is_retried_by_the_next_apply(tmp_path: Path) -> None:
    # s: AdamW at lr 1.0 with decoupled weight decay 10 multiplies every weight by -9 per step; its
    # activations overflow float32 within a dozen steps (xs, at lr 3e-3, loses 3% of its weights a step)
    spec = spec_copy(tmp_path, PAIR, lr={"table": {"xs": 3.0e-3, "s": 1.0}},
                     budget={"tokens": {"xs": 8192, "s": 40960}}, training={"optimizer": {"weight_decay": 10}})
    # no --run-dir: the default, runs/<family>-<plan id>, relative to where apply runs
    argv = [sys.executable, "-m", "familyc", "apply", str(spec), "--yes"]
    env = {**{k: v for k, v in os.environ.items() if k != "FAMILYC_FAILPOINTS"}, "COLUMNS": "160"}

    def apply() -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
                              start_new_session=True)
        (run,) = (tmp_path / "runs").glob("tiny-pair-*")
        return proc, json.loads((run / "state.json").read_text())

    first, state = apply()
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    run = tmp_path / "runs" / f"tiny-pair-{state['plan_id'][:8]}"
    log = run / "steps" / "train-s" / "stdout.log"
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, first.stderr
    # the gradient norm turns non-finite a step before the loss does: the stage stops there
    match = re.fullmatch(r"error: step train-s failed: non-finite (?:loss|gradient): step (\d+): the "
                         r"(?:loss|gradient norm) is nan on rank \d; stopped before the optimizer step "
                         r"\(nothing saved\)\. .* \(log: (.*)\)", errors[0])
    assert match and tmp_path / match.group(2) == log, errors[0]
    assert "hint: lower the peak learning rate" in first.stderr
    assert re.search(r"the (loss|gradient norm) is nan", log.read_text())
    steps = state["steps"]
    assert [(k, v["status"], v["attempts"]) for k, v in steps.items()] == [
        ("train-xs", "completed", 1), ("expand-xs-s", "completed", 1), ("train-s", "failed", 1),
        ("baseline-xs", "pending", 0), ("baseline-s", "pending", 0)]
    assert re.match(rf"non-finite (loss|gradient): step {match.group(1)}: the (loss|gradient norm) is nan",
                    steps["train-s"]["error"])
    assert steps["train-s"]["log"] == "steps/train-s/stdout.log"
    assert not (run / "members" / "s").exists() and not (run / "steps" / "train-s" / "stage.pid").exists()

    second, state = apply()  # nothing fixed: train-s runs again, and fails again
    assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]
    assert "[1/3] train-xs: done, skipped" in second.stdout and "[2/3] expand-xs-s: done, skipped" in second.stdout
    assert re.search(r"error: step train-s failed: non-finite (loss|gradient)", second.stderr)
    assert (state["steps"]["train-s"]["status"], state["steps"]["train-s"]["attempts"]) == ("failed", 2)
    assert log.read_text().count("=== familyc apply") == 2
