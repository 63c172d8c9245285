"""Growth operators on torchtitan's own Llama 3 module: exact ones keep the logits, the others change them.

Property-based over random small shapes: every function-preserving combination (width fpi/exact,
GQA keep_kv / grow_kv / mixed, depth zero_insert, width and depth together) must give the same
logits (fp32, 1e-5) as the source; so must the symmetry-breaking operators (split, paired, zero) for
any wider shape, whole multiple or not, with the target's norm eps scaled as the plan scales it; and
their copies must not be symmetric. aki, stack, interpolate and noise must produce the declared
shapes and a different function.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan", reason="the operators are checked against torchtitan's Llama 3 module")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from familyc.errors import ExpansionError  # noqa: E402
from familyc.expand.operators import Expansion, expand_state_dict  # noqa: E402
from familyc.growth.feasibility import APPROXIMATE, EXACT, assess_growth  # noqa: E402
from familyc.growth.maps import NEW  # noqa: E402
from familyc.shape import ModelShape  # noqa: E402


def build_model_for_shape(shape: ModelShape, *, seq_len: int, rope_theta: float, seed: int = 0,
                          dtype: torch.dtype = torch.float32, norm_eps: float = 1e-5) -> torch.nn.Module:
    from torchtitan.models.llama3 import Transformer, TransformerModelArgs

    from familyc.cost.params import torchtitan_ffn_args

    multiple_of, multiplier = torchtitan_ffn_args(shape.dim, shape.ffn_dim)
    args = TransformerModelArgs(dim=shape.dim, n_layers=shape.n_layers, n_heads=shape.n_heads,
                                n_kv_heads=shape.n_kv_heads, vocab_size=shape.vocab_size, multiple_of=multiple_of,
                                ffn_dim_multiplier=multiplier, max_seq_len=seq_len, rope_theta=rope_theta,
                                norm_eps=norm_eps)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters in dtype; the RoPE table stays complex64
    try:
        model = Transformer(args)
        with torch.no_grad():
            model.init_weights()
    finally:
        torch.set_default_dtype(default)
    return model.eval()

VOCAB = 61
TOLERANCE = 1e-5
"""fp32: an exact operator must keep every logit within this."""
CHANGED = 1e-9
"""fp64: an approximate operator must move some logit by more than this (fp64 rounding is ~1e-15)."""
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _logits(shape: ModelShape, state: dict[str, torch.Tensor], tokens: torch.Tensor,
            dtype: torch.dtype = torch.float32, norm_eps: float = 1e-5) -> torch.Tensor:
    model = build_model_for_shape(shape, seq_len=tokens.shape[1], rope_theta=10000.0, dtype=dtype, norm_eps=norm_eps)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model(tokens)


def _source(shape: ModelShape, seed: int) -> dict[str, torch.Tensor]:
    model = build_model_for_shape(shape, seq_len=16, rope_theta=10000.0, seed=seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    for key, value in state.items():  # norms start at 1: perturb them so that copying them is tested
        if key.endswith("norm.weight"):
            value.add_(0.2 * torch.randn(value.shape, generator=generator))
    return state


def _compare(src: ModelShape, dst: ModelShape, *, width: str, depth: str, seed: int = 0,
             noise: float = 0.0, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> float:
    """max |logit(source) - logit(grown)| on random tokens (`scale`: of the source's weights, as in a model
    whose activations are small). The grown model's norm eps is the source's times the step's norm_eps_scale."""
    state = {k: (v * (1.0 if k.endswith("norm.weight") else scale)).to(dtype) for k, v in _source(src, seed).items()}
    eps = 1e-5 * assess_growth(src, dst, width=width, depth=depth).norm_eps_scale
    grown = expand_state_dict(state, src, dst, width=width, depth=depth, seed=seed, noise=noise)
    assert {k: tuple(v.shape) for k, v in grown.items()} == {
        k: tuple(v.shape) for k, v in build_model_for_shape(dst, seq_len=16, rope_theta=10000.0).state_dict().items()}
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(seed))
    return float((_logits(src, state, tokens, dtype) - _logits(dst, grown, tokens, dtype, eps)).abs().max())


