"""AdamW's moments across a growth step (`optimizer: carry`): saved by the source stage, loaded by the grown one.

torchtitan 0.2.2 saves a stage's last checkpoint model-only, and a full checkpoint would also carry the LR
scheduler, the data loader and the train state, none of which belongs to the next member. So a stage whose
member a growth step carries the optimizer from saves, after its last step, only the optimizer's *state*
tensors to a DCP folder of its own, under the keys of torchtitan's flattened optimizer state dict
(`OptimizersContainer.state_dict()`):

    state.<fqn>.exp_avg      first moment, the parameter's shape
    state.<fqn>.exp_avg_sq   second moment
    state.<fqn>.step         the parameter's step count (a 0-d tensor)

familyc.expand.moments maps that folder through the growth step's index maps into the grown member's
initial checkpoint, and the grown stage loads it before its first step: only these tensors, so the
parameter groups (the LR, which the stage's own fresh scheduler sets), the scheduler, the data position and
the train state are the new stage's. DCP reshards on load, so the grown stage may run on another number of
ranks than the source did.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

STATE_PREFIX = "state."
MOMENT_NAMES = ("exp_avg", "exp_avg_sq")
"""AdamW's two moments (the order of a moment: 1 and 2); the step count travels with them."""
STEP_NAME = "step"
CARRIED_KIND = "optimizer_carried"
"""The kind of the metrics record a stage writes when it has loaded carried moments."""


def moment_key(fqn: str, name: str) -> str:
    """The flattened optimizer state key of `name` (exp_avg, exp_avg_sq, step) of parameter `fqn`."""
    return f"{STATE_PREFIX}{fqn}.{name}"


def _state_tensors(optimizers: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """torchtitan's flattened optimizer state dict (torch initialises empty state first) and its state tensors."""
    full: dict[str, Any] = optimizers.state_dict()
    return full, {k: v for k, v in full.items() if k.startswith(STATE_PREFIX)}


def _barrier() -> None:
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _rank() -> int:
    import torch

    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def save_moments(optimizers: Any, path: Path) -> int:
    """Save the optimizer's state tensors to the DCP folder `path` (every rank its shards); returns how many.

    Written to a sibling and renamed into place by rank 0, so `path` is whole or absent (a stage resumed
    after a crash here saves again)."""
    from torch.distributed.checkpoint.state_dict_saver import save

    _, tensors = _state_tensors(optimizers)
    partial = path.with_name(f".{path.name}.partial")
    if _rank() == 0:
        shutil.rmtree(partial, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    _barrier()
    save(tensors, checkpoint_id=str(partial))
    _barrier()
    if _rank() == 0:
        if path.exists():
            shutil.rmtree(path)
        os.rename(partial, path)
    _barrier()
    return len(tensors)


def load_moments(optimizers: Any, path: Path) -> dict[str, Any]:
    """Load every state tensor of `optimizers` from the DCP folder `path`, in place, and nothing else.

    Returns what a metrics record states: how many tensors, and the LR of every parameter group after the load
    (the stage's own schedule's, untouched)."""
    from torch.distributed.checkpoint.state_dict_loader import load

    full, tensors = _state_tensors(optimizers)
    load(tensors, checkpoint_id=str(path))
    full.update(tensors)
    optimizers.load_state_dict(full)
    lrs = [float(group["lr"]) for optimizer in optimizers for group in optimizer.param_groups]
    return {"kind": CARRIED_KIND, "step": 0, "tensors": len(tensors), "source": str(path), "group_lrs": lrs}
