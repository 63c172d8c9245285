"""Memory per device of one training stage under FSDP2 (torchtitan 0.2.2), in bytes.

Persistent state is sharded over the FSDP degree F (torchtitan shards every parameter):
  master parameters   fp32, 4 bytes per parameter / F
  gradients           fp32 (FSDP2 reduce dtype), 4 / F
  AdamW state         exp_avg + exp_avg_sq in fp32, 8 / F
Working set: FSDP2 all-gathers one unit (a block, or the embedding, or norm + output) in the
compute dtype (c bytes: 2 for bf16, 4 for fp32) and prefetches the next, and in the backward
holds the unit's unsharded gradients before the reduce-scatter: 2 units x (params + grads) x c.
Activations saved for the backward, per block and per token, in eager autograd
(torchtitan/models/llama3/model/model.py), with kv = n_kv_heads * head_dim:
  attention_norm input d, its output (the input of wq/wk/wv) d,
  q, k, v as SDPA saves them d + 2 kv, SDPA output d, the contiguous copy wo reads d,
  ffn_norm input d, its output (the input of w1/w3) d,
  w1 out, silu(w1 out), w3 out, their product (the input of w2): 4 f
  -> c * (7 d + 2 kv + 4 f), plus the RoPE product, which apply_rotary_emb computes in
  fp32 on q and k: 4 * (d + kv).
Activation checkpointing (torchtitan's modes):
  none       every block's activations;
  selective  torchtitan's default layer-SAC with frequency 2 checkpoints every second block
             (floor(L / 2) of them): those keep only their input (c * d per token);
  full       every block keeps only its input; one block's activations exist at a time
             while it is recomputed in the backward.
Loss: the output logits in the compute dtype, their fp32 copy for cross-entropy and its
fp32 gradient: (c + 4 + 4) bytes per token per vocabulary entry.
Not counted: the CUDA context and allocator fragmentation (cluster.memory_headroom keeps a
share of memory free for them), communication buffers, and torch.compile's fusions (which
save less than eager; the estimate errs on the safe side).
"""

from __future__ import annotations

from dataclasses import dataclass

from familyc.cost.params import ParamCount
from familyc.shape import ModelShape

COMPUTE_BYTES = {"bf16": 2, "fp32": 4}


@dataclass(frozen=True, kw_only=True, slots=True)
class MemoryEstimate:
    parameters: int
    gradients: int
    optimizer: int
    working: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.working + self.activations + self.logits


def activation_bytes_per_token_per_layer(shape: ModelShape, precision: str) -> int:
    c = COMPUTE_BYTES[precision]
    kv = shape.n_kv_heads * shape.head_dim
    return c * (7 * shape.dim + 2 * kv + 4 * shape.ffn_dim) + 4 * (shape.dim + kv)


def estimate_memory(
    shape: ModelShape,
    params: ParamCount,
    *,
    seq_len: int,
    micro_batch: int,
    fsdp_degree: int,
    precision: str,
    activation_checkpointing: str,
) -> MemoryEstimate:
    c = COMPUTE_BYTES[precision]
    p = params.total
    # ceil: the largest shard decides (FSDP2 pads uneven shards).
    shard = -(-p // fsdp_degree)
    largest_unit = max(params.per_layer, params.embedding, shape.dim * shape.vocab_size + shape.dim)
    tokens = micro_batch * seq_len
    full_layer = activation_bytes_per_token_per_layer(shape, precision)
    block_input = c * shape.dim
    layers = shape.n_layers
    if activation_checkpointing == "none":
        per_token = layers * full_layer
    elif activation_checkpointing == "selective":
        checkpointed = layers // 2
        recomputed = full_layer if checkpointed else 0  # one checkpointed block at a time in the backward
        per_token = (layers - checkpointed) * full_layer + checkpointed * block_input + recomputed
    elif activation_checkpointing == "full":
        per_token = layers * block_input + full_layer
    else:
        raise ValueError(f"unknown activation checkpointing mode {activation_checkpointing!r}")
    return MemoryEstimate(
        parameters=4 * shard,
        gradients=4 * shard,
        optimizer=8 * shard,
        working=2 * largest_unit * 2 * c,
        activations=tokens * per_token,
        logits=tokens * shape.vocab_size * (c + 4 + 4),
    )
