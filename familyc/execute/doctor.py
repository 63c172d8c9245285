"""familyc doctor: before a long run, whether this machine can run the plan, one check per line.

Each check says what it found and a status: `ok`, `warn` (it runs, but not as planned) or `FAIL` (apply would
refuse or the run would fail: a blocker). Without a plan only the environment is checked.

- python, torch, torchtitan, triton and the rest of the train extra against pyproject.toml's pins (torch is
  imported here, lazily: without the train extra each missing package is a FAIL line, not a crash);
- the accelerator: torch.cuda's devices (name, count, memory) against the plan's cluster (a CPU plan: the CPUs
  against the processes apply starts, its gpus_per_node);
- NCCL, where the plan uses several GPUs (torch.cuda.nccl.version());
- free disk where the run directory will be (apply's default, or --run-dir) against what apply checks before
  each stage (Plan.disk_bytes, familyc.cost.storage), for its largest stage;
- offline mode, the tokenizer and every data source (familyc.execute.doctor_inputs): a hub repository must be in
  the Hugging Face cache or, with the network allowed, reachable. Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from familyc import units
from familyc.cost.storage import member_checkpoint_bytes
from familyc.errors import FamilycError
from familyc.execute.apply import default_run_dir
from familyc.execute.doctor_inputs import input_checks
from familyc.execute.doctor_report import Check, DoctorReport
from familyc.execute.rundir import check_spec_unchanged
from familyc.plan.ir import Plan

PYTHON_PIN = ">=3.11"
"""pyproject.toml's requires-python (tests/test_doctor.py checks that these pins are pyproject's)."""
TORCH_PIN = ">=2.11,<2.14"
"""The train extra's torch: the range torchtitan 0.2.2 runs on."""
TORCHTITAN_PIN = "==0.2.2"
TRAIN_INSTALL = "pip install -e '.[train]' torch==2.13.0"
"""As familyc.cli.app.TRAIN_INSTALL says it (pin torch: an unpinned one pulls a multi-GB CUDA build)."""


# --- versions -------------------------------------------------------------------------------------

def _release(version: str) -> tuple[int, ...]:
    """`2.13.0+cpu` -> (2, 13, 0); `2.14.0.dev20260101` -> (2, 14, 0)."""
    numbers = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(n) for n in numbers[0].split(".")) if numbers else ()


def satisfies(version: str, pin: str) -> bool:
    """Whether `version` meets `pin`: comma-separated clauses of >=, >, <=, <, ==, != on release numbers."""
    have = _release(version)
    for clause in filter(None, (c.strip() for c in pin.split(","))):
        match = re.match(r"(>=|<=|==|!=|>|<)\s*(.+)", clause)
        if match is None:
            raise ValueError(f"not a version clause: {clause!r}")
        op, want = match[1], _release(match[2])
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        if not {">=": a >= b, ">": a > b, "<=": a <= b, "<": a < b, "==": a == b, "!=": a != b}[op]:
            return False
    return True


def installed_version(module: str) -> str | None:
    """The installed distribution's version (without importing it), None when it is not installed."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def _pinned(name: str, version: str | None, pin: str, *, why: str) -> Check:
    if version is None:
        return Check(name=name, status="FAIL", found="not installed", hint=TRAIN_INSTALL)
    if satisfies(version, pin):
        return Check(name=name, status="ok", found=f"{version} (familyc pins {pin})")
    return Check(name=name, status="FAIL", found=f"{version}, not {pin} ({why})", hint=TRAIN_INSTALL)


def python_check() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if satisfies(version, PYTHON_PIN):
        return Check(name="python", status="ok", found=f"{version} (familyc needs {PYTHON_PIN})")
    return Check(name="python", status="FAIL", found=f"{version}, not {PYTHON_PIN}", hint="use Python 3.11 or newer")


def import_torch() -> Any:
    """torch, or None when it is not installed or does not import (the checks say which)."""
    try:
        return importlib.import_module("torch")
    except Exception:  # ImportError, or a broken install (a missing CUDA library raises OSError)
        return None


def torch_check(torch: Any) -> Check:
    if torch is None:
        version = installed_version("torch")
        if version is not None:
            return Check(name="torch", status="FAIL", found=f"{version} is installed but does not import",
                         hint=f"python -c 'import torch' says why; reinstall: {TRAIN_INSTALL}")
        return Check(name="torch", status="FAIL", found="not installed (the train extra)", hint=TRAIN_INSTALL)
    return _pinned("torch", str(torch.__version__), TORCH_PIN, why="the range torchtitan 0.2.2 runs on")


def torchtitan_check() -> Check:
    return _pinned("torchtitan", installed_version("torchtitan"), TORCHTITAN_PIN,
                   why="familyc.backend is written against it")


def triton_check(*, needed: bool) -> Check:
    """Importable: torch.compile's GPU kernels come from it (on a CPU plan a broken triton is only a warning)."""
    version = installed_version("triton")
    if version is None:
        return Check(name="triton", status="FAIL", found="not installed (apply refuses without the train extra)",
                     hint=TRAIN_INSTALL)
    try:
        importlib.import_module("triton")
    except Exception as exc:
        return Check(name="triton", status="FAIL" if needed else "warn",
                     found=f"{version} does not import ({type(exc).__name__}: {exc})",
                     hint="torch.compile on a GPU needs it: reinstall the train extra" if needed else "")
    return Check(name="triton", status="ok", found=f"{version} importable")


