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

    def problems(self) -> list[tuple[str, str]]:
        """What makes this shape impossible for the Llama 3 block: (field, message) pairs."""
        found = []
        if self.dim % self.n_heads:
            found.append(("n_heads", f"n_heads {self.n_heads} does not divide dim {self.dim}"))
        elif self.head_dim % 2:
            found.append(("n_heads", f"head_dim {self.head_dim} (dim / n_heads) is odd; RoPE rotates pairs"))
        if self.n_kv_heads > self.n_heads or self.n_heads % self.n_kv_heads:
            found.append(("n_kv_heads", f"n_kv_heads {self.n_kv_heads} does not divide n_heads {self.n_heads}"))
        return found
