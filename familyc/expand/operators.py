"""Growth operators on the weights of torchtitan 0.2.2's Llama 3 model, one target tensor at a time.

Every target tensor is a *recipe* (familyc.checkpoint.writer.TensorRecipe): a function of at most two
source tensors. The in-memory API (`expand_state_dict`) and the streamed checkpoint expansion
(`familyc.expand.stream`) run the same recipes, so what the property tests prove about one holds for the other.

Notation: W[rows, cols] in torch's Linear layout (out_features, in_features); g_dim, g_heads,
g_kv, g_ffn the index maps (familyc.growth.maps); c(i) the copy count of source unit i.
  tok_embeddings [V, D]      = E[:, g_dim]                    (a lookup: no division)
  norms [D]                  = w[g_dim]
  wq [h'hd, D]               = Wq[rows of heads g_heads, g_dim] / c_dim(g_dim)
  wk, wv [kv'hd, D]          = W[rows of heads g_kv, g_dim] / c_dim(g_dim)
  wo [D, h'hd]               = Wo[g_dim, cols of heads g_heads] / c_head(g_heads)
  w1, w3 [f', D]             = W[g_ffn, g_dim] / c_dim(g_dim)
  w2 [D, f']                 = W2[g_dim, g_ffn] / c_ffn(g_ffn)
  output [V, D]              = O[:, g_dim] / c_dim(g_dim)
Fan-in division makes every copied input contribute its share, so each matrix computes what
the source computed (exactly, where familyc.growth.feasibility says so).
AKI: the rows of new (non-first) copies in wq, wk, wv, w1 and w3 come from the next source
block, not the block itself (bert2BERT's advanced knowledge initialisation); the division on the
reading side is unchanged.
zero_insert: a new block copies the block before it with wo and w2 zero.
noise > 0: each copied weight matrix gets N(0, (noise x std of its source)^2), seeded per tensor.
split, paired, zero: the symmetry-breaking operators, whose recipes are familyc.expand.breaking's (the
layer map and zero_insert are shared).
moment 1 or 2 (AdamW's first or second moment, for `optimizer: carry`; familyc.expand.moments): the same
gathers, with every scale s (1/c, a share) raised to the moment's order (s, s^2), no noise, and a new
block of zero_insert all zero (new units start with no optimizer history).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

import torch

from familyc.backend.keys import model_keys
from familyc.checkpoint.writer import Getter, TensorRecipe
from familyc.enums import IMPOSSIBLE
from familyc.errors import ExpansionError
from familyc.expand.breaking import CHUNK_ROWS, BreakingRecipes
from familyc.growth.feasibility import BREAKING, assess_growth
from familyc.growth.maps import IndexMaps, index_maps
from familyc.shape import ModelShape


def _head_rows(head_map: tuple[int, ...], head_dim: int) -> torch.Tensor:
    """Flat row (or column) indices of whole heads: head h covers [h*hd, (h+1)*hd)."""
    base = torch.tensor(head_map, dtype=torch.long).repeat_interleave(head_dim) * head_dim
    return base + torch.arange(head_dim).repeat(len(head_map))


def _index(index_map: torch.Tensor, old: int) -> torch.Tensor | None:
    """The map, or None when it is the identity (then the gather is a plain copy)."""
    return None if len(index_map) == old and _identity_prefix(index_map) == old else index_map


def _scale_for(index_map: torch.Tensor, copies: tuple[int, ...], power: int = 1) -> torch.Tensor | None:
    """(1 / copy count)^power per target unit, or None when every unit is copied once (no division)."""
    if max(copies) == 1:
        return None
    return ((1.0 / torch.tensor(copies, dtype=torch.float64)[index_map]) ** power).to(torch.float32)


def _identity_prefix(index_map: torch.Tensor) -> int:
    """How many leading entries of the map are 0, 1, 2, ... (old units keep their place). In Python on the map's
    values, so that it also runs under a FakeTensorMode (`familyc rehearse`), where a new tensor has none."""
    entries = index_map.tolist()
    return next((i for i, unit in enumerate(entries) if unit != i), len(entries))


def _take_columns(block: torch.Tensor, cols: torch.Tensor | None, out: torch.Tensor) -> None:
    """out[:] = block[:, cols]: the identity prefix as one slice copy, only the rest gathered."""
    if cols is None:
        out.copy_(block)
        return
    prefix = _identity_prefix(cols)
    out[:, :prefix] = block[:, :prefix]
    if prefix < len(cols):
        out[:, prefix:] = block.index_select(1, cols[prefix:])


def _gather(w: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None,
            col_scale: torch.Tensor | None = None) -> torch.Tensor:
    """w[rows][:, cols] * col_scale; None means identity (rows, cols) or 1 (scale).

    Without a scale the result keeps w's dtype exactly (a copy is a copy); with one, each chunk of
    rows is computed in float32 (float64 for float64 input) and rounded once. Rows go in chunks
    so that temporaries stay small next to 128K-row embedding matrices."""
    if w.dim() == 1:
        return w if rows is None else w.index_select(0, rows)
    if rows is None and cols is None and col_scale is None:
        return w
    n_rows = len(rows) if rows is not None else w.shape[0]
    n_cols = len(cols) if cols is not None else w.shape[1]
    out = torch.empty((n_rows, n_cols), dtype=w.dtype)
    work = torch.float64 if w.dtype == torch.float64 else torch.float32
    scale = col_scale.to(work) if col_scale is not None else None
    for start in range(0, n_rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n_rows)
        block = w.index_select(0, rows[start:stop]) if rows is not None else w[start:stop]
        if scale is None:
            _take_columns(block, cols, out[start:stop])
        else:
            gathered = torch.empty((stop - start, n_cols), dtype=w.dtype)
            _take_columns(block, cols, gathered)
            out[start:stop] = gathered.to(work) * scale
    return out


def _first_copies(index_map: tuple[int, ...]) -> torch.Tensor:
    """Mask of target units that are a source unit's first copy (the others are new units)."""
    seen: set[int] = set()
    mask = []
    for i in index_map:
        mask.append(i not in seen)
        seen.add(i)
    return torch.tensor(mask)


