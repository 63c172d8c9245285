"""The symmetry-breaking width operators on weights: split, paired and zero. Exact for any wider shape.

What each is and why it is exact: familyc.growth.feasibility (the judgement) and
../shared/notes/growth.md (the algebra). Here, per target tensor, with the maps of
familyc.growth.maps (a unit copies a source unit, or is NEW):

  writers of the residual stream   tok_embeddings columns, wo rows, w2 rows: copies; NEW ones zero
  readers of the residual stream   columns of wq, wk, wv, w1, w3, output: the copies of channel i share
                                   its column (split: unequal shares summing to one; paired: 1/c each
                                   plus perturbations that sum to zero over the copies); NEW ones random
  writers of heads and FFN units   rows of wq / wk, wv / w1, w3: copies; NEW ones random
  readers of heads and FFN units   wo columns / w2 columns: the copies share them as above; NEW ones zero
  RMSNorm weights                  the copied channel's weight times sqrt(k d / d'); NEW ones the mean of
                                   those (non-zero, so gradients reach the new channels)

so every copy carries its source's value, every NEW unit carries zero, and each reader adds up what the
source read. The member's norm eps is scaled by k d / d' (the plan's member.norm_eps), which makes the
RMSNorm of the wider stream give the source's output on the old channels. Random entries are drawn
with the std of their source tensor, seeded per tensor; rows are processed in chunks, so temporaries
stay small next to 128K-row embeddings.

For AdamW's moments (moment 1 or 2): the same gathers with every share and norm scale s raised to the
moment's order (s, s^2), no cancelling perturbation, and every NEW entry zero (no optimizer history).
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable
from typing import Literal

import torch

from familyc.checkpoint.writer import Getter
from familyc.growth.maps import NEW, IndexMaps
from familyc.shape import ModelShape

CHUNK_ROWS = 8192
"""Rows processed at a time when a tensor needs a float32 temporary (bounds memory for 128K vocabularies)."""
SPLIT_RANGE = (0.5, 1.5)
"""split: each copy's unnormalized share is uniform in this range (LEMON draws unequal shares)."""
PAIRED_SCALE = 0.5
"""paired: the std of the cancelling perturbation on a reader, relative to the std of its source tensor."""
FALLBACK_STD = 0.02
"""The std of random entries when the source tensor's is zero (torchtitan's own init std)."""

Fill = Literal["zero", "random"]
Recipe = tuple[tuple[str, ...], Callable[[Getter], torch.Tensor]]


