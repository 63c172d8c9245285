"""Bytes on disk: the checkpoints a growth step reads and writes, and what a training stage needs free.

Member checkpoints are model-only fp32 (torchtitan checkpoint.export_dtype = float32): 4 bytes per
parameter. A stage's periodic checkpoints are full training states: fp32 weights (4 bytes per
parameter) and AdamW's two fp32 moments (8); gradients are not saved, and 4 more bytes per parameter
are headroom for the dataloader and train state: 16. torchtitan keeps the newest two
(familyc.backend.job KEEP_LATEST_K), and the stage ends with its model-only save, which promotion then
moves (on the same disk, a rename: counted twice for safety).
"""

from __future__ import annotations

MEMBER_BYTES_PER_PARAM = 4
PERIODIC_BYTES_PER_PARAM = 4 + 8 + 4
KEPT_PERIODIC_CHECKPOINTS = 2


def member_checkpoint_bytes(params: int) -> int:
    """A member's (or an expansion's) model-only checkpoint."""
    return params * MEMBER_BYTES_PER_PARAM


def stage_disk_bytes(params: int) -> int:
    """Free space a training stage of a `params`-parameter member needs for its checkpoints."""
    return params * (PERIODIC_BYTES_PER_PARAM * KEPT_PERIODIC_CHECKPOINTS + MEMBER_BYTES_PER_PARAM * 2)
