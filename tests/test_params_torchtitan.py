"""familyc's torch-free cost model against the real thing: torchtitan 0.2.2's Llama 3 model.

Every model is built on the meta device (no memory, no init), so even the 8B member takes
well under a second. Checked for each shape:
- count_params(shape).total / .embedding == torchtitan's parameter count / nn.Embedding count;
- flops_per_token == TransformerModelArgs.get_nparams_and_flops(model, seq_len)[1];
- torchtitan's FeedForward hidden size == torchtitan_ffn_dim(dim, multiple_of, multiplier);
- torchtitan_ffn_args(dim, f) makes torchtitan build exactly f.
Skipped, with the reason, where torch or torchtitan (which needs triton to import) is missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from conftest import Hang, time_limit

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("torchtitan", reason="torchtitan is not installed (pip install -e '.[train]')")
llama3 = pytest.importorskip("torchtitan.models.llama3",
                             reason="torchtitan's llama3 model does not import (it needs triton)")

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402
from torchtitan.models.llama3.model.model import FeedForward  # noqa: E402

from familyc.compiler import compile_spec  # noqa: E402
from familyc.cost.flops import flops_per_token  # noqa: E402
from familyc.cost.params import count_params, torchtitan_ffn_args, torchtitan_ffn_dim  # noqa: E402
from familyc.shape import ModelShape  # noqa: E402

TransformerModelArgs = llama3.TransformerModelArgs
Transformer = llama3.Transformer

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def build(shape: ModelShape, *, multiple_of: int, ffn_dim_multiplier: float | None) -> tuple[Any, nn.Module]:
    args = TransformerModelArgs(
        dim=shape.dim, n_layers=shape.n_layers, n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads,
        vocab_size=shape.vocab_size, multiple_of=multiple_of, ffn_dim_multiplier=ffn_dim_multiplier,
    )
    with torch.device("meta"):
        model = Transformer(args)
    return args, model


def torchtitan_counts(model: nn.Module) -> tuple[int, int]:
    """Total parameters, and those of nn.Embedding children (what torchtitan's FLOPs subtract)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for m in model.children() if isinstance(m, nn.Embedding) for p in m.parameters())
    return total, embedding


def hidden_size(model: nn.Module) -> int:
    sizes = {layer.feed_forward.w1.out_features for layer in model.layers.values()}
    assert len(sizes) == 1
    return sizes.pop()


def check_against_torchtitan(shape: ModelShape, *, multiple_of: int, ffn_dim_multiplier: float | None,
                             seq_len: int) -> None:
    args, model = build(shape, multiple_of=multiple_of, ffn_dim_multiplier=ffn_dim_multiplier)
    assert hidden_size(model) == shape.ffn_dim
    total, embedding = torchtitan_counts(model)
    params = count_params(shape)
    assert (params.total, params.embedding) == (total, embedding)
    nparams, flops = args.get_nparams_and_flops(model, seq_len)
    assert nparams == params.total
    assert flops_per_token(shape, params, seq_len) == flops


def shape_from_rule(*, dim: int, n_layers: int, n_heads: int, n_kv_heads: int, vocab_size: int, multiple_of: int,
                    ffn_dim_multiplier: float | None) -> ModelShape:
    return ModelShape(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      ffn_dim=torchtitan_ffn_dim(dim, multiple_of, ffn_dim_multiplier), vocab_size=vocab_size)


# --- the members of the shipped specs, as the compiler plans them -----------------------------

PLANNED = [(spec, i) for spec in ("tiny.yaml", "llama_1b_8b.yaml") for i in range(4)]


@pytest.fixture(scope="module")
def plans() -> dict[str, Any]:
    return {spec: compile_spec(ROOT / "specs" / spec) for spec in ("tiny.yaml", "llama_1b_8b.yaml")}


@pytest.mark.parametrize(("spec", "index"), PLANNED, ids=[f"{s.removesuffix('.yaml')}-{i}" for s, i in PLANNED])
def test_planned_member_matches_torchtitan(plans: dict[str, Any], spec: str, index: int) -> None:
    """The plan's numbers and the torchtitan arguments it records build exactly that model."""
    m = plans[spec].members[index]
    shape = ModelShape(dim=m.dim, n_layers=m.n_layers, n_heads=m.n_heads, n_kv_heads=m.n_kv_heads,
                       ffn_dim=m.ffn_dim, vocab_size=m.vocab_size)
    args, model = build(shape, multiple_of=m.torchtitan_multiple_of,
                        ffn_dim_multiplier=m.torchtitan_ffn_dim_multiplier)
    total, embedding = torchtitan_counts(model)
    assert hidden_size(model) == m.ffn_dim
    assert (m.params, m.embedding_params, m.non_embedding_params) == (total, embedding, total - embedding)
    assert m.flops_per_token == args.get_nparams_and_flops(model, m.seq_len)[1]
    check_against_torchtitan(shape, multiple_of=m.torchtitan_multiple_of,
                             ffn_dim_multiplier=m.torchtitan_ffn_dim_multiplier, seq_len=m.seq_len)


def test_llama_sizes_in_the_spec_comment(plans: dict[str, Any]) -> None:
    """specs/llama_1b_8b.yaml says 1.28B, 2.04B, 4.01B, 8.03B parameters."""
    sizes = [round(m.params / 1e9, 2) for m in plans["llama_1b_8b.yaml"].members]
    assert sizes == [1.28, 2.04, 4.01, 8.03]


# --- hand-picked shapes -----------------------------------------------------------------------

RULE_SHAPES = {
    # Llama 3 8B by torchtitan's own rule: 1.3 x int(8*4096/3) = 14196, rounded up to 1024 -> 14336.
    "llama3-8b-rule": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256,
                           multiple_of=1024, ffn_dim_multiplier=1.3),
    # torchtitan's debugmodel (no GQA, default multiple_of 256).
    "debugmodel": dict(dim=256, n_layers=6, n_heads=16, n_kv_heads=16, vocab_size=2048,
                       multiple_of=256, ffn_dim_multiplier=None),
    # GQA with 4 query heads per KV head, odd layer count, odd vocabulary.
    "gqa": dict(dim=768, n_layers=7, n_heads=12, n_kv_heads=3, vocab_size=50257, multiple_of=256,
                ffn_dim_multiplier=None),
    # Multi-query attention, multiplier below 1.
    "mqa": dict(dim=512, n_layers=3, n_heads=8, n_kv_heads=1, vocab_size=1000, multiple_of=64,
                ffn_dim_multiplier=0.75),
    "multiple_of-1": dict(dim=100, n_layers=2, n_heads=5, n_kv_heads=5, vocab_size=97, multiple_of=1,
                          ffn_dim_multiplier=None),
}


