"""A stage's final checkpoint becomes a member; an expansion's output gets its sidecar.

Promotion, crash-safe in three moves: the final model-only checkpoint (the DCP folder
`dump/checkpoint/step-N`) is renamed to `.<name>.moving` next to the member's folder, the stage's data
position, its final optimizer moments when a growth step carries them (`optimizer/`, moved from the dump
folder) and the sidecar (sha256 of every file) are put into it, and it is renamed to members/<name>/ (or
baselines/<name>/). A crash between any two leaves something the next apply
recognises and finishes (`Executor._adopt`). Only then are the stage's periodic checkpoints deleted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from familyc.backend.job import CHECKPOINT_FOLDER
from familyc.backend.job import final_checkpoint as torchtitan_final_checkpoint
from familyc.checkpoint import METADATA_FILE, OPTIMIZER_FOLDER
from familyc.checkpoint.sidecar import MEMBER_SIDECAR, GrowthRecord, Sidecar, folder_digests, write_sidecar
from familyc.execute.failpoints import failpoint
from familyc.plan.ir import Plan
from familyc.plan.steps import ExpandStep, TrainStep

MEMBER_DTYPE = "float32"
"""Members are saved model-only in fp32 (torchtitan checkpoint.export_dtype, familyc.backend.job)."""


def is_complete(checkpoint: Path) -> bool:
    """DCP writes `.metadata` last: a folder that has it is whole."""
    return (checkpoint / METADATA_FILE).is_file()


def is_trained(weights: Path) -> bool:
    return (weights / MEMBER_SIDECAR).is_file()


def final_checkpoint(dump: Path, step: TrainStep) -> Path:
    """Where torchtitan writes the stage's model-only save after its last step."""
    return torchtitan_final_checkpoint(dump, step.num_steps)


def moving(weights: Path) -> Path:
    """The member's folder while it is being promoted."""
    return weights.with_name(f".{weights.name}.moving")


def expansion_sidecar(plan: Plan, step: ExpandStep) -> Sidecar:
    """The sidecar of an expand step's output (its files are added as they are written)."""
    return Sidecar(kind="expansion", member=step.member, shape=plan.shape(step.member), plan_id=plan.plan_id,
                   step=step.id, norm_eps=plan.member(step.member).norm_eps, growth=growth_record(step))


def growth_record(step: ExpandStep) -> GrowthRecord:
    return GrowthRecord(width=step.width, depth=step.depth, gqa=step.gqa, seed=step.seed, noise=step.noise,
                        exactness=step.exactness, reasons=step.reasons, optimizer_state=step.optimizer_state)


def promote(plan: Plan, step: TrainStep, final: Path, weights: Path, *, data_position: Path,
            moments: Path | None = None) -> Sidecar:
    """Move the final checkpoint into `weights` with the stage's data position, its final optimizer moments
    (`moments`: the folder the stage saved them to; None: it saved none) and a sidecar."""
    staging = moving(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    if not staging.exists():
        os.rename(final, staging)
    failpoint("promote-moved")
    if data_position.is_file():  # the member keeps where its data ended (the next stage starts there)
        shutil.copyfile(data_position, staging / data_position.name)
    if moments is not None and is_complete(moments) and not (staging / OPTIMIZER_FOLDER).exists():
        os.rename(moments, staging / OPTIMIZER_FOLDER)
    files = folder_digests(staging)
    sidecar = Sidecar(kind="member", member=step.member, shape=plan.shape(step.member), plan_id=plan.plan_id,
                      step=step.id, dtype=MEMBER_DTYPE, norm_eps=plan.member(step.member).norm_eps,
                      init_from=step.init_from)
    written = write_sidecar(staging, sidecar, files)
    os.rename(staging, weights)
    return written


def drop_periodic_checkpoints(dump: Path) -> None:
    """The stage's full training checkpoints, once its member is safe."""
    shutil.rmtree(dump / CHECKPOINT_FOLDER, ignore_errors=True)


def drop_torn_checkpoints(dump: Path) -> None:
    """Remove a checkpoint folder without one complete save (apply was killed during the stage's first).

    torchtitan resumes from the folder whenever it exists and ignores `initial_load_path` then; finding
    no complete step in it, it would train the stage from random weights instead of the grown ones."""
    folder = dump / CHECKPOINT_FOLDER
    if folder.is_dir() and not any(is_complete(p) for p in folder.glob("step-*")):
        shutil.rmtree(folder)