@st.composite
def source_shapes(draw: st.DrawFn) -> ModelShape:
    head_dim = draw(st.sampled_from([2, 4, 8]))
    kv = draw(st.integers(1, 3))
    rep = draw(st.integers(1, 3))
    return ModelShape(dim=head_dim * kv * rep, n_layers=draw(st.integers(1, 3)), n_heads=kv * rep, n_kv_heads=kv,
                      ffn_dim=draw(st.integers(1, 24)), vocab_size=VOCAB)


@st.composite
def exact_growths(draw: st.DrawFn) -> tuple[ModelShape, ModelShape, str, str]:
    """A source, a target and operators that must preserve the function exactly."""
    src = draw(source_shapes())
    grow_width = draw(st.booleans())
    grow_depth = draw(st.booleans()) or not grow_width
    dim, heads, kv, ffn = src.dim, src.n_heads, src.n_kv_heads, src.ffn_dim
    width = "none"
    if grow_width:
        k = draw(st.integers(1, 3))
        width = draw(st.sampled_from(["fpi", "exact"]))
        # GQA: keep the KV heads, grow them with their groups, or a mix (a divides k * n_rep)
        a = draw(st.sampled_from([d for d in range(1, k * src.n_rep + 1) if (k * src.n_rep) % d == 0]))
        if width == "exact":
            a = draw(st.sampled_from([1, k]))
        dim, heads, kv = k * src.dim, k * src.n_heads, a * src.n_kv_heads
        ffn = src.ffn_dim * draw(st.integers(1, 3)) if width == "exact" else draw(st.integers(src.ffn_dim, 40))
        if (dim, heads, kv, ffn) == (src.dim, src.n_heads, src.n_kv_heads, src.ffn_dim):
            ffn += src.ffn_dim if width == "exact" else 1
    layers = draw(st.integers(src.n_layers + 1, 3 * src.n_layers)) if grow_depth else src.n_layers
    dst = ModelShape(dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv, ffn_dim=ffn, vocab_size=VOCAB)
    return src, dst, width, "zero_insert" if grow_depth else "none"


@PROPERTY
@given(case=exact_growths(), seed=st.integers(0, 2**16))
def test_function_preserving_growth_keeps_the_logits(case: tuple[ModelShape, ModelShape, str, str], seed: int) -> None:
    src, dst, width, depth = case
    assert assess_growth(src, dst, width=width, depth=depth).exactness == EXACT, (src, dst, width, depth)
    assert _compare(src, dst, width=width, depth=depth, seed=seed) <= TOLERANCE


@st.composite
def wider_shapes(draw: st.DrawFn) -> tuple[ModelShape, ModelShape]:
    """A source and any wider target with the same head_dim: whole multiples or not, GQA grown either way (old
    query heads keep at least as many slots per KV head, which every symmetry-breaking operator needs)."""
    src = draw(source_shapes())
    kv = src.n_kv_heads + draw(st.integers(0, 3))
    rep = src.n_rep + draw(st.integers(0, 3))
    ffn = src.ffn_dim + draw(st.integers(0, 30))
    layers = src.n_layers + draw(st.integers(0, 2))
    dst = ModelShape(dim=src.head_dim * kv * rep, n_layers=layers, n_heads=kv * rep, n_kv_heads=kv, ffn_dim=ffn,
                     vocab_size=VOCAB)
    if (dst.dim, dst.ffn_dim) == (src.dim, src.ffn_dim):
        dst = ModelShape(dim=dst.dim, n_layers=dst.n_layers, n_heads=dst.n_heads, n_kv_heads=dst.n_kv_heads,
                         ffn_dim=dst.ffn_dim + 1, vocab_size=VOCAB)
    return src, dst


