"""Writing files so that a crash never leaves a torn one; hashing them. Torch-free.

- `atomic_write` (one file: state.json, plan files, inputs.json, caches, profiles) writes a temporary
  sibling, fsyncs it and renames it over the old file: readers see the old or the new bytes, never a mix.
- `atomic_folder` (checkpoints, exports) writes into a temporary sibling folder `.NAME.tmp-PID`, fsyncs
  it and renames it into place; a folder left by a writer that was killed is recognised by its PID and
  removed by the next writer.
- `write_synced` writes one file inside such a folder; `sha256_file` hashes a file of any size.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(dst: Path, *, appeared: Callable[[], Exception] | None = None) -> Iterator[Path]:
    """Yield an empty temporary sibling of `dst` to write into; on a clean exit fsync it and rename it to
    `dst`, so `dst` appears complete or not at all. If `dst` came into existence meanwhile, raise
    `appeared()` and leave it untouched, or, without `appeared` (a cache that concurrent writers fill
    with the same content), keep it and discard this copy. On any error the temporary folder is removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dst)
    tmp = temporary_sibling(dst)
    shutil.rmtree(tmp, ignore_errors=True)  # only this process could have left it
    try:
        tmp.mkdir()
        yield tmp
        sync_folder(tmp)
        if dst.exists() or dst.is_symlink():
            if appeared is not None:
                raise appeared()
            shutil.rmtree(tmp, ignore_errors=True)
            return
        try:
            os.rename(tmp, dst)
        except OSError:  # another writer renamed its copy first
            if appeared is not None or not dst.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return
        sync_folder(dst.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: Path, data: bytes | str) -> str:
    """Replace `path` with `data` (str: UTF-8) atomically and durably; return its sha256 (hex)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        digest = write_synced(tmp, raw)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)
    return digest


def sha256_file(path: str | os.PathLike[str]) -> str:
    sha = hashlib.sha256()
    buffer = bytearray(8 * 2**20)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            sha.update(memoryview(buffer)[:n])
    return sha.hexdigest()


def write_synced(path: Path, data: bytes) -> str:
    """Write `data` to `path`, fsync it, and return its sha256 (hex)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


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
