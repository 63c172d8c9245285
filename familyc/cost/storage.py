"""Bytes on disk: the checkpoints a growth step reads and writes, and what a training stage needs free.

Member checkpoints are model-only fp32 (torchtitan checkpoint.export_dtype = float32): 4 bytes per
parameter. A stage's periodic checkpoints are full training states: fp32 weights (4 bytes per
parameter) and AdamW's two fp32 moments (8); gradients are not saved, and 4 more bytes per parameter
are headroom for the dataloader and train state: 16. torchtitan keeps the newest two
(familyc.backend.job KEEP_LATEST_K), and the stage ends with its model-only save, which promotion then
moves (on the same disk, a rename: counted twice for safety).

A member a growth step carries the optimizer from (`optimizer: carry`) also keeps AdamW's final moments
next to its weights (two fp32 tensors per parameter: 8 bytes; the per-tensor step counts are a few
hundred scalars, below a megabyte at 8B, and not counted), and the expansion writes the grown moments
next to the grown weights.
"""

from __future__ import annotations

MEMBER_BYTES_PER_PARAM = 4
MOMENT_BYTES_PER_PARAM = 8
PERIODIC_BYTES_PER_PARAM = 4 + 8 + 4
KEPT_PERIODIC_CHECKPOINTS = 2


def member_checkpoint_bytes(params: int, *, moments: bool = False) -> int:
    """A member's (or an expansion's) checkpoint: its weights, and its AdamW moments when they are kept."""
    return params * (MEMBER_BYTES_PER_PARAM + (MOMENT_BYTES_PER_PARAM if moments else 0))


def stage_disk_bytes(params: int, *, moments: bool = False) -> int:
    """Free space a training stage of a `params`-parameter member needs for its checkpoints (`moments`: it also
    saves its final optimizer moments for a growth step that carries them)."""
    return params * PERIODIC_BYTES_PER_PARAM * KEPT_PERIODIC_CHECKPOINTS + member_checkpoint_bytes(params,
                                                                                                   moments=moments) * 2