@pytest.mark.parametrize("name", sorted(RULE_SHAPES))
def test_shape_by_torchtitans_rule(name: str) -> None:
    kw = RULE_SHAPES[name]
    shape = shape_from_rule(**kw)
    if name == "llama3-8b-rule":
        assert shape.ffn_dim == 14336
    check_against_torchtitan(shape, multiple_of=kw["multiple_of"], ffn_dim_multiplier=kw["ffn_dim_multiplier"],
                             seq_len=8192)


EXPLICIT_FFN = {
    # ffn_dim not a multiple of 256 (nor of anything torchtitan would round to by default).
    "tiny-700": dict(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=700, vocab_size=2048),
    # ffn_dim below int(8*dim/3): needs a multiplier < 1.
    "narrow": dict(dim=1024, n_layers=2, n_heads=8, n_kv_heads=4, ffn_dim=1000, vocab_size=32000),
    # ffn_dim far above: multiple_of alone does it.
    "wide-prime": dict(dim=128, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=4099, vocab_size=2048),
    "tiny-members": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192, vocab_size=2048),
}


@pytest.mark.parametrize("name", sorted(EXPLICIT_FFN))
def test_explicit_ffn_dim(name: str) -> None:
    shape = ModelShape(**EXPLICIT_FFN[name])
    multiple_of, multiplier = torchtitan_ffn_args(shape.dim, shape.ffn_dim)
    check_against_torchtitan(shape, multiple_of=multiple_of, ffn_dim_multiplier=multiplier, seq_len=2048)


# --- the FFN rule, property-based -------------------------------------------------------------


def torchtitan_hidden(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """What torchtitan's FeedForward builds inside a TransformerBlock (hidden_dim = 4 * dim)."""
    with torch.device("meta"):
        ff = FeedForward(dim=dim, hidden_dim=4 * dim, multiple_of=multiple_of, ffn_dim_multiplier=ffn_dim_multiplier)
    assert ff.w1.out_features == ff.w3.out_features == ff.w2.in_features
    return ff.w1.out_features


MULTIPLIERS = st.none() | st.sampled_from([1.3, 1.5, 2.0, 0.75, 1.0, 1 / 3, 0.1]) | st.floats(
    min_value=0.01, max_value=8.0, allow_nan=False, allow_infinity=False)


@PROPERTY
@given(dim=st.integers(1, 65536), multiple_of=st.integers(1, 65536) | st.sampled_from([1, 64, 256, 1024, 4096]),
       ffn_dim_multiplier=MULTIPLIERS)
def test_ffn_rule_matches_torchtitan(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> None:
    assert torchtitan_ffn_dim(dim, multiple_of, ffn_dim_multiplier) == torchtitan_hidden(
        dim, multiple_of, ffn_dim_multiplier)


def _ffn_args_builds(dim: int, ffn_dim: int) -> None:
    try:
        with time_limit(2.0):  # it takes microseconds
            multiple_of, multiplier = torchtitan_ffn_args(dim, ffn_dim)
    except Hang:
        pytest.fail(f"torchtitan_ffn_args({dim}, {ffn_dim}) does not return")
    assert torchtitan_ffn_dim(dim, multiple_of, multiplier) == ffn_dim
    assert torchtitan_hidden(dim, multiple_of, multiplier) == ffn_dim
    if multiplier is not None:
        assert math.isfinite(multiplier) and multiplier > 0


@PROPERTY
@given(dim=st.integers(1, 65536), ffn_dim=st.integers(1, 1048576) | st.integers(1, 512))
def test_ffn_args_make_torchtitan_build_exactly_that(dim: int, ffn_dim: int) -> None:
    _ffn_args_builds(dim, ffn_dim)


@PROPERTY
@given(dim=st.integers(1, 4096), data=st.data())
def test_ffn_args_just_below_the_default(dim: int, data: st.DataObject) -> None:
    """The multiplier branch, where float rounding matters most: ffn_dim just under int(8*dim/3)."""
    base = int(2 * (4 * dim) / 3)
    assume(base > 2)
    ffn_dim = data.draw(st.integers(max(1, base - 5), base - 1) | st.integers(1, base - 1))
    _ffn_args_builds(dim, ffn_dim)


@pytest.mark.parametrize("dim", [37, 148, 60034])
def test_ffn_args_for_ffn_dim_1(dim: int) -> None:
    """Regression: (1 / int(8 dim / 3)) * int(8 dim / 3) rounds below 1 for these dims, and
    torchtitan_ffn_args used to loop forever on them."""
    _ffn_args_builds(dim, 1)
