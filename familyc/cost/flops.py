"""FLOPs per token: torchtitan 0.2.2's own formula, so predicted and measured compute compare like for like.

torchtitan/models/utils.py `get_dense_model_nparams_and_flops` (0.2.2):
    6 * (params - embedding_params) + 6 * n_layers * n_heads * (2 * head_dim) * seq_len
  - 6 per matmul parameter per token: 2 FLOPs (multiply + add) in the forward pass, and twice
    that in the backward pass (gradients with respect to inputs and to weights);
  - attention scores (QK^T) and value aggregation (AV) are two matmuls of head_dim per head and
    per context position: 2 * head_dim, times 6 for forward + backward; causal sparsity is
    not discounted and activation-checkpoint recompute is not counted (MFU convention).
  Since n_heads * head_dim = dim, the attention term is 12 * n_layers * dim * seq_len.
The measured side (familyc apply) reads torchtitan's `num_flops_per_token` from the running
trainer and multiplies it by the tokens seen: `train_flops` below serves both.
"""

from __future__ import annotations

from familyc.cost.params import ParamCount
from familyc.shape import ModelShape

FLOPS_FORMULA = "6*(params - embedding_params) + 12*n_layers*dim*seq_len"
FLOPS_FORMULA_SOURCE = "torchtitan 0.2.2 models/utils.py get_dense_model_nparams_and_flops"


def flops_per_token(shape: ModelShape, params: ParamCount, seq_len: int) -> int:
    return 6 * params.non_embedding + 12 * shape.n_layers * shape.dim * seq_len


def train_flops(flops_per_token: int, tokens: int) -> int:
    """Compute of training on `tokens` tokens: the one formula for predicted and actual."""
    return flops_per_token * tokens


def eval_flops(flops_per_token: int, tokens: int) -> int:
    """Compute of evaluating (forward only) `tokens` tokens, with the training formula's FLOPs per token.

    Both of that formula's terms are 2 FLOPs per multiply-add forward and 4 backward (6 per parameter,
    12 = 3 x 4 for attention), so the forward pass is exactly one third of it; flops_per_token is always a
    multiple of 6, so the division is exact."""
    return flops_per_token // 3 * tokens
