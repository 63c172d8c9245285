"""Write a DCP checkpoint folder one tensor at a time: exactly what `dcp.save` writes, streamed.

`write_checkpoint` writes what `dcp.save` of a flat {fqn: tensor} state dict writes in one process: one
data file `__0_0.distcp` of `torch.save` records and a `.metadata` built from DCP's own dataclasses, so
`dcp.load` and torchtitan's `checkpoint.initial_load_path` read it like one of torchtitan's own
single-rank saves (the tests load it both ways, and compare the metadata with `dcp.save`'s). Why not
`dcp.save` with a planner whose `resolve_data` computes each tensor? It works, but its file writer keeps
every tensor of a file alive until the file is closed (`tensor_dict`, for its safetensors branch), so
streaming needs one file per tensor; its loop variable keeps the previous tensor alive while the next is
computed; it wraps any exception, KeyboardInterrupt included, in a CheckpointException; and hashing
needs its private file system. Writing the records ourselves is as short, and gives one file, SHA-256
while writing, one fsync at the end, and a second thread that writes tensor i while tensor i + 1 is
computed.

Every write goes to a sibling `.{name}.tmp-{pid}` folder, is fsynced, and is renamed into place
(familyc.files.atomic_folder); on any exception (KeyboardInterrupt included) the temporary folder is
removed. The folder's sidecar (familyc.checkpoint.sidecar) records what produced it and the SHA-256 of
every file. Folders written before (`include`: a growth step's carried optimizer moments) are moved inside
before the sidecar is written, so they appear with the checkpoint, listed in its sidecar.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch.distributed.checkpoint import filesystem as dcp_filesystem
from torch.distributed.checkpoint import metadata as dcp_metadata

from familyc.checkpoint import DATA_FILE, METADATA_FILE
from familyc.checkpoint.sidecar import Sidecar, folder_digests, write_sidecar
from familyc.errors import CheckpointError
from familyc.files import atomic_folder, write_synced
from familyc.meter import Advance, no_progress

Getter = Callable[[str], torch.Tensor]
"""Reads a source tensor by key."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TensorRecipe:
    """One tensor to write: its key and shape, and how to compute it from source tensors."""

    key: str
    shape: tuple[int, ...]
    sources: tuple[str, ...]
    """Source keys `compute` reads (for ordering reads and for error messages)."""
    compute: Callable[[Getter], torch.Tensor]


@dataclass(frozen=True, kw_only=True, slots=True)
class WrittenCheckpoint:
    path: Path
    files: dict[str, str]
    """{file name: SHA-256} of the data file and `.metadata` (the sidecar records the same)."""
    bytes_written: int
    """All files, the sidecar included."""
    seconds: float
    bytes_read: int = 0
    """Source bytes read (each source tensor once, unless the cache had to drop it)."""


class _HashingFile:
    """A binary file being written and its SHA-256; large writes are hashed on a second thread meanwhile."""

    def __init__(self, f: IO[bytes], pool: ThreadPoolExecutor) -> None:
        self._f, self._pool, self.sha256 = f, pool, hashlib.sha256()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if view.nbytes < 2**20:
            self.sha256.update(view)
            return self._f.write(view)
        hashing = self._pool.submit(self.sha256.update, view)
        try:
            return self._f.write(view)
        finally:
            hashing.result()

    def flush(self) -> None:
        self._f.flush()

    def tell(self) -> int:
        return self._f.tell()


