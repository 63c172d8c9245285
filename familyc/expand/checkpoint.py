"""Streamed checkpoint I/O for growth: read a DCP folder one tensor at a time, write one the same way.

Peak memory is about the largest tensor (plus its source), never the model: growing a bf16 4B
into an 8B (8 GB in, 16 GB out) peaks at 2.3 GiB RSS (BENCHMARKS.md, "Expansion I/O").

Reading. A DCP folder (what torchtitan 0.2.2's CheckpointManager writes, one `__R_0.distcp` per
rank) has a pickled `.metadata`: for every key its shape, dtype and chunks, each chunk a
`torch.save` record at (file, offset, length). `SourceCheckpoint` unpickles it with an allowlist
(only DCP's own classes), checks every file's size and every record's zip header before anything
is read, and `read(key)` `torch.load`s (weights only) just that key's records and assembles them.

Writing: the on-disk format. `write_checkpoint` writes exactly what `dcp.save` of a flat
{fqn: tensor} state dict writes in one process: one data file `__0_0.distcp` of `torch.save`
records and a `.metadata` built from DCP's own dataclasses, so `dcp.load` and torchtitan's
`checkpoint.initial_load_path` read it like one of torchtitan's own single-rank saves (the tests
load it both ways, and compare the metadata with `dcp.save`'s). Why not `dcp.save` with a planner
whose `resolve_data` computes each tensor? It works, but its file writer keeps every tensor of a
file alive until the file is closed (`tensor_dict`, for its safetensors branch), so streaming
needs one file per tensor; its loop variable keeps the previous tensor alive while the next is
computed; it wraps any exception, KeyboardInterrupt included, in a CheckpointException; and
hashing needs its private file system. Writing the records ourselves is as short, and gives one
file, SHA-256 while writing, one fsync at the end, and a second thread that writes tensor i
while tensor i + 1 is computed.

Every write goes to a sibling `.{name}.tmp-{pid}` folder, is fsynced, and is renamed into place;
on any exception (KeyboardInterrupt included) the temporary folder is removed. A sidecar
`familyc-expansion.json` records what produced the checkpoint and the SHA-256 of every file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch.distributed.checkpoint import filesystem as dcp_filesystem
from torch.distributed.checkpoint import metadata as dcp_metadata

from familyc.errors import FamilycError
from familyc.expand.operators import Expansion, Getter, TargetTensor
from familyc.files import atomic_folder, write_synced

DATA_FILE = "__0_0.distcp"
METADATA_FILE = ".metadata"
SIDECAR_FILE = "familyc-expansion.json"
CACHE_BYTES = 512 * 2**20
"""Source tensors kept for later targets (a 4B layer is ~170 MB; embeddings are never kept)."""
_RECORD_MAGIC = b"PK\x03\x04"  # every torch.save record is a zip archive
_MAX_LINES = 12


class CheckpointError(FamilycError):
    """A checkpoint that cannot be read or written; every line names the file and, where there is one, the key."""

    def __init__(self, problems: str | Sequence[str], *, hint: str = "") -> None:
        lines = [problems] if isinstance(problems, str) else list(problems)
        shown = lines[:_MAX_LINES]
        if len(lines) > _MAX_LINES:
            shown.append(f"(and {len(lines) - _MAX_LINES} more problems)")
        super().__init__("\n".join(shown), hint=hint)
        self.problems = tuple(lines)


# --- reading ------------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {("pathlib", n) for n in ("Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")}
_ALLOWED_GLOBALS |= {("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict")}


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's `.metadata` holds only DCP dataclasses, torch.Size, dtypes and paths; refuse anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("torch.distributed.checkpoint") or (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout,
                                                                         torch.memory_format)):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which DCP metadata never contains")


@dataclass(frozen=True, slots=True)
class _Chunk:
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str
    offset: int
    length: int
    transforms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    shape: tuple[int, ...]
    dtype: torch.dtype
    chunks: tuple[_Chunk, ...]


class _Window(io.RawIOBase):
    """Bytes [start, start + length) of an open file, as the seekable stream torch.load wants."""

    def __init__(self, f: IO[bytes], start: int, length: int) -> None:
        super().__init__()
        self._f, self._start, self._length, self._pos = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self._pos = pos + (0, self._pos, self._length)[whence]
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self._length - self._pos))
        got = 0
        self._f.seek(self._start + self._pos)
        while got < want:  # one read(2) returns at most 2 GiB
            n = self._f.readinto(view[got:want])
            if not n:
                break
            got += n
        self._pos += got
        return got


class SourceCheckpoint:
    """A DCP checkpoint folder, read one tensor at a time. Raises CheckpointError for a folder that is
    missing, lacks `.metadata`, or whose metadata is unreadable; `problems()` finds everything else."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(f"{self.path}: no such checkpoint folder")
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: not a folder (a DCP checkpoint is a folder with a .metadata file)")
        md_path = self.path / METADATA_FILE
        if not md_path.is_file():
            raise CheckpointError(f"{md_path}: missing, so {self.path} is not a DCP checkpoint",
                                  hint="torchtitan saves to <dump_folder>/checkpoint/step-N/; give that folder")
        try:
            with open(md_path, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
            entries, others = _entries(metadata)
        except Exception as e:  # a truncated or garbled pickle raises almost anything
            raise CheckpointError(f"{md_path}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from e
        self._entries, self._others = entries, others

    def meta(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Every tensor key with its full shape and dtype, in the checkpoint's order."""
        return {k: (e.shape, e.dtype) for k, e in self._entries.items()}

    def problems(self, expected: Mapping[str, tuple[int, ...]] | None = None) -> list[str]:
        """Everything wrong with the folder, best first: data files, keys, shapes, dtypes. With
        `expected` ({key: shape}), the keys must be exactly those, with those shapes."""
        where = self.path
        found = self._file_problems()
        if expected is not None:
            found += [f"{where}: missing key {k!r} (expected shape {list(s)})"
                      for k, s in expected.items() if k not in self._entries]
            found += [f"{where}: unexpected key {k!r} (not a tensor)" for k in self._others if k not in expected]
            found += [f"{where}: unexpected key {k!r} with shape {list(e.shape)}"
                      for k, e in self._entries.items() if k not in expected]
            found += [f"{where}: key {k!r} has shape {list(e.shape)}, expected {list(expected[k])}"
                      for k, e in self._entries.items() if k in expected and e.shape != tuple(expected[k])]
        found += [f"{where}: key {k!r} has dtype {_name(e.dtype)}; weights must be floating point"
                  for k, e in self._entries.items() if not e.dtype.is_floating_point]
        floats = [e.dtype for e in self._entries.values() if e.dtype.is_floating_point]
        if len(set(floats)) > 1:
            common = max(set(floats), key=floats.count)
            found += [f"{where}: key {k!r} has dtype {_name(e.dtype)}, the others {_name(common)}; every tensor "
                      "must share one dtype" for k, e in self._entries.items()
                      if e.dtype.is_floating_point and e.dtype != common]
        return found

    def validate(self, expected: Mapping[str, tuple[int, ...]] | None = None) -> None:
        """Raise one CheckpointError listing every problem."""
        if found := self.problems(expected):
            raise CheckpointError(found, hint=self._hint(found))

    def dtype(self) -> torch.dtype:
        """The one dtype of every tensor (call after validate)."""
        if not self._entries:
            raise CheckpointError(f"{self.path}: holds no tensors")
        return next(iter(self._entries.values())).dtype

    def read(self, key: str) -> torch.Tensor:
        """One full tensor, assembled from its chunks; reads nothing else."""
        entry = self._entries.get(key)
        if entry is None:
            raise CheckpointError(f"{self.path}: no key {key!r}")
        if len(entry.chunks) == 1 and entry.chunks[0].sizes == entry.shape:
            return self._load(key, entry, entry.chunks[0])
        out = torch.empty(entry.shape, dtype=entry.dtype)
        for chunk in entry.chunks:
            view = out
            for dim, (start, size) in enumerate(zip(chunk.offsets, chunk.sizes, strict=True)):
                view = view.narrow(dim, start, size)
            view.copy_(self._load(key, entry, chunk))
        return out

    def _load(self, key: str, entry: _Entry, chunk: _Chunk) -> torch.Tensor:
        file = self.path / chunk.file
        where = f"{file}: key {key!r}"
        if chunk.transforms:
            raise CheckpointError(f"{where} is stored with stream transforms {list(chunk.transforms)}, "
                                  "which familyc does not read")
        try:
            with open(file, "rb", buffering=0) as f:
                tensor = torch.load(_Window(f, chunk.offset, chunk.length), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{where}: cannot load the record at offset {chunk.offset} ({chunk.length} "
                                  f"bytes): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != chunk.sizes or tensor.dtype != entry.dtype:
            got = f"shape {list(tensor.shape)} {_name(tensor.dtype)}" if isinstance(tensor, torch.Tensor) else \
                type(tensor).__name__
            raise CheckpointError(f"{where}: the record at offset {chunk.offset} holds {got}, the metadata says "
                                  f"shape {list(chunk.sizes)} {_name(entry.dtype)}")
        return tensor

    def _file_problems(self) -> list[str]:
        """Every data file exists and is long enough; every record starts like a torch.save archive."""
        by_file: dict[str, list[tuple[str, _Chunk]]] = {}
        for key, entry in self._entries.items():
            for chunk in entry.chunks:
                by_file.setdefault(chunk.file, []).append((key, chunk))
        found = []
        for name, chunks in by_file.items():
            file = self.path / name
            try:
                size = file.stat().st_size
                with open(file, "rb") as f:
                    for key, chunk in sorted(chunks, key=lambda kc: kc[1].offset):
                        if chunk.offset + chunk.length > size:
                            found.append(f"{file} is truncated: key {key!r} needs {chunk.length} bytes at offset "
                                         f"{chunk.offset}, the file has {size}")
                            break
                        f.seek(chunk.offset)
                        if not chunk.transforms and chunk.length and f.read(4) != _RECORD_MAGIC:
                            found.append(f"{file} is corrupt: key {key!r} has no torch.save record at offset "
                                         f"{chunk.offset}")
                            break
            except FileNotFoundError:
                found.append(f"{file}: missing data file (holds key {chunks[0][0]!r}"
                             + (f" and {len(chunks) - 1} more)" if len(chunks) > 1 else ")"))
            except OSError as e:
                found.append(f"{file}: cannot read ({e.strerror}); it holds key {chunks[0][0]!r}")
        return found

    def _hint(self, found: list[str]) -> str:
        if any(k.startswith(("optimizer.", "lr_scheduler", "dataloader", "train_state")) for k in self._others) or \
                any(k.startswith("optimizer.") for k in self._entries):
            return ("this is a full training checkpoint; growth reads model-only saves "
                    "(torchtitan's checkpoint.last_save_model_only=true at the last step)")
        if any("missing key" in p or "has shape" in p for p in found):
            return "is this the checkpoint of the member the growth step starts from?"
        return ""


def _entries(metadata: Any) -> tuple[dict[str, _Entry], list[str]]:
    """{key: _Entry} of every tensor, and the keys of non-tensor entries, from a DCP Metadata."""
    if not isinstance(metadata, dcp_metadata.Metadata):
        raise TypeError(f"holds a {type(metadata).__name__}, not DCP Metadata")
    storage: dict[tuple[str, tuple[int, ...]], Any] = {
        (index.fqn, tuple(index.offset or ())): info for index, info in metadata.storage_data.items()}
    entries, others = {}, []
    for key, md in metadata.state_dict_metadata.items():
        if not isinstance(md, dcp_metadata.TensorStorageMetadata):
            others.append(key)
            continue
        chunks = []
        for chunk in md.chunks:
            info = storage.get((key, tuple(chunk.offsets)))
            if info is None:
                raise ValueError(f"key {key!r}: no storage for the chunk at {list(chunk.offsets)}")
            chunks.append(_Chunk(tuple(chunk.offsets), tuple(chunk.sizes), info.relative_path, info.offset,
                                 info.length, tuple(getattr(info, "transform_descriptors", None) or ())))
        shape = tuple(md.size)
        covered = sum(math.prod(c.sizes) for c in chunks)
        if covered != math.prod(shape):
            raise ValueError(f"key {key!r}: its chunks hold {covered} of {math.prod(shape)} elements")
        entries[key] = _Entry(shape, md.properties.dtype, tuple(chunks))
    return entries, others


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The whole checkpoint in memory (small models: tests, `expand --verify`)."""
    source = SourceCheckpoint(path)
    source.validate()
    return {key: source.read(key) for key in source.meta()}


# --- writing ------------------------------------------------------------------------------------

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


def write_checkpoint(dst: str | os.PathLike[str], items: Iterable[TargetTensor], get: Getter, *,
                     sidecar: Mapping[str, Any]) -> WrittenCheckpoint:
    """Write a DCP folder holding `item.compute(get)` for every item, in order, each computed only when
    it is written and dropped right after. Atomic: `dst` appears complete or not at all.

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
                del tensor
            if writing is not None:
                records.append(writing.result())
            _sync(raw)
            files[DATA_FILE] = f.sha256.hexdigest()
        metadata = pickle.dumps(_metadata(records, dst.absolute()))
        files[METADATA_FILE] = write_synced(tmp / METADATA_FILE, metadata)
        text = json.dumps({**sidecar, "files": files}, indent=2, sort_keys=True) + "\n"
        write_synced(tmp / SIDECAR_FILE, text.encode())
    written = sum(p.stat().st_size for p in dst.iterdir())
    return WrittenCheckpoint(path=dst, files=files, bytes_written=written, seconds=time.perf_counter() - start)


def _compute(item: TargetTensor, get: Getter, file: Path) -> torch.Tensor:
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
        torch.save(tensor, f)
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


def sha256_file(path: str | os.PathLike[str]) -> str:
    sha = hashlib.sha256()
    buffer = bytearray(8 * 2**20)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            sha.update(memoryview(buffer)[:n])
    return sha.hexdigest()


def verify_sidecar(dst: str | os.PathLike[str], *, sidecar: str = SIDECAR_FILE) -> list[str]:
    """Problems with the checkpoint's files against its sidecar's hashes; empty when all match.

    `sidecar`: the sidecar's file name (expansions write familyc-expansion.json; `familyc apply`
    gives every trained member a familyc-member.json of the same form)."""
    dst = Path(dst)
    path = dst / sidecar
    try:
        files = json.loads(path.read_text())["files"]
        assert isinstance(files, dict)
    except FileNotFoundError:
        return [f"{path}: missing"]
    except Exception as e:
        return [f"{path}: unreadable ({type(e).__name__}: {e})"]
    found = []
    for name, want in sorted(files.items()):
        file = dst / name
        if not file.is_file():
            found.append(f"{file}: missing (the sidecar lists it)")
        elif (got := sha256_file(file)) != want:
            found.append(f"{file}: sha256 {got[:16]}… differs from the sidecar's {str(want)[:16]}…")
    found += [f"{dst / p.name}: not listed in the sidecar" for p in sorted(dst.iterdir())
              if p.name not in files and p.name != sidecar]
    return found


# --- expansion ----------------------------------------------------------------------------------

class _SourceCache:
    """Source tensors that later targets need again, within a byte budget; when over it, drop the one
    needed furthest ahead (the order of the targets is known, so this is Belady's optimal policy)."""

    def __init__(self, read: Callable[[str], torch.Tensor], plan: Sequence[tuple[str, ...]],
                 budget: int = CACHE_BYTES) -> None:
        self._read, self._budget = read, budget
        self._uses: dict[str, deque[int]] = {}
        for index, sources in enumerate(plan):
            for key in dict.fromkeys(sources):
                self._uses.setdefault(key, deque()).append(index)
        self._held: dict[str, torch.Tensor] = {}
        self.bytes_read = 0

    def get(self, key: str) -> torch.Tensor:
        tensor = self._held.get(key)
        if tensor is None:
            tensor = self._held[key] = self._read(key)
            self.bytes_read += tensor.nbytes
        return tensor

    def finished(self, index: int) -> None:
        """Target `index` is written: keep only what later targets read, within the budget."""
        for key in list(self._held):
            uses = self._uses.get(key, deque())
            while uses and uses[0] <= index:
                uses.popleft()
            if not uses:
                del self._held[key]
        while sum(t.nbytes for t in self._held.values()) > self._budget:
            del self._held[max(self._held, key=lambda k: self._uses[k][0])]


def _cached(targets: list[TargetTensor], cache: _SourceCache) -> Iterator[TargetTensor]:
    for index, target in enumerate(targets):
        def compute(get: Getter, target: TargetTensor = target, index: int = index) -> torch.Tensor:
            try:
                return target.compute(cache.get)
            finally:
                cache.finished(index)

        yield dataclasses.replace(target, compute=compute)


def expand_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], expansion: Expansion, *,
                      sidecar: Mapping[str, Any]) -> WrittenCheckpoint:
    """Grow the checkpoint at `src` into `dst`. Every problem with the source, the destination and the
    free space is reported at once, before anything is written."""
    dst = Path(dst)
    source = SourceCheckpoint(src)
    found = source.problems(expansion.source_keys())
    if dst.exists() or dst.is_symlink():
        found.append(f"{dst}: already exists; familyc never overwrites a checkpoint")
    if found:
        raise CheckpointError(found, hint=source._hint(found))
    dtype = source.dtype()
    targets = list(expansion.targets(dtype))
    needed = sum(math.prod(t.shape) for t in targets) * dtype.itemsize
    free = shutil.disk_usage(_existing_parent(dst)).free
    if needed > free:
        raise CheckpointError(f"{dst}: needs {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB free there")
    cache = _SourceCache(source.read, [t.sources for t in targets])
    written = write_checkpoint(dst, _cached(targets, cache), cache.get, sidecar=sidecar)
    return dataclasses.replace(written, bytes_read=cache.bytes_read)


def _existing_parent(path: Path) -> Path:
    path = path.absolute().parent
    while not path.exists():
        path = path.parent
    return path
