"""Grow a checkpoint on disk: read the source DCP folder, run the growth's recipes, write the target.

The target's tensors are computed one at a time (familyc.expand.operators gives each its recipe) and
written by familyc.checkpoint.writer as they are made. A source tensor that later targets read again
(a block's weights feed its copies) is kept in a small cache, within a byte budget.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import torch

from familyc.checkpoint.reader import SourceCheckpoint
from familyc.checkpoint.sidecar import Sidecar
from familyc.checkpoint.writer import Getter, TensorRecipe, WrittenCheckpoint, write_checkpoint
from familyc.errors import CheckpointError
from familyc.meter import Start, quiet

CACHE_BYTES = 512 * 2**20
"""Source tensors kept for later targets (a 4B layer is ~170 MB; embeddings are never kept)."""


class Recipes(Protocol):
    """A growth step as this module needs it (familyc.expand.operators.Expansion is one)."""

    def source_keys(self) -> dict[str, tuple[int, ...]]:
        """Every key the source checkpoint must hold, with its shape."""
        ...

    def targets(self, dtype: torch.dtype) -> Iterator[TensorRecipe]:
        """Every target tensor, in the order it is written, each with its recipe."""
        ...


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


def _cached(targets: list[TensorRecipe], cache: _SourceCache) -> Iterator[TensorRecipe]:
    for index, target in enumerate(targets):
        def compute(get: Getter, target: TensorRecipe = target, index: int = index) -> torch.Tensor:
            try:
                return target.compute(cache.get)
            finally:
                cache.finished(index)

        yield dataclasses.replace(target, compute=compute)


def expand_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], expansion: Recipes, *,
                      sidecar: Sidecar | None, include: dict[str, Path] | None = None,
                      progress: Start = quiet) -> WrittenCheckpoint:
    """Grow the checkpoint at `src` into `dst` (`sidecar`, `include`: familyc.checkpoint.writer's). Every
    problem with the source, the destination and the free space is reported at once, before anything is
    written; then `progress` (familyc.meter) counts the bytes written."""
    dst = Path(dst)
    source = SourceCheckpoint(src)
    found = source.problems(expansion.source_keys())
    if dst.exists() or dst.is_symlink():
        found.append(f"{dst}: already exists; familyc never overwrites a checkpoint")
    if found:
        raise CheckpointError(found, hint=source.hint(found))
    dtype = source.dtype()
    targets = list(expansion.targets(dtype))
    needed = sum(math.prod(t.shape) for t in targets) * dtype.itemsize
    free = shutil.disk_usage(_existing_parent(dst)).free
    if needed > free:
        raise CheckpointError(f"{dst}: needs {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB free there")
    cache = _SourceCache(source.read, [t.sources for t in targets])
    written = write_checkpoint(dst, _cached(targets, cache), cache.get, sidecar=sidecar, include=include,
                               advance=progress(f"writing {dst}", needed, "bytes"))
    return dataclasses.replace(written, bytes_read=cache.bytes_read)


def _existing_parent(path: Path) -> Path:
    path = path.absolute().parent
    while not path.exists():
        path = path.parent
    return path