def write_checkpoint(dst: str | os.PathLike[str], items: Iterable[TensorRecipe], get: Getter, *,
                     sidecar: Sidecar | None, include: dict[str, Path] | None = None,
                     advance: Advance = no_progress) -> WrittenCheckpoint:
    """Write a DCP folder holding `item.compute(get)` for every item, in order, each computed only when
    it is written and dropped right after (then `advance(its bytes, its key)`). Atomic: `dst` appears complete or
    not at all, with the folders of `include` ({name inside dst: folder}) moved into it. `sidecar` None: none
    is written (a folder that is then included in another).

    While one tensor is written (and hashed) on a second thread, the next is computed: at most two
    target tensors are alive at once."""
    start = time.perf_counter()
    dst = Path(dst)
    if dst.exists() or dst.is_symlink():
        raise CheckpointError(f"{dst}: already exists; familyc never overwrites a checkpoint",
                              hint="choose another destination, or remove it first")
    with atomic_folder(dst, appeared=lambda: CheckpointError(
            f"{dst}: appeared while familyc was writing it; left untouched")) as tmp:
        files, records = {}, []
        # two workers: one writes a record, the other hashes what it writes
        with open(tmp / DATA_FILE, "wb") as raw, ThreadPoolExecutor(2, "familyc-writer") as pool:
            f, writing = _HashingFile(raw, pool), None
            for item in items:
                tensor = _compute(item, get, dst / DATA_FILE)
                if writing is not None:
                    records.append(writing.result())
                writing = pool.submit(_save, f, item.key, tensor, dst / DATA_FILE)
                advance(tensor.nbytes, item.key)
                del tensor
            if writing is not None:
                records.append(writing.result())
            _sync(raw)
            files[DATA_FILE] = f.sha256.hexdigest()
        metadata = pickle.dumps(_metadata(records, dst.absolute()))
        files[METADATA_FILE] = write_synced(tmp / METADATA_FILE, metadata)
        for name, folder in (include or {}).items():
            os.rename(folder, tmp / name)
            files.update({f"{name}/{file}": digest for file, digest in folder_digests(tmp / name).items()})
        if sidecar is not None:
            write_sidecar(tmp, sidecar, files)
    written = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    return WrittenCheckpoint(path=dst, files=files, bytes_written=written, seconds=time.perf_counter() - start)


def _compute(item: TensorRecipe, get: Getter, file: Path) -> torch.Tensor:
    try:
        tensor = item.compute(get)
    except Exception as e:
        e.add_note(f"while computing {item.key!r} for {file.parent} (nothing was written)")
        raise
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(item.shape):
        got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise CheckpointError(f"{file}: key {item.key!r} came out as {got}, expected shape {list(item.shape)}")
    tensor = tensor.detach().cpu().contiguous()
    if tensor.untyped_storage().nbytes() != tensor.nbytes:  # a view would save its whole storage
        tensor = tensor.clone()
    return tensor


def _save(f: _HashingFile, key: str, tensor: torch.Tensor,
          file: Path) -> tuple[str, tuple[int, ...], torch.dtype, int, int]:
    offset = f.tell()
    try:
        torch.save(tensor, f)  # type: ignore[arg-type]  # any object with write/flush/tell; torch names IO[bytes]
    except OSError as e:
        raise CheckpointError(f"{file}: cannot write key {key!r} ({e.strerror or e})") from e
    return key, tuple(tensor.shape), tensor.dtype, offset, f.tell() - offset


def _metadata(records: list[tuple[str, tuple[int, ...], torch.dtype, int, int]], checkpoint_id: Path) -> Any:
    """What dcp.save's DefaultSavePlanner + FileSystemWriter record for these tensors in one process."""
    md = dcp_metadata
    state_dict_metadata: dict[str, Any] = {}
    storage_data: dict[Any, Any] = {}
    for key, shape, dtype, offset, length in records:
        size, origin = torch.Size(shape), torch.Size([0] * len(shape))
        state_dict_metadata[key] = md.TensorStorageMetadata(
            properties=md.TensorProperties(dtype=dtype), size=size,
            chunks=[md.ChunkStorageMetadata(offsets=origin, sizes=size)])
        storage_data[md.MetadataIndex(fqn=key, offset=origin, index=0)] = dcp_filesystem._StorageInfo(
            relative_path=DATA_FILE, offset=offset, length=length)
    metadata = md.Metadata(state_dict_metadata=state_dict_metadata,
                           planner_data={key: (key,) for key, *_ in records}, storage_data=storage_data,
                           storage_meta=md.StorageMeta(checkpoint_id=checkpoint_id, save_id=str(uuid.uuid4())))
    if hasattr(dcp_filesystem, "CURRENT_DCP_VERSION"):  # as FileSystemWriter.finish stamps it
        metadata.version = dcp_filesystem.CURRENT_DCP_VERSION
    return metadata


def _sync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