def extra_check(modules: Sequence[str]) -> Check:
    """The rest of the train extra, which apply checks before it starts (familyc.cli.app.TRAIN_EXTRA)."""
    versions = {m: installed_version(m) for m in modules}
    missing = [m for m, v in versions.items() if v is None]
    found = ", ".join(f"{m} {v}" for m, v in versions.items() if v is not None)
    if missing:
        return Check(name="train extra", status="FAIL",
                     found=f"{', '.join(missing)} not installed" + (f" ({found})" if found else ""),
                     hint=TRAIN_INSTALL)
    return Check(name="train extra", status="ok", found=found or "nothing else")


# --- the accelerator ------------------------------------------------------------------------------

def cpu_count() -> int:
    """CPUs this process may run on (its affinity where the OS says, as torchrun's children inherit it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _devices(torch: Any) -> list[tuple[str, int]]:
    """(name, memory bytes) of every visible CUDA (or ROCm) device; empty without one."""
    try:
        if not torch.cuda.is_available():
            return []
        return [(str(torch.cuda.get_device_name(i)), int(torch.cuda.get_device_properties(i).total_memory))
                for i in range(torch.cuda.device_count())]
    except Exception:  # a driver that torch cannot talk to is no device
        return []


def accelerator_check(plan: Plan | None, torch: Any, cpus: int) -> Check:
    devices = [] if torch is None else _devices(torch)
    seen = f"{len(devices)} x {devices[0][0]} ({units.gib(devices[0][1])})" if devices else "no CUDA device"
    if plan is None:
        if torch is None:
            return Check(name="accelerator", status="warn", found=f"{cpus} CPUs; GPUs not checked: torch is missing")
        return Check(name="accelerator", status="ok", found=f"{seen}; {cpus} CPUs")
    cluster = plan.cluster
    if cluster.accelerator == "cpu":
        processes = cluster.gpus_per_node
        if cpus >= processes:
            return Check(name="accelerator", status="ok", found=f"cpu plan: {cpus} CPUs for {processes} processes")
        return Check(name="accelerator", status="warn",
                     found=f"cpu plan: {cpus} CPUs for {processes} processes: they share cores, slower than planned",
                     hint=f"apply --nproc-per-node {cpus} (gradient accumulation keeps the global batch)")
    wanted = f"{cluster.gpus_per_node} x {cluster.accelerator_name} per node"
    if torch is None:
        return Check(name="accelerator", status="FAIL",
                     found=f"not checked: torch is missing (the plan needs {wanted})", hint=TRAIN_INSTALL)
    if not devices:
        return Check(name="accelerator", status="FAIL", found=f"no CUDA device; the plan needs {wanted}",
                     hint="run on the plan's cluster (torch.cuda.is_available() is False here)")
    if len(devices) < cluster.gpus_per_node:
        return Check(name="accelerator", status="FAIL", found=f"{seen}; the plan needs {wanted}",
                     hint=f"apply --nproc-per-node {len(devices)} runs on these (more memory per device than planned: "
                          "rehearse it first)")
    from familyc.cost.accelerators import accelerator

    key = accelerator(cluster.accelerator).torchtitan_peak_name or cluster.accelerator.upper()
    names = {name for name, _ in devices}
    if not all(key.lower() in name.lower() for name in names):
        return Check(name="accelerator", status="warn", found=f"{seen}; the plan assumes {cluster.accelerator_name}",
                     hint="its memory and time predictions are for that device: re-plan with this one's accelerator")
    smallest = min(memory for _, memory in devices)
    if smallest < cluster.memory_bytes * 0.98:  # the table's memory, less what a driver keeps back
        return Check(name="accelerator", status="warn",
                     found=f"{seen}; the plan assumes {units.gib(cluster.memory_bytes)} per device",
                     hint="a stage planned to fit may not: rehearse it (familyc rehearse) or re-plan")
    nodes = f"; the plan runs on {cluster.nodes} nodes, each like this one" if cluster.nodes > 1 else ""
    return Check(name="accelerator", status="ok", found=f"{seen} (the plan: {wanted}){nodes}")


def nccl_check(torch: Any) -> Check:
    if torch is None:
        return Check(name="nccl", status="FAIL", found="not checked: torch is missing", hint=TRAIN_INSTALL)
    if not _devices(torch):
        return Check(name="nccl", status="FAIL", found=f"not usable: no CUDA device (torch {torch.__version__})",
                     hint="the plan's devices talk over NCCL: run on the plan's cluster, with a CUDA build of torch")
    try:
        version = torch.cuda.nccl.version()
        available = torch.distributed.is_available() and torch.distributed.is_nccl_available()
    except Exception as exc:
        return Check(name="nccl", status="FAIL", found=f"unavailable ({type(exc).__name__}: {exc})",
                     hint="the plan's devices talk over NCCL: install a CUDA build of torch")
    shown = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    if not available:
        return Check(name="nccl", status="FAIL", found=f"{shown}, but torch.distributed has no NCCL backend",
                     hint="install a CUDA build of torch")
    return Check(name="nccl", status="ok", found=f"NCCL {shown}")


# --- disk -----------------------------------------------------------------------------------------

def disk_free(path: Path) -> int:
    """Free bytes on the disk that holds `path`, as apply reads them (shutil.disk_usage)."""
    return shutil.disk_usage(path).free


def existing_parent(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (a run directory apply has not made yet)."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def disk_check(plan: Plan, run_dir: Path, free_bytes: Callable[[Path], int]) -> Check:
    """Free space against what apply checks before each stage (Plan.disk_bytes), for the largest stage; a warning
    when the members' checkpoints, which stay, would not fit beside it."""
    stages = list(plan.train_steps())
    if not stages:
        return Check(name="disk", status="ok", found="the plan trains nothing")
    largest = max(stages, key=plan.disk_bytes)
    need = plan.disk_bytes(largest)
    members = sum(member_checkpoint_bytes(plan.member(s.member).params, moments=plan.saves_optimizer(s))
                  for s in stages if s is not largest)
    where = existing_parent(run_dir)
    free = free_bytes(where)
    at = f"{run_dir}" + ("" if where == run_dir.absolute() else f" (not made yet: the disk of {where})")
    found = f"{units.gib(free)} free at {at}; its largest stage, {largest.id}, needs {units.gib(need)}"
    if free < need:
        return Check(name="disk", status="FAIL", found=found, hint="free disk space, or use another --run-dir")
    if free < need + members:
        return Check(name="disk", status="warn", found=f"{found}, and the members kept before it "
                                                         f"{units.gib(members)}",
                     hint="apply checks each stage as it starts: free more space, or use another --run-dir")
    return Check(name="disk", status="ok", found=found)


