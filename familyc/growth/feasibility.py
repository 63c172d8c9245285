"""Whether a growth step is possible, and whether it preserves the function exactly. Torch-free.

`validate` and the compiler use this before any weights exist; the operators in
`familyc.expand.operators` implement exactly what is judged possible here.

The reasoning, per part of the Llama 3 block (see ../shared/notes/method.md):
- Residual width (dim): new channels copy old ones through one index map used from the
  embedding to the output head; every matrix that reads the residual divides the copied
  input columns by their copy count. The only non-linear reader is RMSNorm, whose RMS is
  unchanged only when every channel is copied the same number of times: exact iff the new
  dim is an integer multiple of the old one.
- Attention: grown by whole heads, head_dim fixed (RoPE untouched). A new KV head copies an
  old one; each new group's query heads copy query heads of the group its KV head came from,
  and wo divides each copied head's input columns by that head's copy count: exact for any
  counts, provided every old query head is copied at least once.
- FFN (SwiGLU): new hidden units copy old ones (w1, w3 rows), w2 divides the copied columns by
  their count: exact for any counts (the non-linearity is per unit).
- AKI takes the new FFN units and heads from the next layer instead: a different function.
- Depth: zero_insert adds blocks whose wo and w2 are zero, so each adds nothing to the
  residual stream: exact. stack and interpolate copy whole blocks: a different function.
- Noise added to break the symmetry of copies makes any step approximate.

Copies get identical gradients and stay identical in training: the copying operators above add
width that never learns apart (measured: BENCHMARKS.md). Three operators break the symmetry and
stay exact for any wider shape (../shared/notes/growth.md). Each copies every residual channel,
FFN unit and head k = floor(new / old) times and makes the remainder NEW, initialised to add
nothing: new residual channels get zero writers and random readers, new FFN units and heads random
writers and zero readers. The stream's RMS then shrinks by sqrt(k old / new), which the norm
weights and the member's norm eps absorb exactly (`norm_eps_scale`):
- split (LEMON): the readers of the k copies of a unit take unequal shares of the original, summing
  to one; the writers' gradients scale with the shares, so the copies diverge;
- paired (HyperCloning): the readers of the copies take 1/k of the original plus perturbations that
  cancel across the copies;
- zero (MSG / LLaMA Pro for width): no copies at all (k = 1): every new unit is NEW.
Old query heads must keep a KV head that is theirs or a copy (zero copies none: at least as many
query heads per KV head as the source).
"""

from __future__ import annotations

from dataclasses import dataclass

from familyc.enums import (
    APPROXIMATE,
    DEPTH_OPERATORS,
    EXACT,
    IMPOSSIBLE,
    WIDTH_OPERATORS,
    Exactness,
    GqaMode,
)
from familyc.growth.maps import width_rounds
from familyc.shape import ModelShape

BREAKING = ("split", "paired", "zero")
"""Width operators that break the symmetry of copies and stay exact for any wider shape (see the module docstring)."""

