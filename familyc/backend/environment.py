"""The contract between `familyc apply` and a stage process: environment variables and exit codes. Torch-free.

A training stage is `torchrun ... -m familyc.backend.stage --job.config_file JOB.toml`, started by
familyc's local launcher (familyc.execute.launcher) or by an sbatch script (familyc.execute.slurm).
Everything else a stage needs travels in these variables, spelled here once:

    FAMILYC_FLAVORS      JSON of the members' sizes (familyc.backend.flavors registers them)
    FAMILYC_METRICS      rank 0 appends one JSON line per logged step there
    FAMILYC_DATA_START   continue the data stream where the stage that wrote this file stopped
    FAMILYC_DATA_END     after the last step, write every rank's data position here
    FAMILYC_OPTIMIZER_START  load AdamW's moments from this DCP folder before the first step (optimizer: carry)
    FAMILYC_OPTIMIZER_END    after the last step, save AdamW's moments to this DCP folder (familyc.backend.moments)
    FAMILYC_DATA_SEED    shuffle each rank's training documents with this seed (unset: the dataset's order)
    FAMILYC_HELDOUT      the run's held-out split (a folder of .jsonl): evaluated inside the stage when
    FAMILYC_EVAL_INTERVAL and FAMILYC_EVAL_TOKENS are set too (step 0, every interval steps, the last)
    FAMILYC_PROFILE_MEMORY   a diagnostic (never set by apply): each rank writes its allocator-level peak over
                         the first steps to this folder (familyc.backend.memory_profile)
    HF_HUB_OFFLINE, HF_DATASETS_OFFLINE   1 when apply keeps off the network (HF_HUB_OFFLINE=1 or --offline,
                         or nothing of the run is on the hub), else 0: a hub shard is fetched when first read
    HF_DATASETS_CACHE    the run's own datasets cache
    OMP_NUM_THREADS      on a CPU: the cores divided among the node's ranks (a user's setting wins)
    PYTHONUNBUFFERED     1: the log shows what a dying stage printed last
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

STAGE_MODULE = "familyc.backend.stage"
FLAVORS_ENV = "FAMILYC_FLAVORS"
METRICS_ENV = "FAMILYC_METRICS"
DATA_START_ENV = "FAMILYC_DATA_START"
DATA_END_ENV = "FAMILYC_DATA_END"
DATA_SEED_ENV = "FAMILYC_DATA_SEED"
OPTIMIZER_START_ENV = "FAMILYC_OPTIMIZER_START"
OPTIMIZER_END_ENV = "FAMILYC_OPTIMIZER_END"
HELDOUT_ENV = "FAMILYC_HELDOUT"
EVAL_INTERVAL_ENV = "FAMILYC_EVAL_INTERVAL"
EVAL_TOKENS_ENV = "FAMILYC_EVAL_TOKENS"
PROFILE_MEMORY_ENV = "FAMILYC_PROFILE_MEMORY"
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
DATASETS_CACHE_ENV = "HF_DATASETS_CACHE"
THREADS_ENV = "OMP_NUM_THREADS"

EXIT_CONFIG = 2
"""The stage could not start: its flavors or its configuration are wrong."""
EXIT_NONFINITE_LOSS = 3
"""The loss or the gradient norm was not finite; the stage stopped before the optimizer step."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunEnvironment:
    """What every stage of a run is told."""

    flavors: Path
    datasets_cache: Path
    offline: bool = True
    """False: a hub dataset's shards may be fetched as the stages read them."""
    threads: int | None = None
    """OMP_NUM_THREADS for CPU ranks; None: leave it to torch."""
    heldout: Path | None = None
    """The held-out split the stages evaluate on (None: the run's data has none familyc made)."""
    data_seed: int | None = None
    """Every stage reads its training documents shuffled by this seed (None: in the dataset's order)."""

    def fixed(self) -> dict[str, str]:
        """The variables a stage always gets, whatever the launching environment says. HF_HUB_OFFLINE is always
        set, to 1 or 0: apply decided from the user's setting and --offline, and a stage would default to 1."""
        out = {FLAVORS_ENV: str(self.flavors.resolve()), DATASETS_CACHE_ENV: str(self.datasets_cache.resolve()),
               "PYTHONUNBUFFERED": "1", **dict.fromkeys(OFFLINE_ENVS, "1" if self.offline else "0")}
        if self.heldout is not None:
            out[HELDOUT_ENV] = str(self.heldout.resolve())
        if self.data_seed is not None:
            out[DATA_SEED_ENV] = str(self.data_seed)
        return out

    def defaults(self) -> dict[str, str]:
        """The variables a stage gets unless the user set them."""
        out: dict[str, str] = {}
        if self.threads is not None:
            out[THREADS_ENV] = str(self.threads)
        return out

    def shell_exports(self) -> list[str]:
        """The same as `export` lines of a shell script (the sbatch script's set-up)."""
        q = shlex.quote
        lines = [f"export {name}={q(value)}" for name, value in self.fixed().items()]
        lines += [f"export {name}=${{{name}:-{q(value)}}}" for name, value in self.defaults().items()]
        return lines


@dataclass(frozen=True, kw_only=True, slots=True)
class StageEnvironment:
    """What one stage is told besides its run's environment."""

    run: RunEnvironment
    metrics: Path
    data_end: Path | None = None
    data_start: Path | None = None
    optimizer_start: Path | None = None
    """The moments the stage starts from (None: a fresh optimizer)."""
    optimizer_end: Path | None = None
    """Where the stage saves its final moments (None: it does not)."""
    eval_interval: int | None = None
    """Steps between held-out evaluations (None: none; the stage also needs the run's held-out split)."""
    eval_tokens: int | None = None

    def own(self) -> dict[str, str]:
        """This stage's variables (the sbatch script prefixes its srun line with them)."""
        out = {METRICS_ENV: str(self.metrics.resolve())}
        if self.eval_interval is not None and self.eval_tokens is not None and self.run.heldout is not None:
            out[EVAL_INTERVAL_ENV] = str(self.eval_interval)
            out[EVAL_TOKENS_ENV] = str(self.eval_tokens)
        if self.data_start is not None:
            out[DATA_START_ENV] = str(self.data_start.resolve())
        if self.data_end is not None:
            out[DATA_END_ENV] = str(self.data_end.resolve())
        if self.optimizer_start is not None:
            out[OPTIMIZER_START_ENV] = str(self.optimizer_start.resolve())
        if self.optimizer_end is not None:
            out[OPTIMIZER_END_ENV] = str(self.optimizer_end.resolve())
        return out

    def apply_to(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The stage's whole environment, from the launching process's."""
        env = dict(environ)
        for name, value in self.run.defaults().items():
            env.setdefault(name, value)
        env.update(self.run.fixed())
        env.update(self.own())
        return env

    def shell_prefix(self) -> str:
        """`NAME=value ...` for a command line of a shell script."""
        return " ".join(f"{name}={shlex.quote(value)}" for name, value in self.own().items())


def cpu_threads(nproc_per_node: int) -> int:
    """One thread per core for each CPU rank: two ranks with two threads each on two cores run 3-7x slower."""
    return max(1, (os.cpu_count() or 1) // nproc_per_node)
