"""`familyc expand --verify`: run the source and the grown model on the same tokens and compare.

Both models are torchtitan's own Llama 3 module (built by familyc.backend.model) in fp32 on the
CPU, loaded from the two checkpoints; the tokens are seeded random ids. A function-preserving
step must keep every logit within VERIFY_TOLERANCE; every step reports the mean
KL(source || target) of the next-token distributions, how far the growth moved the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from familyc.shape import ModelShape

VERIFY_TOLERANCE = 1e-4
"""max |delta logit| (fp32) allowed for a step declared function-preserving."""


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyResult:
    max_abs_logit_diff: float
    mean_kl: float
    """Mean over positions of KL(source || target), in nats."""
    tokens: int


def compare_models(source: ModelShape, source_state: dict[str, torch.Tensor], target: ModelShape,
                   target_state: dict[str, torch.Tensor], *, seq_len: int, rope_theta: float,
                   source_eps: float, target_eps: float,
                   num_sequences: int = 4, seed: int = 0) -> VerifyResult:
    from familyc.backend.model import build_model, forward_logits, shape_args

    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, source.vocab_size, (num_sequences, seq_len), generator=generator)
    logits = []
    for shape, state, eps in ((source, source_state, source_eps), (target, target_state, target_eps)):
        model = build_model(shape_args(shape, rope_theta=rope_theta, norm_eps=eps, seq_len=seq_len))
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        logits.append(forward_logits(model.eval(), tokens))
        del model
    before, after = logits
    log_p = torch.log_softmax(before.double(), dim=-1)  # float64: a preserved function shows a KL of ~0, not -1e-9
    log_q = torch.log_softmax(after.double(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return VerifyResult(max_abs_logit_diff=float((before - after).abs().max()), mean_kl=float(kl),
                        tokens=tokens.numel())