@PROPERTY
@given(case=wider_shapes(), width=st.sampled_from(["split", "paired", "zero"]), seed=st.integers(0, 2**16))
def test_symmetry_breaking_growth_is_exact_for_any_wider_shape(case: tuple[ModelShape, ModelShape], width: str,
                                                              seed: int) -> None:
    src, dst = case
    depth = "zero_insert" if dst.n_layers > src.n_layers else "none"
    assert assess_growth(src, dst, width=width, depth=depth).exactness == EXACT, (src, dst, width)
    assert _compare(src, dst, width=width, depth=depth, seed=seed) <= TOLERANCE
    # small activations (embeddings of std ~0.02): where eps matters; the scaled eps keeps it exact
    assert _compare(src, dst, width=width, depth=depth, seed=seed, scale=0.02) <= TOLERANCE


def test_the_symmetry_breaking_operators_leave_no_twins() -> None:
    """Copies under split and paired are read differently (their gradients differ); zero copies nothing."""
    src = ModelShape(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=24, vocab_size=VOCAB)
    dst = ModelShape(dim=40, n_layers=2, n_heads=10, n_kv_heads=2, ffn_dim=50, vocab_size=VOCAB)
    state = _source(src, 3)
    for width in ("split", "paired"):
        grown = expand_state_dict(state, src, dst, width=width, depth="none", seed=1)
        out = grown["output.weight"]  # reads the residual: channel i and its copy 16 + j share column i
        maps = Expansion(src, dst, width=width, depth="none", seed=1).maps
        copy = next(t for t in range(src.dim, dst.dim) if maps.dim[t] >= 0)
        original = maps.dim[copy]
        assert not torch.allclose(out[:, copy], out[:, original]), width
        assert torch.allclose(out[:, copy] + out[:, original], state["output.weight"][:, original], atol=1e-6)
        assert torch.equal(grown["tok_embeddings.weight"][:, copy], grown["tok_embeddings.weight"][:, original])
    grown = expand_state_dict(state, src, dst, width="zero", depth="none", seed=1)
    maps = Expansion(src, dst, width="zero", depth="none", seed=1).maps
    assert maps.dim == tuple(range(src.dim)) + (NEW,) * (dst.dim - src.dim) and maps.ffn[src.ffn_dim:] == (NEW,) * 26
    assert bool((grown["tok_embeddings.weight"][:, src.dim:] == 0).all())  # new channels start at zero
    assert bool((grown["layers.0.feed_forward.w2.weight"][:, src.ffn_dim:] == 0).all())  # new units add nothing
    new_heads = torch.tensor([h == NEW for h in maps.heads]).repeat_interleave(src.head_dim)
    assert sorted(h for h in maps.heads if h != NEW) == list(range(src.n_heads))  # every old head, once
    assert bool((grown["layers.0.attention.wo.weight"][:, new_heads] == 0).all())  # new heads add nothing
    assert float(grown["output.weight"][:, src.dim:].std()) > 0  # readers of the new channels are random


def test_zero_growth_needs_room_for_the_old_heads_in_their_groups() -> None:
    src = ModelShape(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=24, vocab_size=VOCAB)
    fewer_per_group = ModelShape(dim=32, n_layers=2, n_heads=8, n_kv_heads=8, ffn_dim=24, vocab_size=VOCAB)
    assert assess_growth(src, fewer_per_group, width="zero", depth="none").exactness == "impossible"
    assert assess_growth(src, fewer_per_group, width="split", depth="none").exactness == EXACT  # KV heads copied
    assert _compare(src, fewer_per_group, width="split", depth="none") <= TOLERANCE


@PROPERTY
@given(src=source_shapes(), k=st.integers(2, 3), seed=st.integers(0, 2**16))
def test_aki_changes_the_function(src: ModelShape, k: int, seed: int) -> None:
    src = ModelShape(dim=src.dim, n_layers=max(2, src.n_layers), n_heads=src.n_heads, n_kv_heads=src.n_kv_heads,
                     ffn_dim=src.ffn_dim, vocab_size=VOCAB)
    dst = ModelShape(dim=k * src.dim, n_layers=src.n_layers, n_heads=k * src.n_heads, n_kv_heads=src.n_kv_heads,
                     ffn_dim=k * src.ffn_dim, vocab_size=VOCAB)
    assert assess_growth(src, dst, width="aki", depth="none").exactness == APPROXIMATE
    assert _compare(src, dst, width="aki", depth="none", seed=seed, dtype=torch.float64) > CHANGED


