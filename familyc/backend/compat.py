"""Make torchtitan 0.2.2 train on a machine without an accelerator (CI, the tiny family).

Two patches, each needed on torch 2.13 CPU (verified: without either, a run fails as noted),
and nothing else; `enable_cpu()` applies them only when torch finds no accelerator.

1. Device. `torchtitan.tools.utils` picks `device_type = _get_available_device_type() or "cuda"`
   at import, so on a CPU box the Trainer calls `torch.cuda.set_device` and fails with
   `AttributeError: module 'torch._C' has no attribute '_cuda_setDevice'`; the metrics also call
   `torch.cuda.memory_stats` and friends. We set `device_type = "cpu"` and a small stand-in for
   the device module (memory figures are the process's peak resident set, VmHWM), and rebind
   both names in the torchtitan modules that imported them already (`from ... import device_type`).
2. Gradient reduction. torchtitan's llama3 `disable_fsdp_gradient_division` sets FSDP2's
   gradient divide factor to 1.0, which makes FSDP2 reduce-scatter with `ReduceOp.PREMUL_SUM`;
   gloo rejects it (`RuntimeError: Cannot use ReduceOp.PREMUL_SUM with Gloo`) at the first
   backward of a run with 2 or more ranks. We make every such module reduce with plain SUM,
   which is the same arithmetic for a factor of 1.0.

torchtitan 0.2.2's llama3 uses SDPA attention (no FlexAttention, which has no CPU backward),
and it needs no `torch.distributed.set_timeout` (0.3.x does), so no other patch is needed.
"""

from __future__ import annotations

import os
import resource
import sys
import types

import torch

_ENABLED = False
_PATCHES: set[object] = set()
"""The functions this module put in place of torch's (patching twice would wrap a wrapper)."""


def accelerator_present() -> bool:
    """CUDA, ROCm, XPU, MPS or a custom backend: what torchtitan's own device check would find."""
    return torch.accelerator.is_available()


def cpu_enabled() -> bool:
    """Whether `enable_cpu()` has patched torchtitan in this process."""
    return _ENABLED


def enable_cpu(*, force: bool = False) -> bool:
    """Patch torchtitan for CPU training unless an accelerator is present (`force`: patch anyway).

    Returns whether the patches are active. Idempotent; call it before the Trainer is built
    (before or after importing torchtitan)."""
    global _ENABLED
    if _ENABLED:
        return True
    if accelerator_present() and not force:
        return False
    import torchtitan.tools.utils as tt_utils

    tt_utils.device_type = "cpu"
    tt_utils.device_module = _cpu_device_module()
    _rebind_imported_names(tt_utils)
    _force_sum_reduction()
    _ENABLED = True
    return True


# --- 1. the device ------------------------------------------------------------------------------

def _peak_rss_bytes() -> int:
    """This process's peak resident set since the last reset (VmHWM), or since it started."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _reset_peak_rss(*_args: object, **_kwargs: object) -> None:
    try:  # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def _memory_stats(*_args: object, **_kwargs: object) -> dict[str, int]:
    peak = _peak_rss_bytes()
    return {"active_bytes.all.peak": peak, "reserved_bytes.all.peak": peak, "num_alloc_retries": 0, "num_ooms": 0}


def _cpu_device_module() -> types.SimpleNamespace:
    """What torchtitan 0.2.2 calls on its device module (train.py, components/metrics.py,
    distributed/utils.py, tools/profiling.py), answered for the CPU."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    properties = types.SimpleNamespace(name="cpu", total_memory=total)

    def nothing(*_args: object, **_kwargs: object) -> None:
        return None

    return types.SimpleNamespace(
        __name__="familyc.backend.compat.cpu_device_module",
        is_available=lambda: True, device_count=lambda: 1, current_device=lambda: 0,
        set_device=nothing, synchronize=nothing, empty_cache=nothing,
        get_device_name=lambda *_a, **_k: "cpu", get_device_properties=lambda *_a, **_k: properties,
        memory_stats=_memory_stats, reset_peak_memory_stats=_reset_peak_rss,
        manual_seed=torch.manual_seed, manual_seed_all=torch.manual_seed,
        memory=types.SimpleNamespace(_record_memory_history=nothing, _snapshot=dict),
    )


def _rebind_imported_names(tt_utils: types.ModuleType) -> None:
    """Modules imported before the patch hold their own `device_type` / `device_module` names."""
    for name, module in list(sys.modules.items()):
        if module is None or module is tt_utils or not name.startswith("torchtitan."):
            continue
        for attr in ("device_type", "device_module"):
            if attr in vars(module):
                setattr(module, attr, getattr(tt_utils, attr))


# --- 2. gradient reduction under gloo -----------------------------------------------------------

def _force_sum_reduction() -> None:
    from torch.distributed.fsdp import FSDPModule

    original = FSDPModule.set_gradient_divide_factor
    if original in _PATCHES:
        return

    def set_gradient_divide_factor(self: FSDPModule, factor: float) -> None:
        original(self, factor)
        self.set_force_sum_reduction_for_comms(True)

    _PATCHES.add(set_gradient_divide_factor)
    FSDPModule.set_gradient_divide_factor = set_gradient_divide_factor  # type: ignore[method-assign]  # the patch