__all__ = ["APPROXIMATE", "DEPTH_OPERATORS", "EXACT", "IMPOSSIBLE", "WIDTH_OPERATORS", "GrowthAssessment", "Problem",
           "assess_growth"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    field: str
    """The target shape's field or the operator (`width`, `depth`) the problem is about."""
    message: str
    hint: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class GrowthAssessment:
    exactness: Exactness
    problems: tuple[Problem, ...]
    """Why it is impossible (empty otherwise)."""
    reasons: tuple[str, ...]
    """Why it is only approximate (empty when exact or impossible)."""
    gqa: GqaMode
    summary: str
    norm_eps_scale: float = 1.0
    """The grown member's RMSNorm eps over the source's (see `norm_eps_scale`)."""

    @property
    def possible(self) -> bool:
        return self.exactness != IMPOSSIBLE


def _gqa_mode(src: ModelShape, dst: ModelShape) -> GqaMode:
    if (src.n_heads, src.n_kv_heads) == (dst.n_heads, dst.n_kv_heads):
        return "unchanged"
    if dst.n_kv_heads == src.n_kv_heads:
        return "keep_kv"
    if dst.n_rep == src.n_rep:
        return "grow_kv"
    return "mixed"


def assess_growth(src: ModelShape, dst: ModelShape, *, width: str, depth: str, noise: float = 0.0) -> GrowthAssessment:
    problems: list[Problem] = []
    reasons: list[str] = []
    if width not in WIDTH_OPERATORS:
        problems.append(Problem(field="width", message=f"unknown width operator {width!r}"))
    if depth not in DEPTH_OPERATORS:
        problems.append(Problem(field="depth", message=f"unknown depth operator {depth!r}"))
    if dst.vocab_size != src.vocab_size:
        problems.append(Problem(field="vocab_size", message="members of a family share one vocabulary"))
    fields = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim")
    shrinking = [f"{name} {getattr(src, name)} -> {getattr(dst, name)}" for name in fields
                 if getattr(dst, name) < getattr(src, name)]
    if shrinking:
        problems.append(Problem(field="shape", message="growth cannot shrink " + ", ".join(shrinking),
                                hint="the member grown into must be at least as large in every dimension; "
                                     "are from and to swapped?"))
    if all(getattr(src, f) == getattr(dst, f) for f in fields):
        problems.append(Problem(field="shape", message="the target has the same shape as the source: nothing grows",
                                hint="remove this growth step, or give the target a larger shape"))
    gqa = _gqa_mode(src, dst)
    widens = any(getattr(src, f) != getattr(dst, f) for f in ("dim", "n_heads", "n_kv_heads", "ffn_dim"))
    deepens = dst.n_layers != src.n_layers
    parts: list[str] = []

    if widens and not problems:
        parts.append(f"width {width}: dim {src.dim}->{dst.dim}, heads {src.n_heads}/{src.n_kv_heads}->"
                     f"{dst.n_heads}/{dst.n_kv_heads} ({gqa}), ffn {src.ffn_dim}->{dst.ffn_dim}")
        if width == "none":
            problems.append(Problem(field="width", message="the width changes but the width operator is none",
                                    hint="use zero, split or paired (exact for any wider shape), fpi, aki or exact"))
        if dst.head_dim != src.head_dim:
            problems.append(Problem(
                field="n_heads",
                message=f"head_dim changes ({src.head_dim} -> {dst.head_dim}); growth adds whole heads and keeps "
                        "head_dim so RoPE is untouched",
                hint=f"keep head_dim {src.head_dim}: set n_heads to dim / {src.head_dim}"
                     + (f" = {dst.dim // src.head_dim}" if dst.dim % src.head_dim == 0 else "")))
        elif dst.n_kv_heads >= src.n_kv_heads and dst.n_heads >= src.n_heads:
            fewest_copies = 1 if width == "zero" else dst.n_kv_heads // src.n_kv_heads  # zero copies no KV head
            if fewest_copies * dst.n_rep < src.n_rep:
                problems.append(Problem(
                    field="n_kv_heads",
                    message=f"with {dst.n_kv_heads} KV heads of {dst.n_rep} query heads each, some of the "
                            f"{src.n_rep} query heads per group of the source would be dropped",
                    hint="keep at least as many query heads per KV head" + (
                        "" if width == "zero" else ", or grow KV heads by a whole multiple")))
        if width == "exact" and not problems:
            uneven = [f"{name} {getattr(src, name)}->{getattr(dst, name)}" for name in ("dim", "ffn_dim")
                      if getattr(dst, name) % getattr(src, name)]
            k = dst.dim // src.dim
            if dst.n_kv_heads not in (src.n_kv_heads, k * src.n_kv_heads):
                uneven.append(f"n_kv_heads {src.n_kv_heads}->{dst.n_kv_heads} (keep it, or multiply it by {k})")
            if uneven:
                problems.append(Problem(field="width", message="width exact copies every unit k times and needs "
                                        "whole multiples: " + ", ".join(uneven),
                                        hint="use fpi for other ratios (approximate when dim is not a multiple)"))
        if not problems:
            if dst.dim % src.dim and width not in BREAKING:
                reasons.append(f"dim {src.dim}->{dst.dim} is not a whole multiple: channels copied unevenly "
                               "change the RMS that RMSNorm sees")
            if width == "aki" and (dst.ffn_dim != src.ffn_dim or dst.n_heads != src.n_heads):
                reasons.append("aki takes new FFN units and heads from the next layer")

    if deepens and not problems:
        parts.append(f"depth {depth}: {src.n_layers}->{dst.n_layers} layers")
        if depth == "none":
            problems.append(Problem(field="depth",
                                    message="the number of layers changes but the depth operator is none",
                                    hint="use zero_insert (exact), stack or interpolate"))
        elif depth in ("stack", "interpolate"):
            reasons.append(f"{depth} copies whole blocks, which changes the function")
    if noise > 0 and not problems:
        reasons.append(f"noise {noise:g} is added to copied weights")

    exactness: Exactness
    if problems:
        exactness = IMPOSSIBLE
        reasons = []
    else:
        exactness = APPROXIMATE if reasons else EXACT
    summary = "; ".join(parts) if parts else "no growth"
    return GrowthAssessment(exactness=exactness, problems=tuple(problems), reasons=tuple(reasons), gqa=gqa,
                            summary=summary, norm_eps_scale=norm_eps_scale(src, dst, width))


def norm_eps_scale(src: ModelShape, dst: ModelShape, width: str) -> float:
    """The factor on the grown member's RMSNorm eps that keeps the function (1 for the copying operators).

    The symmetry-breaking operators copy each residual channel k times (zero: once) and leave the other
    dst.dim - k src.dim channels at zero, so mean(x^2) over the wider stream is k src.dim / dst.dim of the
    source's. RMSNorm divides by sqrt(mean(x^2) + eps): with eps scaled by the same factor, and the norm
    weights by its square root, every old channel's output is the source's (familyc.expand.breaking)."""
    if width not in BREAKING:
        return 1.0
    return width_rounds(width, src.dim, dst.dim) * src.dim / dst.dim
