"""File-system helpers shared by the writers of checkpoints and exports (torch-free).

Both write into a temporary sibling folder `.NAME.tmp-PID`, fsync it and rename it into place; a folder
left by a writer that was killed is recognised by its PID and removed by the next writer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def temporary_sibling(dst: Path) -> Path:
    """Where a writer of `dst` in this process writes before renaming."""
    return dst.with_name(f".{dst.name}.tmp-{os.getpid()}")


def sync_folder(path: Path) -> None:
    """fsync a directory, so a rename inside it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def remove_stale_temporaries(dst: Path) -> None:
    """Temporary folders for `dst` left by writers that no longer run (killed mid-write)."""
    for tmp in dst.parent.glob(f".{dst.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
