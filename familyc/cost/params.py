"""Parameter counts of torchtitan 0.2.2's Llama 3 model, and its SwiGLU hidden-size rule.

The counts are the model's tensors (torchtitan/models/llama3/model/model.py, 0.2.2):
    tok_embeddings  nn.Embedding(vocab, dim)                      V*d       (embedding)
    per block:
      attention.wq  Linear(dim, n_heads*head_dim)                 d*d       (n_heads*head_dim = dim)
      attention.wk  Linear(dim, n_kv_heads*head_dim)              d*kv*hd
      attention.wv  Linear(dim, n_kv_heads*head_dim)              d*kv*hd
      attention.wo  Linear(n_heads*head_dim, dim)                 d*d
      feed_forward.w1, w3  Linear(dim, ffn)                       2*d*f
      feed_forward.w2      Linear(ffn, dim)                       d*f
      attention_norm, ffn_norm  RMSNorm(dim)                      2*d
    norm            RMSNorm(dim)                                  d
    output          Linear(dim, vocab)                            V*d       (not an nn.Embedding)
No biases anywhere; embeddings untied. torchtitan's "embedding parameters" are those of
nn.Embedding children only, so the output matrix counts as non-embedding (it is a matmul).
"""

from __future__ import annotations

from dataclasses import dataclass

from familyc.shape import ModelShape


def torchtitan_ffn_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """torchtitan 0.2.2 `FeedForward.__init__` with hidden_dim = 4*dim, reproduced exactly:
    int(2 * 4d / 3), then int(multiplier * that), then rounded up to a multiple of multiple_of."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def torchtitan_ffn_args(dim: int, ffn_dim: int) -> tuple[int, float | None]:
    """(multiple_of, ffn_dim_multiplier) that make torchtitan 0.2.2 build exactly `ffn_dim`.

    torchtitan has no direct hidden-size argument. With multiple_of = ffn_dim the rule rounds
    any hidden size in [1, ffn_dim] up to ffn_dim, so we only need a multiplier that brings
    int(8d/3) into that range (none if it already is)."""
    if ffn_dim < 1:
        raise ValueError(f"ffn_dim must be at least 1, not {ffn_dim}")
    base = int(2 * (4 * dim) / 3)
    if 1 <= base <= ffn_dim:
        return ffn_dim, None
    # (f + 0.5) / base * base lies in [f, f + 1) with a margin of 0.5 against float rounding, so
    # int() of it is exactly f, inside [1, f].
    multiplier = (ffn_dim + 0.5) / base
    assert torchtitan_ffn_dim(dim, ffn_dim, multiplier) == ffn_dim
    return ffn_dim, multiplier


@dataclass(frozen=True, kw_only=True, slots=True)
class ParamCount:
    total: int
    embedding: int
    """nn.Embedding parameters (tok_embeddings), as torchtitan counts them for FLOPs."""
    per_layer: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def count_params(shape: ModelShape) -> ParamCount:
    d, f, v = shape.dim, shape.ffn_dim, shape.vocab_size
    kv_width = shape.n_kv_heads * shape.head_dim
    per_layer = 2 * d * d + 2 * d * kv_width + 3 * d * f + 2 * d
    embedding = v * d
    total = embedding + shape.n_layers * per_layer + d + d * v
    return ParamCount(total=total, embedding=embedding, per_layer=per_layer)