# --- the report -----------------------------------------------------------------------------------

def plan_check(plan: Plan, plan_file: Path | None) -> Check:
    """A plan file whose spec changed since is what apply refuses first."""
    what = f"plan {plan.plan_id} (family {plan.family.name})"
    if plan_file is None:
        return Check(name="plan", status="ok", found=f"{what}, compiled from the spec now")
    try:
        warning = check_spec_unchanged(plan, plan_file=plan_file)
    except FamilycError as exc:
        return Check(name="plan", status="FAIL", found=exc.message, hint=exc.hint)
    if warning:
        return Check(name="plan", status="warn", found=f"{what}: {warning}")
    return Check(name="plan", status="ok", found=f"{what}, its spec {plan.spec.path} unchanged")


def doctor(plan: Plan | None, *, plan_file: Path | None = None, target: str | None = None,
           run_dir: Path | None = None, offline: bool = False, train_extra: Sequence[str] = (),
           free_bytes: Callable[[Path], int] = disk_free) -> DoctorReport:
    """Every check, in the order the text prints them. `train_extra`: the modules apply requires (torch,
    torchtitan and triton have lines of their own); `free_bytes`: how free space is read (tests pass a full disk)."""
    torch = import_torch()
    on_gpus = plan is not None and plan.cluster.accelerator != "cpu"
    checks = [plan_check(plan, plan_file)] if plan is not None else []
    checks += [python_check(), torch_check(torch), torchtitan_check(), triton_check(needed=on_gpus),
               extra_check([m for m in train_extra if m not in ("torch", "torchtitan", "triton")])]
    cpus = cpu_count()
    checks.append(accelerator_check(plan, torch, cpus))
    if (on_gpus and plan is not None and plan.cluster.devices > 1) or (
            plan is None and torch is not None and len(_devices(torch)) > 1):
        checks.append(nccl_check(torch))
    if plan is not None:
        checks.append(disk_check(plan, run_dir or default_run_dir(plan), free_bytes))
    checks += input_checks(plan, plan_file=plan_file, offline=offline)
    title = f"familyc doctor: {target}" if target else "familyc doctor: the environment (no plan)"
    return DoctorReport(target=target, title=title, checks=tuple(checks))
