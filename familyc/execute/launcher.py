"""How a training stage is started: torchrun as a subprocess (an argv list, never a shell string).

torchrun is the distributed engine; familyc adds no scheduler. One node: `--standalone`. Several
nodes: torchrun's c10d rendezvous, each node running the same `familyc apply` with its
`--node-rank` (the run directory must be on a file system all nodes share). SLURM: see
familyc.execute.slurm, which writes `srun torchrun ...` lines with the same argv.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

STAGE_MODULE = "familyc.backend.stage"
DEFAULT_RDZV_PORT = 29500


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


def stage_env(launch: Launch, *, flavors: Path, metrics: Path, datasets_cache: Path) -> dict[str, str]:
    """The environment of a stage: familyc's hooks, offline Hugging Face, one thread per CPU rank."""
    env = dict(os.environ)
    env.update({
        "FAMILYC_FLAVORS": str(flavors.resolve()),
        "FAMILYC_METRICS": str(metrics.resolve()),
        "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
        "HF_DATASETS_OFFLINE": env.get("HF_DATASETS_OFFLINE", "1"),
        "HF_DATASETS_CACHE": str(datasets_cache.resolve()),
        "PYTHONUNBUFFERED": "1",
    })
    if launch.on_cpu:
        # One thread per rank: two ranks with two threads each on two cores run 3-7x slower.
        cores = os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // launch.nproc_per_node))
    return env
