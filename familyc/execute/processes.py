"""The stage processes of a run directory, found through /proc: leftovers of an apply that was killed.

`familyc apply` starts each stage as torchrun, which starts every worker in a session of its own.
Killing apply's process group (kill -9, a lost terminal, a failpoint) kills apply and torchrun but
not the workers: they train on, unsupervised, writing checkpoints into the dump folder that the
next apply resumes from. The next apply stops them first (`stop_orphaned_workers`), and refuses to
start while a stage it did not start is still running under its torchrun (`stale_stage`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from familyc.backend.environment import STAGE_MODULE
from familyc.execute.rundir import RunDir
from familyc.files import pid_alive
from familyc.plan.ir import Plan

PID_FILE = "stage.pid"


def stop_orphaned_workers(run: RunDir) -> list[int]:
    """SIGKILL this run's stage workers whose torchrun is gone; their pids. Called under the run's lock,
    so no apply of this run directory is alive on this machine to own them. Linux only (/proc);
    elsewhere nothing is found."""
    orphans = [pid for pid, parent in _stage_workers(run) if not _is_torchrun(_cmdline(parent))]
    for pid in orphans:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(pid) for pid in orphans):
        time.sleep(0.1)
    return orphans


def _stage_workers(run: RunDir) -> list[tuple[int, int]]:
    """(pid, parent pid) of every familyc.backend.stage process training one of this run's job files."""
    steps = str((run.root / "steps").resolve()) + os.sep
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        argv = _cmdline(int(entry.name))
        if STAGE_MODULE in argv and any(a.startswith(steps) and a.endswith("job.toml") for a in argv):
            parent = _stat(int(entry.name))
            if parent is not None:
                found.append((int(entry.name), parent[1]))
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_torchrun(argv: list[str]) -> bool:
    return "torch.distributed.run" in argv or any(a.endswith("/torchrun") for a in argv[:2])


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from /proc/PID/stat; None when the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def stale_stage(run: RunDir, plan: Plan) -> str | None:
    """A stage process left running by an apply that was killed alone (its torchrun survived)."""
    for step in plan.all_steps():
        path = run.step_dir(step.id) / PID_FILE
        try:
            pid = int(path.read_text())
        except (OSError, ValueError):
            continue
        if not _stage_alive(pid):
            path.unlink(missing_ok=True)
            continue
        return f"{step.id} is still running from an earlier apply (pid {pid})"
    return None


def _stage_alive(pid: int) -> bool:
    """Whether `pid` is a running torchrun. On Linux a zombie (killed, not yet reaped) is dead, and a pid
    reused by another program is not a stage; elsewhere any live process counts."""
    if Path("/proc/self/stat").is_file():
        return _running(pid) and _is_torchrun(_cmdline(pid))
    return pid_alive(pid)


@contextmanager
def pid_file(path: Path, pid: int) -> Iterator[None]:
    """`path` holds `pid` while the block runs (stale_stage finds a stage a killed apply left running)."""
    path.write_text(f"{pid}\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def stop(process: subprocess.Popen[bytes], *, grace_seconds: float = 30) -> None:
    """Stop a stage we are abandoning: torchrun forwards SIGTERM to its workers; SIGKILL after the grace."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
