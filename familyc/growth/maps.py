"""Index maps of a growth step: which source unit each target unit copies. Torch-free, seeded.

One map per kind of unit, shared by every layer so that the function is preserved end to end:
  dim     residual channels (embedding -> every block -> norm -> output head)
  kv      key/value heads
  heads   query heads (each target group's heads copy heads of the group its KV head copies)
  ffn     SwiGLU hidden units
  layers  target block -> (source block, whether its output projections are zeroed)

Old units keep their place (the first `old` target units are the identity); new units are
drawn in rounds, each round a seeded permutation of the source units (bert2BERT samples new
units at random). Drawing whole rounds before repeating a unit makes the copy counts as even
as they can be: with a whole-multiple growth every unit is copied exactly k times, which is
what RMSNorm needs for the function to be preserved exactly.

The symmetry-breaking operators (split, paired, zero; familyc.growth.feasibility) copy every unit
the same number of whole rounds only, k = floor(new / old) (zero: k = 1, no copies at all), and
leave the rest NEW: a unit that copies nothing, initialised to add nothing to the function.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from familyc.shape import ModelShape

NEW = -1
"""In a map: a target unit that copies no source unit (a new unit, initialised to output zero)."""
COPYING = ("fpi", "aki", "exact", "none")
"""Width operators whose maps copy units for every new one (bert2BERT's rounds)."""


def rounds_map(old: int, new: int, rounds: int, rng: random.Random) -> tuple[int, ...]:
    """Identity for the first `old` units, then `rounds - 1` seeded permutation rounds of copies, then NEW."""
    if new < old or old < 1 or not 1 <= rounds <= max(1, new // old):
        raise ValueError(f"cannot grow {old} units into {new} in {rounds} rounds")
    copies = grow_map(old, rounds * old, rng)
    return copies + (NEW,) * (new - rounds * old)


def width_rounds(width: str, old: int, new: int) -> int:
    """How many copies of every unit a symmetry-breaking width operator makes (the rest are NEW)."""
    return 1 if width == "zero" else max(1, new // old)


def grow_map(old: int, new: int, rng: random.Random) -> tuple[int, ...]:
    """Identity for the first `old` units, then rounds of seeded permutations of range(old)."""
    if new < old or old < 1:
        raise ValueError(f"cannot grow {old} units into {new}")
    out = list(range(old))
    while len(out) < new:
        round_ = list(range(old))
        rng.shuffle(round_)
        out.extend(round_[: new - len(out)])
    return tuple(out)


def counts(index_map: tuple[int, ...], old: int) -> tuple[int, ...]:
    """How many target units copy each source unit (NEW units copy none)."""
    out = [0] * old
    for i in index_map:
        if i != NEW:
            out[i] += 1
    return tuple(out)


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerSource:
    source: int
    """The source block whose weights this target block starts from."""
    zero_output: bool
    """zero_insert: wo and w2 are zero, so the block adds nothing to the residual stream."""


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexMaps:
    dim: tuple[int, ...]
    kv: tuple[int, ...]
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    layers: tuple[LayerSource, ...]

    def dim_counts(self, old: int) -> tuple[int, ...]:
        return counts(self.dim, old)

    def head_counts(self, old: int) -> tuple[int, ...]:
        return counts(self.heads, old)

    def ffn_counts(self, old: int) -> tuple[int, ...]:
        return counts(self.ffn, old)


def _head_map(src: ModelShape, dst: ModelShape, kv_map: tuple[int, ...], rng: random.Random) -> tuple[int, ...]:
    """Target query head -> source query head, respecting the grouped-query structure.

    Target group g (its KV head copies source KV head kv_map[g]) holds dst.n_rep query heads; they
    copy query heads of source group kv_map[g]. All slots that a source group receives (over all its
    copies) are filled identity-first, then in seeded rounds, so each of its heads is used at least
    once whenever there are enough slots (feasibility checks that)."""
    slots: dict[int, list[tuple[int, int]]] = {}
    for g, source_group in enumerate(kv_map):
        slots.setdefault(source_group, []).extend((g, r) for r in range(dst.n_rep))
    out = [0] * dst.n_heads
    for source_group, places in slots.items():
        chosen = grow_map(src.n_rep, len(places), rng) if len(places) >= src.n_rep else tuple(range(len(places)))
        for (g, r), pick in zip(places, chosen, strict=True):
            out[g * dst.n_rep + r] = source_group * src.n_rep + pick
    return tuple(out)


def _breaking_head_map(src: ModelShape, dst: ModelShape, kv_map: tuple[int, ...], width: str,
                       rng: random.Random) -> tuple[int, ...]:
    """Target query head -> source query head or NEW, for the symmetry-breaking operators.

    As `_head_map`, but each source group's heads fill only whole rounds of the slots it receives (one
    round for zero), the rest are NEW; a target group whose KV head is NEW holds only NEW heads."""
    slots: dict[int, list[tuple[int, int]]] = {}
    for g, source_group in enumerate(kv_map):
        slots.setdefault(source_group, []).extend((g, r) for r in range(dst.n_rep))
    out = [NEW] * dst.n_heads
    for source_group, places in slots.items():
        if source_group == NEW:
            continue
        rounds = width_rounds(width, src.n_rep, len(places))
        for (g, r), pick in zip(places, rounds_map(src.n_rep, len(places), rounds, rng), strict=True):
            out[g * dst.n_rep + r] = NEW if pick == NEW else source_group * src.n_rep + pick
    return tuple(out)


def _layer_map(src_layers: int, dst_layers: int, depth: str) -> tuple[LayerSource, ...]:
    if dst_layers == src_layers:
        return tuple(LayerSource(source=i, zero_output=False) for i in range(src_layers))
    if depth == "stack":  # StackBERT / G_stack: the block sequence repeated
        return tuple(LayerSource(source=i % src_layers, zero_output=False) for i in range(dst_layers))
    if depth == "interpolate":  # each block duplicated in place: 0 0 1 1 2 2 ...
        return tuple(LayerSource(source=i * src_layers // dst_layers, zero_output=False) for i in range(dst_layers))
    if depth == "zero_insert":
        # LLaMA Pro: the n new blocks spread evenly, new block t after source block
        # ceil((t+1) L / n) - 1 (n = L: after every block; n = L/2: after every second), each a
        # copy of that block with its output projections zeroed.
        new = dst_layers - src_layers
        after: dict[int, int] = {}
        for t in range(new):
            position = -(-(t + 1) * src_layers // new) - 1
            after[position] = after.get(position, 0) + 1
        out = []
        for i in range(src_layers):
            out.append(LayerSource(source=i, zero_output=False))
            out.extend(LayerSource(source=i, zero_output=True) for _ in range(after.get(i, 0)))
        return tuple(out)
    raise ValueError(f"depth operator {depth!r} cannot change {src_layers} layers into {dst_layers}")


def index_maps(src: ModelShape, dst: ModelShape, *, depth: str, seed: int, width: str = "fpi") -> IndexMaps:
    """The maps of one growth step; deterministic for a seed. Assumes the step is feasible."""
    rng = random.Random(seed)
    layers = _layer_map(src.n_layers, dst.n_layers, depth)
    if width in COPYING:
        dim = grow_map(src.dim, dst.dim, rng)
        kv = grow_map(src.n_kv_heads, dst.n_kv_heads, rng)
        heads = _head_map(src, dst, kv, rng)
        ffn = grow_map(src.ffn_dim, dst.ffn_dim, rng)
        return IndexMaps(dim=dim, kv=kv, heads=heads, ffn=ffn, layers=layers)

    def rounds(old: int, new: int) -> tuple[int, ...]:
        return rounds_map(old, new, width_rounds(width, old, new), rng)

    dim = rounds(src.dim, dst.dim)
    kv = rounds(src.n_kv_heads, dst.n_kv_heads)
    heads = _breaking_head_map(src, dst, kv, width, rng)
    return IndexMaps(dim=dim, kv=kv, heads=heads, ffn=rounds(src.ffn_dim, dst.ffn_dim), layers=layers)
