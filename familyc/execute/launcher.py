"""How a training stage is started and watched: torchrun as a subprocess (an argv list, never a shell string).

torchrun is the distributed engine; familyc adds no scheduler. One node: `--standalone`. Several
nodes: torchrun's c10d rendezvous, each node running the same `familyc apply` with its
`--node-rank` (the run directory must be on a file system all nodes share). SLURM: see
familyc.execute.slurm, which writes `srun torchrun ...` lines with the same module and job file.
What the stage is told besides its job file is familyc.backend.environment's contract.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from familyc.backend.environment import STAGE_MODULE, StageEnvironment
from familyc.execute.processes import pid_file, stop
from familyc.execute.state import now

DEFAULT_RDZV_PORT = 29500
POLL_SECONDS = 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class Launch:
    """Where and how wide a stage runs."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    """host:port of the c10d rendezvous (required with several nodes)."""
    on_cpu: bool = False

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def torchrun_argv(launch: Launch, *, job_toml: Path, rdzv_id: str, python: str | None = None) -> list[str]:
    """`python -m torch.distributed.run ... -m familyc.backend.stage --job.config_file JOB`."""
    argv = [python or sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch.nproc_per_node}"]
    if launch.nnodes == 1 and launch.rdzv_endpoint is None:
        argv.append("--standalone")
    else:
        if launch.rdzv_endpoint is None:
            raise ValueError("several nodes need a rendezvous endpoint (host:port)")
        argv += [f"--nnodes={launch.nnodes}", f"--node-rank={launch.node_rank}", "--rdzv-backend=c10d",
                 f"--rdzv-endpoint={launch.rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
    argv += ["-m", STAGE_MODULE, "--job.config_file", str(job_toml.resolve())]  # torchrun runs in the run dir
    return argv


def run_stage(argv: list[str], environment: StageEnvironment, *, log: Path, cwd: Path, pid_path: Path | None,
              on_record: Callable[[dict[str, Any]], None]) -> int:
    """Run one stage to its end; its exit code. Its output is appended to `log`; every metrics line it appends
    is passed to `on_record` as it arrives; `pid_path` holds torchrun's pid meanwhile. Whatever interrupts the
    watch (Ctrl-C, an error) stops the stage first."""
    env = environment.apply_to(os.environ)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n=== familyc apply {now()}: {' '.join(argv)}\n")
        out.flush()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        with nullcontext() if pid_path is None else pid_file(pid_path, process.pid):
            try:
                return _watch(process, environment.metrics, on_record)
            except BaseException:
                stop(process)
                raise


def _watch(process: subprocess.Popen[bytes], metrics_path: Path, on_record: Callable[[dict[str, Any]], None]) -> int:
    """Wait for the stage, reading only the metrics lines it appended since the last look."""
    offset = 0
    while True:
        code = process.poll()
        if metrics_path.is_file():
            with metrics_path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.decode("utf-8", errors="replace").splitlines():  # all: the first step times the launch
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    on_record(record)
        if code is not None:
            return code
        time.sleep(POLL_SECONDS)
