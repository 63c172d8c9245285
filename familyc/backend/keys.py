"""The pinned torchtitan's Llama 3 state-dict keys and shapes. Torch-free and torchtitan-free.

torchtitan 0.2.2 names (0.3.x renames output -> lm_head and fuses q/k/v; when familyc moves,
this module and the backend change, nothing else):
    tok_embeddings.weight                      [vocab, dim]
    layers.{i}.attention.wq.weight             [n_heads * head_dim, dim]
    layers.{i}.attention.wk.weight             [n_kv_heads * head_dim, dim]
    layers.{i}.attention.wv.weight             [n_kv_heads * head_dim, dim]
    layers.{i}.attention.wo.weight             [dim, n_heads * head_dim]
    layers.{i}.feed_forward.w1.weight          [ffn_dim, dim]
    layers.{i}.feed_forward.w2.weight          [dim, ffn_dim]
    layers.{i}.feed_forward.w3.weight          [ffn_dim, dim]
    layers.{i}.attention_norm.weight           [dim]
    layers.{i}.ffn_norm.weight                 [dim]
    norm.weight                                [dim]
    output.weight                              [vocab, dim]
"""

from __future__ import annotations

from familyc.shape import ModelShape

TORCHTITAN_VERSION = "0.2.2"


def model_keys(shape: ModelShape) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model, in the order torchtitan's state_dict lists them."""
    d, hd = shape.dim, shape.head_dim
    out: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (shape.vocab_size, d)}
    for i in range(shape.n_layers):
        p = f"layers.{i}."
        out[p + "attention.wq.weight"] = (shape.n_heads * hd, d)
        out[p + "attention.wk.weight"] = (shape.n_kv_heads * hd, d)
        out[p + "attention.wv.weight"] = (shape.n_kv_heads * hd, d)
        out[p + "attention.wo.weight"] = (d, shape.n_heads * hd)
        out[p + "feed_forward.w1.weight"] = (shape.ffn_dim, d)
        out[p + "feed_forward.w2.weight"] = (d, shape.ffn_dim)
        out[p + "feed_forward.w3.weight"] = (shape.ffn_dim, d)
        out[p + "attention_norm.weight"] = (d,)
        out[p + "ffn_norm.weight"] = (d,)
    out["norm.weight"] = (d,)
    out["output.weight"] = (shape.vocab_size, d)
    return out
