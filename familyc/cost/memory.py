"""Memory per device of one training stage under FSDP2 (torchtitan 0.2.2, eager), in bytes, at its peak.

Every term is calibrated against `familyc rehearse` (familyc/backend/rehearse.py: one training step at the
real shape and world size on fake tensors, every live tensor attributed by torch's FSDPMemTracker): the
saved tensors below are those autograd keeps (listed with saved_tensors_hooks), and the sum matches the
rehearsed peak of the tiny, the flagship and the 70B specs' stages (BENCHMARKS.md, "Rehearsal"). The peak
of a step is the start of the last micro-batch's backward: every block's activations, the loss's saved
tensors and its gradients are alive at once.

Persistent state is sharded over the FSDP degree F (torchtitan shards every parameter):
  master parameters   fp32, 4 bytes per parameter / F
  gradients           fp32 (FSDP2 reduce dtype), 4 / F: alive at the peak only with gradient accumulation
                      (the micro-batches after the first meet the gradients the first left; with one
                      micro-batch per step, zero_grad freed them before the forward)
  AdamW state         exp_avg + exp_avg_sq in fp32, 8 / F
Working set: torchtitan does not reshard the last unit (the final norm and the output projection) after
its forward, so at the peak it is alive unsharded in the compute dtype: c x (vocab x d + d), c = 2 for bf16,
4 for fp32. (The plan's old term, 2 units x (params + grads) x c, was 4x what is alive.)
On one rank torchtitan applies no FSDP2 and computes in bf16 by autocast: the parameters stay fp32, autocast
keeps a bf16 copy of every matmul weight from its forward to its backward (c x the matmul weights is the
working set), and every linear casts its input itself, so the norms' outputs are saved once per reader (wq,
wk, wv; w1, w3): 3 c d per token per block more than under FSDP2.
Activations saved for the backward, per block and per token, with kv = n_kv_heads * head_dim
(torchtitan/models/llama3/model/model.py; the RMSNorm is torch's, which computes in fp32):
  each of the two RMSNorms: its input in fp32 (4 d: a copy when c = 2, the input itself when c = 4), its
  rstd (4), the normalized input in fp32 (4 d), its output in the compute dtype (c d: the input of
  wq/wk/wv or of w1/w3)                                                 -> 2 (8 d + 4 + c d)
  attention: q, k, v after RoPE as SDPA saves them, SDPA's output (wo reads a view of it), and its
  logsumexp (fp32, one per head)                                          -> c (2 d + 2 kv) + 4 n_heads
  (RoPE's complex product saves nothing of the activations' size: freqs_cis needs no gradient)
  feed-forward: w1 out, silu(w1 out), w3 out, their product (w2's input) -> 4 c f
The embedding's output, which the first block reads, stays alive until its backward: c d per token.
Activation checkpointing (torchtitan's modes), what the blocks hold at the start of the backward:
  none       every block's activations;
  selective  torchtitan's default layer-SAC with frequency 2 checkpoints every second block
             (floor(L / 2) of them): those keep only their input (c * d per token);
  full       every block keeps only its input.
With checkpointing the step has a second candidate peak, later in the backward: the loss's tensors are freed,
all gradients may be alive, and one block is recomputed, its activations and their gradients (taken as two
blocks' activations: not measured, the rehearsal of every spec here peaks at the start of the backward, where
the loss's 12 bytes per token per vocabulary entry outweigh it). The estimate is the larger of the two.
Loss: the final norm saves its normalized input in fp32, its output in the compute dtype and its rstd
((4 + c) d + 4 per token); cross-entropy saves log_softmax's fp32 output (4 bytes per token per vocabulary
entry; torchtitan deletes the logits before the backward, and the fp32 copy is not saved). At the start of
the backward two fp32 temporaries of the logits' size are alive (the gradient of log_softmax's output and
of its input): 8 bytes per token per vocabulary entry.
Not counted: buffers (freqs_cis: seq_len x head_dim / 2 complex64, 4 MiB at 8192 tokens), the inputs and
labels (16 bytes per token per micro-batch of the step), the CUDA context and
the caching allocator's rounding and fragmentation (cluster.memory_headroom keeps a share of memory free for
them), NCCL's buffers, and torch.compile, whose fused blocks save less than eager (the estimate errs on the
safe side).
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
    temporaries: int

    @property
    def total(self) -> int:
        return (self.parameters + self.gradients + self.optimizer + self.working + self.activations + self.logits
                + self.temporaries)


def autocast(precision: str, fsdp_degree: int) -> bool:
    """Whether torchtitan computes in bf16 by autocast: on one rank it applies no FSDP2, whose mixed precision
    policy does the casting otherwise (torchtitan/distributed/utils.py maybe_enable_amp)."""
    return fsdp_degree == 1 and COMPUTE_BYTES[precision] == 2


def activation_bytes_per_token_per_layer(shape: ModelShape, precision: str, *, autocast: bool = False) -> int:
    c, d = COMPUTE_BYTES[precision], shape.dim
    kv = shape.n_kv_heads * shape.head_dim
    norms = 2 * (8 * d + 4 + c * d)
    attention = c * (2 * d + 2 * kv) + 4 * shape.n_heads
    casts = 3 * c * d if autocast else 0  # wq, wk, wv and w1, w3 each cast the norm's output: 5 copies, not 2
    return norms + attention + 4 * c * shape.ffn_dim + casts


def estimate_memory(
    shape: ModelShape,
    params: ParamCount,
    *,
    seq_len: int,
    micro_batch: int,
    grad_accum: int,
    fsdp_degree: int,
    precision: str,
    activation_checkpointing: str,
) -> MemoryEstimate:
    """The larger of the step's two candidate peaks (see the module docstring)."""
    c = COMPUTE_BYTES[precision]
    # ceil: the largest shard decides (FSDP2 pads uneven shards).
    shard = -(-params.total // fsdp_degree)
    tokens = micro_batch * seq_len
    amp = autocast(precision, fsdp_degree)
    full_layer = activation_bytes_per_token_per_layer(shape, precision, autocast=amp)
    block_input = c * shape.dim
    layers = shape.n_layers
    if activation_checkpointing == "none":
        saved = layers * full_layer
    elif activation_checkpointing == "selective":
        checkpointed = layers // 2
        saved = (layers - checkpointed) * full_layer + checkpointed * block_input
    elif activation_checkpointing == "full":
        saved = layers * block_input
    else:
        raise ValueError(f"unknown activation checkpointing mode {activation_checkpointing!r}")
    matmul_weights = shape.n_layers * (params.per_layer - 2 * shape.dim) + shape.vocab_size * shape.dim
    working = c * matmul_weights if amp else c * (shape.vocab_size * shape.dim + shape.dim)
    persistent = {"parameters": 4 * shard, "optimizer": 8 * shard, "working": working}
    start = MemoryEstimate(
        **persistent,
        gradients=4 * shard if grad_accum > 1 else 0,
        activations=tokens * (saved + c * shape.dim),
        logits=tokens * (4 * shape.vocab_size + (4 + c) * shape.dim + 4),
        temporaries=tokens * 8 * shape.vocab_size,
    )
    if activation_checkpointing == "none":
        return start
    recompute = MemoryEstimate(**persistent, gradients=4 * shard,
                               activations=tokens * (saved + c * shape.dim + 2 * full_layer),
                               logits=0, temporaries=0)
    return max(start, recompute, key=lambda e: e.total)