@PROPERTY
@given(src=source_shapes(), extra=st.integers(1, 4), depth=st.sampled_from(["stack", "interpolate"]),
       seed=st.integers(0, 2**16))
def test_stacking_and_interpolation_change_the_function(src: ModelShape, extra: int, depth: str, seed: int) -> None:
    dst = ModelShape(dim=src.dim, n_layers=src.n_layers + extra, n_heads=src.n_heads, n_kv_heads=src.n_kv_heads,
                     ffn_dim=src.ffn_dim, vocab_size=VOCAB)
    assert assess_growth(src, dst, width="none", depth=depth).exactness == APPROXIMATE
    assert _compare(src, dst, width="none", depth=depth, seed=seed, dtype=torch.float64) > CHANGED


def test_non_multiple_width_is_approximate_and_noise_breaks_exactness() -> None:
    src = ModelShape(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=24, vocab_size=VOCAB)
    wider = ModelShape(dim=24, n_layers=2, n_heads=6, n_kv_heads=3, ffn_dim=36, vocab_size=VOCAB)
    assert assess_growth(src, wider, width="fpi", depth="none").exactness == APPROXIMATE
    assert _compare(src, wider, width="fpi", depth="none", dtype=torch.float64) > CHANGED
    double = ModelShape(dim=32, n_layers=2, n_heads=8, n_kv_heads=4, ffn_dim=48, vocab_size=VOCAB)
    assert _compare(src, double, width="exact", depth="none") <= TOLERANCE
    assert _compare(src, double, width="exact", depth="none", noise=0.01, dtype=torch.float64) > CHANGED


def test_bad_state_dicts_name_the_key() -> None:
    src = ModelShape(dim=16, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=24, vocab_size=VOCAB)
    dst = ModelShape(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=24, vocab_size=VOCAB)
    state = _source(src, 0)
    with pytest.raises(ExpansionError, match="missing key 'norm.weight'"):
        expand_state_dict({k: v for k, v in state.items() if k != "norm.weight"}, src, dst)
    with pytest.raises(ExpansionError, match="unexpected key 'extra'"):
        expand_state_dict({**state, "extra": torch.zeros(1)}, src, dst)
    with pytest.raises(ExpansionError, match=r"'layers.0.attention.wq.weight' has shape \[16, 8\]"):
        expand_state_dict({**state, "layers.0.attention.wq.weight": torch.zeros(16, 8)}, src, dst)
    with pytest.raises(ExpansionError, match="dtype torch.int64"):
        expand_state_dict({**state, "norm.weight": torch.zeros(16, dtype=torch.long)}, src, dst)
    with pytest.raises(ExpansionError, match="cannot shrink"):
        expand_state_dict(state, src, ModelShape(dim=8, n_layers=2, n_heads=2, n_kv_heads=2, ffn_dim=24,
                                                  vocab_size=VOCAB))


def test_bf16_exact_growth_stays_close() -> None:
    """bf16 checkpoints: whole-multiple copies divide by powers of two only where k is one."""
    src = ModelShape(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=24, vocab_size=VOCAB)
    dst = ModelShape(dim=32, n_layers=4, n_heads=8, n_kv_heads=4, ffn_dim=48, vocab_size=VOCAB)
    state = {k: v.to(torch.bfloat16) for k, v in _source(src, 1).items()}
    grown = expand_state_dict(state, src, dst, width="exact", depth="zero_insert")
    assert all(v.dtype == torch.bfloat16 for v in grown.values())
    tokens = torch.randint(0, VOCAB, (1, 8))
    before = _logits(src, {k: v.float() for k, v in state.items()}, tokens)
    after = _logits(dst, {k: v.float() for k, v in grown.items()}, tokens)
    assert float((before - after).abs().max()) <= TOLERANCE