def _tensor(index_map: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(index_map, dtype=torch.long)


def _head_units(head_map: tuple[int, ...], head_dim: int) -> torch.Tensor:
    """A head map as a map of its rows (or columns): head h covers [h hd, (h + 1) hd); NEW stays NEW."""
    heads = _tensor(head_map)
    base = heads.repeat_interleave(head_dim) * head_dim + torch.arange(head_dim).repeat(len(head_map))
    return torch.where(heads.repeat_interleave(head_dim) == NEW, NEW, base)


def _shares(index_map: tuple[int, ...], width: str, rng: random.Random) -> torch.Tensor:
    """Per target unit, its share of the source unit it copies (0 for NEW): split draws unequal shares that sum
    to one over the copies of each unit; paired and zero take 1 / copies."""
    weights = [0.0 if i == NEW else (rng.uniform(*SPLIT_RANGE) if width == "split" else 1.0) for i in index_map]
    totals: dict[int, float] = {}
    for i, w in zip(index_map, weights, strict=True):
        if i != NEW:
            totals[i] = totals.get(i, 0.0) + w
    return torch.tensor([0.0 if i == NEW else w / totals[i] for i, w in zip(index_map, weights, strict=True)],
                        dtype=torch.float64)


class _Axis:
    """How one axis of a target tensor comes from the source: which source index, its share, what NEW gets."""

    def __init__(self, index: torch.Tensor, shares: torch.Tensor | None, new: Fill, old: int) -> None:
        self.index, self.shares, self.new, self.old = index, shares, new, old
        self.is_new = index == NEW
        self.safe = torch.where(self.is_new, 0, index)
        self.copies = torch.bincount(index[~self.is_new], minlength=old).to(torch.float64)

    def __len__(self) -> int:
        return len(self.index)


class BreakingRecipes:
    """The recipes of one split / paired / zero growth step (see the module docstring)."""

    def __init__(self, src: ModelShape, dst: ModelShape, maps: IndexMaps, *, width: str, seed: int,
                 norm_scale: float, moment: int = 0) -> None:
        self.src, self.dst, self.maps, self.width, self.seed = src, dst, maps, width, seed
        self.moment = moment
        power = 2 if moment == 2 else 1
        self.norm_scale = math.sqrt(norm_scale) ** power
        rng = random.Random(seed * 7919 + 17)
        hd = src.head_dim
        dim_shares = _shares(maps.dim, width, rng) ** power
        head_shares = (_shares(maps.heads, width, rng) ** power).repeat_interleave(hd)
        ffn_shares = _shares(maps.ffn, width, rng) ** power
        random_fill: Fill = "zero" if moment else "random"
        self.dim_writer = _Axis(_tensor(maps.dim), None, "zero", src.dim)
        self.dim_reader = _Axis(_tensor(maps.dim), dim_shares, random_fill, src.dim)
        self.q_writer = _Axis(_head_units(maps.heads, hd), None, random_fill, src.n_heads * hd)
        self.q_reader = _Axis(_head_units(maps.heads, hd), head_shares, "zero", src.n_heads * hd)
        self.kv_writer = _Axis(_head_units(maps.kv, hd), None, random_fill, src.n_kv_heads * hd)
        self.ffn_writer = _Axis(_tensor(maps.ffn), None, random_fill, src.ffn_dim)
        self.ffn_reader = _Axis(_tensor(maps.ffn), ffn_shares, "zero", src.ffn_dim)

    def recipe(self, key: str, src_key: str) -> Recipe:
        """How target tensor `key` is made from source tensor `src_key` (the same key, or its layer's source)."""
        rest = key.split(".", 2)[2] if key.startswith("layers.") else key
        if rest.endswith("norm.weight"):
            return (src_key,), lambda get: self._norm(get(src_key))
        rows, cols = {
            "tok_embeddings.weight": (None, self.dim_writer),
            "output.weight": (None, self.dim_reader),
            "attention.wq.weight": (self.q_writer, self.dim_reader),
            "attention.wk.weight": (self.kv_writer, self.dim_reader),
            "attention.wv.weight": (self.kv_writer, self.dim_reader),
            "attention.wo.weight": (self.dim_writer, self.q_reader),
            "feed_forward.w1.weight": (self.ffn_writer, self.dim_reader),
            "feed_forward.w3.weight": (self.ffn_writer, self.dim_reader),
            "feed_forward.w2.weight": (self.dim_writer, self.ffn_reader),
        }[rest]
        return (src_key,), lambda get: self._matrix(key, get(src_key), rows, cols)

    def _norm(self, w: torch.Tensor) -> torch.Tensor:
        axis = self.dim_writer
        scaled = w.to(torch.float64) * self.norm_scale
        new_value = torch.zeros((), dtype=torch.float64) if self.moment else scaled.mean()
        out = torch.where(axis.is_new, new_value, scaled[axis.safe])
        return out.to(w.dtype)

    def _matrix(self, key: str, w: torch.Tensor, rows: _Axis | None, cols: _Axis) -> torch.Tensor:
        """w[rows][:, cols] with the shares, perturbations and NEW fills of both axes, in row chunks."""
        work = torch.float64 if w.dtype == torch.float64 else torch.float32
        std = float(w.to(torch.float64).std()) or FALLBACK_STD
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
        n_rows = len(rows) if rows is not None else w.shape[0]
        out = torch.empty((n_rows, len(cols)), dtype=w.dtype)
        shares = cols.shares.to(work) if cols.shares is not None else None
        for start in range(0, n_rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n_rows)
            source_rows = rows.safe[start:stop] if rows is not None else torch.arange(start, stop)
            block = w.index_select(0, source_rows).index_select(1, cols.safe).to(work)
            if shares is not None:
                block *= shares
                if self.width == "paired" and not self.moment:
                    block += self._cancelling(block.shape[0], cols, std, generator, work)
            block[:, cols.is_new] = self._fill(cols.new, (block.shape[0], int(cols.is_new.sum())), std, generator, work)
            if rows is not None:
                new_rows = rows.is_new[start:stop]
                block[new_rows] = self._fill(rows.new, (int(new_rows.sum()), block.shape[1]), std, generator, work)
            out[start:stop] = block.to(w.dtype)
        return out

    @staticmethod
    def _fill(kind: Fill, shape: tuple[int, int], std: float, generator: torch.Generator,
              work: torch.dtype) -> torch.Tensor:
        if kind == "zero" or 0 in shape:
            return torch.zeros(shape, dtype=work)
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(work) * std

    @staticmethod
    def _cancelling(n_rows: int, cols: _Axis, std: float, generator: torch.Generator,
                    work: torch.dtype) -> torch.Tensor:
        """Perturbations of the copies' columns that sum to zero over the copies of each source column (a column
        copied once gets none), computed in float64 so that they cancel to rounding."""
        z = torch.randn((n_rows, len(cols)), generator=generator, dtype=torch.float64) * (PAIRED_SCALE * std)
        z[:, cols.is_new] = 0.0
        sums = torch.zeros((n_rows, cols.old), dtype=torch.float64).index_add_(1, cols.safe, z)
        means = sums / cols.copies.clamp(min=1.0)
        return (z - means[:, cols.safe]).masked_fill(cols.is_new, 0.0).to(work)
