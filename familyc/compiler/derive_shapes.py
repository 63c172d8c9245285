"""Pass 3, derive_shapes: member specs -> shapes, parameter counts and FLOPs per token.

Needs: a checked spec. Adds: `members`, one MemberPlan per member with the SwiGLU hidden
size resolved to a number (torchtitan's rule, or the explicit ffn_dim), the torchtitan
arguments that reproduce it, parameter counts equal to torchtitan 0.2.2's model, and FLOPs
per token by torchtitan's formula at the family's sequence length.
"""

from __future__ import annotations

from dataclasses import replace

from familyc.compiler.state import Compilation
from familyc.cost.flops import flops_per_token
from familyc.cost.params import count_params, torchtitan_ffn_args, torchtitan_ffn_dim
from familyc.growth.feasibility import norm_eps_scale
from familyc.plan.ir import MemberPlan
from familyc.shape import ModelShape
from familyc.spec.model import Architecture, MemberSpec


def member_shape(member: MemberSpec, arch: Architecture) -> ModelShape:
    ffn = member.ffn_dim
    if ffn is None:
        ffn = torchtitan_ffn_dim(member.dim, member.multiple_of, member.ffn_dim_multiplier)
    return ModelShape(dim=member.dim, n_layers=member.n_layers, n_heads=member.n_heads,
                      n_kv_heads=member.n_kv_heads, ffn_dim=ffn, vocab_size=arch.vocab_size)


def member_plan(name: str, shape: ModelShape, seq_len: int, norm_eps: float) -> MemberPlan:
    params = count_params(shape)
    multiple_of, multiplier = torchtitan_ffn_args(shape.dim, shape.ffn_dim)
    return MemberPlan(
        name=name, dim=shape.dim, n_layers=shape.n_layers, n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads,
        head_dim=shape.head_dim, ffn_dim=shape.ffn_dim, vocab_size=shape.vocab_size, seq_len=seq_len,
        norm_eps=norm_eps,
        params=params.total, embedding_params=params.embedding, non_embedding_params=params.non_embedding,
        flops_per_token=flops_per_token(shape, params, seq_len),
        torchtitan_multiple_of=multiple_of, torchtitan_ffn_dim_multiplier=multiplier,
    )


def derive_shapes(c: Compilation) -> Compilation:
    assert c.spec is not None
    arch = c.spec.architecture
    shapes = {m.name: member_shape(m, arch) for m in c.spec.members}
    eps: dict[str, float] = {}
    for m in c.spec.members:  # smallest first: a member's source comes before it (check_spec)
        g = c.spec.growth_into(m.name)
        eps[m.name] = arch.norm_eps if g is None else \
            eps[g.source] * norm_eps_scale(shapes[g.source], shapes[m.name], g.width)
    members = tuple(member_plan(m.name, shapes[m.name], arch.seq_len, eps[m.name]) for m in c.spec.members)
    return replace(c, members=members)
