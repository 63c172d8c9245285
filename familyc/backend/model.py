"""A plan member as torchtitan 0.2.2's Llama 3: its TransformerModelArgs, the model, its logits.

`model_args` is the one place a `MemberPlan` becomes torchtitan arguments. The FFN size goes
through torchtitan's own rule (`FeedForward`: int(2 * 4d / 3), times ffn_dim_multiplier,
rounded up to multiple_of) with the plan's `torchtitan_multiple_of` and
`torchtitan_ffn_dim_multiplier`, which the compiler chose to give exactly `ffn_dim`; we check
that here rather than trust it. Attention is SDPA with a causal mask, like 0.2.2's `debugmodel`
(documents are packed and attend across their boundaries; FlexAttention's block-causal mask
has no CPU backward).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torchtitan.models.llama3 import Transformer, TransformerModelArgs, llama3_args
from torchtitan.tools.utils import set_default_dtype

from familyc.cost.params import torchtitan_ffn_args, torchtitan_ffn_dim
from familyc.errors import PlanError
from familyc.shape import ModelShape

if TYPE_CHECKING:
    from familyc.plan.ir import MemberPlan, Plan

ATTN_TYPE = "sdpa"
ATTN_MASK_TYPE = "causal"
_BUILTIN_FLAVORS = frozenset(llama3_args)


def model_args(member: MemberPlan, *, rope_theta: float, seq_len: int) -> TransformerModelArgs:
    """torchtitan's arguments for one member: exactly its shape and norm eps, at `seq_len` tokens of RoPE."""
    if member.dim % member.n_heads or member.dim // member.n_heads != member.head_dim:
        raise PlanError(f"member {member.name}: head_dim {member.head_dim} is not dim / n_heads "
                        f"({member.dim} / {member.n_heads}); torchtitan 0.2.2 derives it that way")
    ffn = torchtitan_ffn_dim(member.dim, member.torchtitan_multiple_of, member.torchtitan_ffn_dim_multiplier)
    if ffn != member.ffn_dim:
        raise PlanError(f"member {member.name}: torchtitan would build an FFN of {ffn}, not ffn_dim "
                        f"{member.ffn_dim} (multiple_of {member.torchtitan_multiple_of}, "
                        f"ffn_dim_multiplier {member.torchtitan_ffn_dim_multiplier})")
    return _args(member.shape, member.torchtitan_multiple_of, member.torchtitan_ffn_dim_multiplier,
                 rope_theta=rope_theta, norm_eps=member.norm_eps, seq_len=seq_len)


def shape_args(shape: ModelShape, *, rope_theta: float, norm_eps: float, seq_len: int) -> TransformerModelArgs:
    """torchtitan's arguments for a bare shape (no plan member): the FFN rule's arguments derived as the
    compiler derives them (familyc.cost.params.torchtitan_ffn_args)."""
    multiple_of, multiplier = torchtitan_ffn_args(shape.dim, shape.ffn_dim)
    return _args(shape, multiple_of, multiplier, rope_theta=rope_theta, norm_eps=norm_eps, seq_len=seq_len)


def _args(shape: ModelShape, multiple_of: int, ffn_dim_multiplier: float | None, *, rope_theta: float,
          norm_eps: float, seq_len: int) -> TransformerModelArgs:
    return TransformerModelArgs(
        dim=shape.dim, n_layers=shape.n_layers, n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads,
        vocab_size=shape.vocab_size, multiple_of=multiple_of, ffn_dim_multiplier=ffn_dim_multiplier,
        norm_eps=norm_eps, rope_theta=rope_theta, max_seq_len=seq_len, attn_type=ATTN_TYPE,
        attn_mask_type=ATTN_MASK_TYPE,
    )


def plan_model_args(plan: Plan, member_name: str) -> TransformerModelArgs:
    """`model_args` with the plan's architecture and the member's sequence length."""
    member = plan.member(member_name)
    arch = plan.architecture
    return model_args(member, rope_theta=arch.rope_theta, seq_len=member.seq_len)


def register_flavor(name: str, args: TransformerModelArgs) -> None:
    """Make `--model.flavor name` build `args` (torchtitan looks flavors up in llama3_args).

    Re-registering a name with new arguments replaces them; torchtitan's own flavors
    (debugmodel, 8B, ...) cannot be replaced."""
    if name in _BUILTIN_FLAVORS and llama3_args[name] != args:
        raise ValueError(f"{name!r} is one of torchtitan's own llama3 flavors; choose another name")
    llama3_args[name] = args


def build_model(args: TransformerModelArgs, *, device: str | torch.device = "cpu", seed: int = 0) -> Transformer:
    """The model with torchtitan's own initialisation (`init_weights`), fp32, in train mode.

    Built as the Trainer builds it: on the meta device first, then materialised and initialised.
    The same seed gives the same weights (a multi-rank Trainer draws them differently, per shard)."""
    device = torch.device(device)
    with torch.device("meta"), set_default_dtype(torch.float32):
        model = Transformer(args)
    model.to_empty(device=device)
    accelerator = device.type != "cpu"
    with torch.random.fork_rng(devices=[device.index or 0] if accelerator else [],
                               device_type=device.type if accelerator else "cuda"):
        torch.manual_seed(seed)
        with torch.no_grad():
            model.init_weights(buffer_device=device)
    return model


def forward_logits(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [batch, seq, vocab] (fp32) for token ids [batch, seq] or [seq], without gradients."""
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    device = next(model.parameters()).device
    with torch.no_grad():
        logits: torch.Tensor = model(tokens.to(device))
    return logits.float()