class Expansion:
    """The recipes of one growth step (source shape -> target shape with given operators)."""

    def __init__(self, src: ModelShape, dst: ModelShape, *, width: str = "fpi", depth: str = "zero_insert",
                 seed: int = 0, noise: float = 0.0, moment: int = 0) -> None:
        """`moment` 0: the weights; 1, 2: AdamW's first or second moment of them (see the module docstring)."""
        result = assess_growth(src, dst, width=width, depth=depth, noise=noise)
        if result.exactness == IMPOSSIBLE:
            raise ExpansionError("; ".join(p.message for p in result.problems))
        if moment not in (0, 1, 2):
            raise ValueError(f"moment {moment}: 0 (the weights), 1 or 2 (AdamW's moments)")
        self.src, self.dst = src, dst
        self.width, self.depth, self.seed = width, depth, seed
        self.noise = 0.0 if moment else noise
        self.moment = moment
        power = 2 if moment == 2 else 1
        self.assessment = result
        self.maps: IndexMaps = index_maps(src, dst, depth=depth, seed=seed, width=width)
        self._breaking = BreakingRecipes(src, dst, self.maps, width=width, seed=seed,
                                         norm_scale=result.norm_eps_scale, moment=moment) if width in BREAKING else None
        if self._breaking is not None:
            return
        m = self.maps
        dim = torch.tensor(m.dim, dtype=torch.long)
        ffn = torch.tensor(m.ffn, dtype=torch.long)
        q_rows, kv_rows = _head_rows(m.heads, src.head_dim), _head_rows(m.kv, src.head_dim)
        self._dim_scale = _scale_for(dim, m.dim_counts(src.dim), power)
        self._q_scale = _scale_for(torch.tensor(m.heads).repeat_interleave(src.head_dim), m.head_counts(src.n_heads),
                                   power)
        self._ffn_scale = _scale_for(ffn, m.ffn_counts(src.ffn_dim), power)
        self._dim = _index(dim, src.dim)
        self._ffn = _index(ffn, src.ffn_dim)
        self._q_rows = _index(q_rows, src.n_heads * src.head_dim)
        self._kv_rows = _index(kv_rows, src.n_kv_heads * src.head_dim)
        self._new_q = ~_first_copies(m.heads).repeat_interleave(src.head_dim)
        self._new_kv = ~_first_copies(m.kv).repeat_interleave(src.head_dim)
        self._new_ffn = ~_first_copies(m.ffn)
        self._all_q, self._all_kv, self._all_ffn = q_rows, kv_rows, ffn

    # --- keys -------------------------------------------------------------------------------
    def source_keys(self) -> dict[str, tuple[int, ...]]:
        return model_keys(self.src)

    def target_keys(self) -> dict[str, tuple[int, ...]]:
        return model_keys(self.dst)

    # --- recipes ----------------------------------------------------------------------------
    def targets(self, dtype: torch.dtype) -> Iterator[TensorRecipe]:
        """Every target tensor in the target's key order, each with its recipe (source dtype `dtype`)."""
        for key, shape in self.target_keys().items():
            sources, compute = self._recipe(key, shape, dtype)
            yield TensorRecipe(key=key, shape=shape, sources=sources, compute=self._with_noise(key, sources, compute))

    def _recipe(self, key: str, shape: tuple[int, ...],
                dtype: torch.dtype) -> tuple[tuple[str, ...], Callable[[Getter], torch.Tensor]]:
        if not key.startswith("layers."):
            return self._breaking.recipe(key, key) if self._breaking is not None else self._outer(key)
        _, index, rest = key.split(".", 2)
        source = self.maps.layers[int(index)]
        src_key = f"layers.{source.source}.{rest}"
        following = min(source.source + 1, self.src.n_layers - 1)
        next_key = f"layers.{following}.{rest}"
        aki = self.width == "aki" and following != source.source
        if source.zero_output and (self.moment or rest in ("attention.wo.weight", "feed_forward.w2.weight")):
            return (), lambda get: torch.zeros(shape, dtype=dtype)
        if self._breaking is not None:
            return self._breaking.recipe(key, src_key)
        dim, scale = self._dim, self._dim_scale
        if rest.endswith("_norm.weight"):
            return (src_key,), lambda get: _gather(get(src_key), dim, None)
        if rest == "attention.wo.weight":
            return (src_key,), lambda get: _gather(get(src_key), dim, self._q_rows, self._q_scale)
        if rest == "feed_forward.w2.weight":
            return (src_key,), lambda get: _gather(get(src_key), dim, self._ffn, self._ffn_scale)
        rows, new = {
            "attention.wq.weight": (self._q_rows, self._new_q),
            "attention.wk.weight": (self._kv_rows, self._new_kv),
            "attention.wv.weight": (self._kv_rows, self._new_kv),
            "feed_forward.w1.weight": (self._ffn, self._new_ffn),
            "feed_forward.w3.weight": (self._ffn, self._new_ffn),
        }[rest]
        if not aki or not bool(new.any()):
            return (src_key,), lambda get: _gather(get(src_key), rows, dim, scale)
        every_row = {"attention.wq.weight": self._all_q, "attention.wk.weight": self._all_kv,
                     "attention.wv.weight": self._all_kv}.get(rest, self._all_ffn)

        def aki_rows(get: Getter) -> torch.Tensor:
            out = _gather(get(src_key), rows, dim, scale)
            if out.data_ptr() == get(src_key).data_ptr():
                out = out.clone()  # an identity gather returns the source itself
            out[new] = _gather(get(next_key), every_row[new], dim, scale)
            return out

        return (src_key, next_key), aki_rows

    def _outer(self, key: str) -> tuple[tuple[str, ...], Callable[[Getter], torch.Tensor]]:
        """The embedding, the final norm and the output head (the copying operators)."""
        dim, scale = self._dim, self._dim_scale
        if key == "tok_embeddings.weight":
            return (key,), lambda get: _gather(get(key), None, dim)
        if key == "output.weight":
            return (key,), lambda get: _gather(get(key), None, dim, scale)
        return (key,), lambda get: _gather(get(key), dim, None)  # norm.weight

    def _with_noise(self, key: str, sources: tuple[str, ...],
                    compute: Callable[[Getter], torch.Tensor]) -> Callable[[Getter], torch.Tensor]:
        if self.noise <= 0 or not sources or key.endswith("norm.weight"):
            return compute

        def noisy(get: Getter) -> torch.Tensor:
            out = compute(get)
            std = float(get(sources[0]).float().std())
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
            noise = torch.randn(out.shape, generator=generator, dtype=torch.float32) * (self.noise * std)
            return (out.float() + noise).to(out.dtype)

        return noisy


