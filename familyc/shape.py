"""The shape of one family member: everything the cost model and the growth operators need.

Torch-free. Mirrors torchtitan 0.2.2's `TransformerModelArgs` after its FFN rule has been
applied, so that one `ModelShape` names exactly one set of weight tensors.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelShape:
    dim: int
    """Residual stream width."""
    n_layers: int
    n_heads: int
    """Query heads."""
    n_kv_heads: int
    """Key/value heads; n_heads is a multiple of it (grouped-query attention)."""
    ffn_dim: int
    """SwiGLU hidden size (the rows of w1 and w3)."""
    vocab_size: int

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def n_rep(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads

    def describe(self) -> str:
        return (f"dim {self.dim}, {self.n_layers} layers, {self.n_heads} heads / {self.n_kv_heads} kv, "
                f"ffn {self.ffn_dim}")

    def problems(self) -> list[tuple[str, str, str]]:
        """What makes this shape impossible for the Llama 3 block: (field, message, hint) triples."""
        found = []
        if self.dim % self.n_heads:
            found.append(("n_heads", f"n_heads {self.n_heads} does not divide dim {self.dim}",
                          "dim = n_heads x head_dim; e.g. head_dim 64 or 128"))
        elif self.head_dim % 2:
            found.append(("n_heads", f"head_dim {self.head_dim} (dim / n_heads) is odd; RoPE rotates pairs",
                          "choose n_heads so that dim / n_heads is even"))
        if self.n_kv_heads > self.n_heads:
            found.append(("n_kv_heads", f"more KV heads ({self.n_kv_heads}) than query heads ({self.n_heads})",
                          "grouped-query attention shares each KV head among n_heads / n_kv_heads query heads"))
        elif self.n_heads % self.n_kv_heads:
            found.append(("n_kv_heads", f"n_kv_heads {self.n_kv_heads} does not divide n_heads {self.n_heads}",
                          "grouped-query attention needs n_heads to be a multiple of n_kv_heads"))
        if self.ffn_dim < 1:
            found.append(("ffn_dim", f"the SwiGLU hidden size comes out as {self.ffn_dim} "
                                     "(int(8 dim / 3) x ffn_dim_multiplier, rounded up to multiple_of)",
                          "give ffn_dim, or a larger ffn_dim_multiplier"))
        return found
