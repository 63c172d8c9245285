"""`familyc apply` beyond one local machine: two nodes, SLURM, and the independent baselines.

All with tests/fixtures/specs-apply/pair.yaml (xs grown into s, 4 steps each), from the
repository root so the plan (and its id) is the same on every machine:
- two `familyc apply` processes on 127.0.0.1 as nodes 0 and 1 of a c10d rendezvous, one rank each,
  in one run directory (a shared file system);
- `--launcher slurm`: the sbatch script against a golden file (paths as placeholders), `bash -n`,
  and the script itself run here, with `srun` and `scontrol` shims on PATH standing in for SLURM;
- `--baselines --compile` on that run: the members trained from scratch, compiled (the one
  compiled run of the apply tests).
About two minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan.train", reason="torchtitan (and triton, which it imports) is not installed")
pytest.importorskip("tokenizers", reason="tokenizers is not installed")

from conftest import assert_golden  # noqa: E402

from familyc.checkpoint.sidecar import MEMBER_SIDECAR, verify_sidecar  # noqa: E402
from familyc.execute.metrics import read_records  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIR = "tests/fixtures/specs-apply/pair.yaml"
GOLDEN = REPO / "tests" / "fixtures" / "apply"
TIMEOUT = 300

SRUN = """#!/bin/bash
# srun for a one-node allocation without SLURM: run the command here, as node 0
echo "$*" >> "$FAKE_SRUN_LOG"
while [[ $# -gt 0 && $1 == --* ]]; do shift; done
export SLURM_NODEID=0 SLURM_PROCID=0 SLURM_LOCALID=0
exec "$@"
"""
SCONTROL = """#!/bin/bash
# scontrol show hostnames NODELIST, for a one-node allocation on this machine
if [[ $1 == show && $2 == hostnames ]]; then echo 127.0.0.1; else echo "fake scontrol: $*" >&2; exit 1; fi
"""


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("FAMILYC_FAILPOINTS", "OMP_NUM_THREADS")}
    return {**out, "COLUMNS": "160", **extra}


def apply_argv(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "familyc", "apply", PAIR, "--yes", "--run-dir", str(run_dir), *args]


def apply(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(apply_argv(run_dir, *args), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                          env=env(), start_new_session=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_members(run_dir: Path, folder: str = "members") -> None:
    for member in ("xs", "s"):
        weights = run_dir / folder / member
        assert (weights / ".metadata").is_file(), f"{weights} is missing"
        assert verify_sidecar(weights, kind="member") == []


def statuses(run_dir: Path) -> dict[str, str]:
    return {k: v["status"] for k, v in json.loads((run_dir / "state.json").read_text())["steps"].items()}


# --- two nodes ----------------------------------------------------------------------------------

def two_nodes(run_dir: Path, logs: Path) -> tuple[list[int], list[str]]:
    """`familyc apply` as nodes 0 and 1 of a c10d rendezvous on 127.0.0.1, one rank each: exit codes, outputs."""
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = []
    try:
        for rank in (0, 1):
            with (logs / f"node{rank}.log").open("w") as log:
                nodes.append(subprocess.Popen(
                    apply_argv(run_dir, "--nnodes", "2", "--node-rank", str(rank), "--rdzv-endpoint", endpoint,
                               "--nproc-per-node", "1"),
                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True))
        codes = [node.wait(timeout=TIMEOUT) for node in nodes]
    finally:
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
    return codes, [(logs / f"node{rank}.log").read_text() for rank in (0, 1)]


def test_two_nodes_train_the_family_together(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    codes, outputs = two_nodes(run_dir, tmp_path)
    assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    assert statuses(run_dir) == {"train-xs": "completed", "expand-xs-s": "completed", "train-s": "completed",
                                 "baseline-xs": "pending", "baseline-s": "pending"}
    assert_members(run_dir)
    assert "[2/3] expand-xs-s: wrote" in outputs[0] and "expand-xs-s" not in outputs[1]  # node 0 grows
    assert "[3/3] train-s: trained in" in outputs[1] and "(node 1)" in outputs[1]
    for stage in ("train-xs", "train-s"):
        log = (run_dir / "steps" / stage / "stdout.log").read_text()
        assert "dp_shard=2" in log  # one FSDP group over both nodes
        for rank in (0, 1):
            assert f"--nnodes=2 --node-rank={rank} --rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:" in log
        records = read_records(run_dir / "steps" / stage / "metrics.jsonl")
        assert [r["step"] for r in records] == [1, 2, 3, 4] and {r["world_size"] for r in records} == {2}
        assert not (run_dir / "steps" / stage / "stage.pid").exists()

    # both nodes again: nothing to train on either (node 1 must not wait for a stage node 0 skips)
    codes, outputs = two_nodes(run_dir, tmp_path)
    assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    assert "[3/3] train-s: done, skipped" in outputs[0]
    assert "[1/3] train-xs: done, skipped (node 1)" in outputs[1]
    assert "[3/3] train-s: done, skipped (node 1)" in outputs[1]


# --- SLURM --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], str]:
    """(run dir, what writing the script printed, the script)."""
    run_dir = tmp_path_factory.mktemp("slurm") / "run"
    proc = apply(run_dir, "--launcher", "slurm")
    script = run_dir / "familyc.sbatch"
    return run_dir, proc, script.read_text() if script.is_file() else ""


def test_the_slurm_launcher_writes_the_golden_sbatch_script(slurm: tuple[Path, subprocess.CompletedProcess[str],
                                                                          str]) -> None:
    run_dir, proc, script = slurm
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(f"wrote {run_dir / 'familyc.sbatch'}")
    assert statuses(run_dir) == dict.fromkeys(("train-xs", "expand-xs-s", "train-s", "baseline-xs", "baseline-s"),
                                              "pending")  # nothing ran
    assert not (run_dir / "members").exists()
    for stage in ("train-xs", "train-s"):  # the job files the script's torchrun lines name
        assert (run_dir / "steps" / stage / "job.toml").is_file()
    root = str(run_dir.resolve())
    text = (script.replace(f"{root}/plan.json", "$PLAN").replace(root, "$RUN_DIR").replace(sys.executable, "$PYTHON")
            .replace(str(REPO), "$WORKDIR"))
    # the assets folder is named by a hash of the Python's standard library
    text = re.sub(r"assets/stdlib-docstrings-[0-9a-f]{16}/", "assets/stdlib-docstrings-$KEY/", text)
    assert_golden(GOLDEN / "pair.sbatch", text)
    check = subprocess.run(["bash", "-n", str(run_dir / "familyc.sbatch")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def run_sbatch(run_dir: Path, shims: Path) -> subprocess.CompletedProcess[str]:
    """The sbatch script run here as SLURM would on one node, with srun and scontrol shims."""
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    slurm_env = env(PATH=f"{shims}{os.pathsep}{os.environ['PATH']}", FAKE_SRUN_LOG=str(shims / "srun.log"),
                    SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID="1", SLURM_NNODES="1")
    return subprocess.run(["bash", str(run_dir / "familyc.sbatch")], cwd=run_dir, capture_output=True, text=True,
                          timeout=TIMEOUT, env=slurm_env, start_new_session=True)


@pytest.fixture(scope="module")
def slurm_ran(slurm: tuple[Path, subprocess.CompletedProcess[str], str],
              tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """(the script's run, the folder of the shims and their srun.log)."""
    assert slurm[1].returncode == 0, "writing the script failed"
    shims = tmp_path_factory.mktemp("shims")
    return run_sbatch(slurm[0], shims), shims


def test_the_sbatch_script_trains_and_records_the_family(
        slurm: tuple[Path, subprocess.CompletedProcess[str], str],
        slurm_ran: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    run_dir, (ran, shims) = slurm[0], slurm_ran
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert statuses(run_dir) == {"train-xs": "completed", "expand-xs-s": "completed", "train-s": "completed",
                                 "baseline-xs": "pending", "baseline-s": "pending"}
    assert_members(run_dir)
    assert verify_sidecar(run_dir / "expansions" / "expand-xs-s") == []
    state = json.loads((run_dir / "state.json").read_text())
    for stage in ("train-xs", "train-s"):
        metrics = state["steps"][stage]["metrics"]
        assert (metrics["steps"], metrics["tokens"], metrics["world_size"]) == (4, 4 * 2048, 2)
        assert "dp_shard=2" in (run_dir / "steps" / stage / "stdout.log").read_text()
    assert ran.stdout.count("found complete, adopted") == 2  # each `apply --only` recorded its stage's member
    # train-s continues the data stream where train-xs stopped (data.progressive_stages: continue), as under apply
    xs_end = json.loads((run_dir / "members" / "xs" / "data_position.json").read_text())["sample_idx"]
    s_log = (run_dir / "steps" / "train-s" / "stdout.log").read_text()
    assert all(f"data starts at document {xs_end[rank]} of rank {rank}'s shard" in s_log for rank in (0, 1))
    launched = (shims / "srun.log").read_text().splitlines()
    assert len(launched) == 2 and all("--rdzv-endpoint=127.0.0.1:29500" in line for line in launched)

    again = run_sbatch(run_dir, shims)  # submitted again: every step is skipped, nothing is launched
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (shims / "srun.log").read_text().splitlines() == launched
    assert "expand-xs-s: done, skipped" in again.stdout


# --- baselines ----------------------------------------------------------------------------------

def test_baselines_train_every_member_from_scratch(slurm: tuple[Path, subprocess.CompletedProcess[str], str],
                                                   slurm_ran: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    run_dir = slurm[0]
    assert slurm_ran[0].returncode == 0, "the progressive run failed"
    proc = apply(run_dir, "--baselines", "--compile")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for index, step in enumerate(("train-xs", "expand-xs-s", "train-s"), start=1):
        assert f"[{index}/5] {step}: done, skipped" in proc.stdout
    assert set(statuses(run_dir).values()) == {"completed"}
    assert_members(run_dir, "baselines")
    state = json.loads((run_dir / "state.json").read_text())
    for member in ("xs", "s"):
        step = f"baseline-{member}"
        sidecar = json.loads((run_dir / "baselines" / member / MEMBER_SIDECAR).read_text())
        assert (sidecar["step"], sidecar["init_from"]) == (step, None)
        log = (run_dir / "steps" / step / "stdout.log").read_text()
        assert "Compiling each TransformerBlock with torch.compile" in log
        assert "Loading the checkpoint" not in log  # from scratch
        metrics = state["steps"][step]["metrics"]
        assert metrics["tokens"] == 4 * 2048 and metrics["wall_seconds"] > 0
    # the baselines' first loss is a random model's; s grown from xs starts far below it
    assert state["steps"]["baseline-s"]["metrics"]["first_loss"] > state["steps"]["train-s"]["metrics"]["first_loss"]