def check_source(state_dict: dict[str, torch.Tensor], shape: ModelShape, *, where: str = "state dict") -> None:
    """Raise ExpansionError naming the key when the state dict is not a model of `shape`."""
    expected = model_keys(shape)
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    for problem, keys in (("missing key", missing), ("unexpected key", extra)):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise ExpansionError(f"{where}: {problem} {keys[0]!r}{more}; expected a model of {shape.describe()}")
    first = next(iter(state_dict))
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point() or tensor.dtype != state_dict[first].dtype:
            raise ExpansionError(f"{where}: key {key!r} has dtype {tensor.dtype} (key {first!r}: "
                                 f"{state_dict[first].dtype}); every tensor must share one floating-point dtype")
    for key, want in expected.items():
        got = tuple(state_dict[key].shape)
        if got != want:
            raise ExpansionError(f"{where}: key {key!r} has shape {list(got)}, expected {list(want)} for "
                                 f"{shape.describe()}")


def expand_state_dict(state_dict: dict[str, torch.Tensor], source_shape: ModelShape, target_shape: ModelShape, *,
                      width: str = "fpi", depth: str = "zero_insert", seed: int = 0,
                      noise: float = 0.0) -> dict[str, torch.Tensor]:
    """The target state dict (torchtitan 0.2.2 key names) grown from `state_dict`."""
    check_source(state_dict, source_shape)
    expansion = Expansion(source_shape, target_shape, width=width, depth=depth, seed=seed, noise=noise)
    dtype = next(iter(state_dict.values())).dtype
    return {t.key: t.compute(state_dict.__getitem__) for t in expansion.targets(dtype)}
