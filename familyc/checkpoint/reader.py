"""Read a DCP checkpoint folder one tensor at a time, after checking every file and record.

A DCP folder (what torchtitan 0.2.2's CheckpointManager writes, one `__R_0.distcp` per rank) has a
pickled `.metadata`: for every key its shape, dtype and chunks, each chunk a `torch.save` record at
(file, offset, length). `SourceCheckpoint` unpickles it with an allowlist (only DCP's own classes),
checks every file's size and every record's zip header before anything is read, and `read(key)`
`torch.load`s (weights only) just that key's records and assembles them.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import metadata as dcp_metadata

from familyc.checkpoint import METADATA_FILE
from familyc.errors import CheckpointError

RECORD_MAGIC = b"PK\x03\x04"
"""Every torch.save record is a zip archive."""

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

    def __init__(self, f: io.FileIO, start: int, length: int) -> None:
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
        found += [f"{where}: key {k!r} has dtype {dtype_name(e.dtype)}; weights must be floating point"
                  for k, e in self._entries.items() if not e.dtype.is_floating_point]
        floats = [e.dtype for e in self._entries.values() if e.dtype.is_floating_point]
        if len(set(floats)) > 1:
            common = max(set(floats), key=floats.count)
            found += [f"{where}: key {k!r} has dtype {dtype_name(e.dtype)}, the others {dtype_name(common)}; "
                      "every tensor must share one dtype" for k, e in self._entries.items()
                      if e.dtype.is_floating_point and e.dtype != common]
        return found

    def validate(self, expected: Mapping[str, tuple[int, ...]] | None = None) -> None:
        """Raise one CheckpointError listing every problem."""
        if found := self.problems(expected):
            raise CheckpointError(found, hint=self.hint(found))

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
                window = _Window(f, chunk.offset, chunk.length)
                # torch.load reads any seekable binary stream; its annotation names only IO[bytes]
                tensor = torch.load(window, map_location="cpu", weights_only=True)  # type: ignore[arg-type]
        except Exception as e:
            raise CheckpointError(f"{where}: cannot load the record at offset {chunk.offset} ({chunk.length} "
                                  f"bytes): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != chunk.sizes or tensor.dtype != entry.dtype:
            got = f"shape {list(tensor.shape)} {dtype_name(tensor.dtype)}" if isinstance(tensor, torch.Tensor) else \
                type(tensor).__name__
            raise CheckpointError(f"{where}: the record at offset {chunk.offset} holds {got}, the metadata says "
                                  f"shape {list(chunk.sizes)} {dtype_name(entry.dtype)}")
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
                        if not chunk.transforms and chunk.length and f.read(4) != RECORD_MAGIC:
                            found.append(f"{file} is corrupt: key {key!r} has no torch.save record at offset "
                                         f"{chunk.offset}")
                            break
            except FileNotFoundError:
                found.append(f"{file}: missing data file (holds key {chunks[0][0]!r}"
                             + (f" and {len(chunks) - 1} more)" if len(chunks) > 1 else ")"))
            except OSError as e:
                found.append(f"{file}: cannot read ({e.strerror}); it holds key {chunks[0][0]!r}")
        return found

    def hint(self, found: list[str]) -> str:
        """What the problems `found` suggest: a full training checkpoint, or another member's."""
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


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The whole checkpoint in memory (small models: tests, `expand --verify`)."""
    source = SourceCheckpoint(path)
    source.validate()
    return {key: source.read(key) for key in source.meta()}


