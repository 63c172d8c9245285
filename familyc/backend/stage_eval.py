"""Held-out evaluation inside a training stage: the curve the report draws each growth's head start from.

A stage told FAMILYC_HELDOUT, FAMILYC_EVAL_INTERVAL and FAMILYC_EVAL_TOKENS (familyc.backend.environment)
evaluates the held-out split before its first update (step 0), after every interval-th step and after its
last step, on the trainer's own model (FSDP-sharded, so every rank takes part): the windows are the report's
(familyc.backend.evaluate.load_heldout: the same tokenization and the same windows, drawn at random), split into
one contiguous slice per rank, evaluated in micro-batches of the stage's size with gradients off and
torch.compile's code bypassed (eager: no recompilation for a no-grad graph), and the summed loss is
all-reduced. Rank 0 appends one record per evaluation to the stage's metrics.jsonl:

    {"kind": "eval", "step": 0, "heldout_loss": 4.61, "tokens": 16384, "flops": ..., "seconds": 0.4, ...}

`flops` is forward only (familyc.cost.flops.eval_flops of torchtitan's FLOPs per token), apart from the
training FLOPs; the final point equals `familyc report --heldout-tokens TOKENS`'s loss of the saved member.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from familyc.backend.environment import EVAL_INTERVAL_ENV, EVAL_TOKENS_ENV, HELDOUT_ENV
from familyc.backend.evaluate import load_heldout
from familyc.cost.flops import eval_flops
from familyc.plan.steps import evaluated_steps

EVAL_KIND = "eval"


class StageEvaluation:
    """The evaluations of one stage, on this rank's slice of the held-out windows."""

    def __init__(self, heldout_dir: Path, tokenizer_dir: Path, *, seq_len: int, tokens: int, interval: int,
                 num_steps: int, batch_size: int, num_flops_per_token: int) -> None:
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        heldout = load_heldout(heldout_dir, tokenizer_dir, seq_len=seq_len, max_tokens=tokens)
        per_rank = heldout.windows.shape[0] // world
        if per_rank < 1:
            raise ValueError(f"{heldout_dir} holds {heldout.windows.shape[0]} windows of {seq_len + 1} tokens, "
                             f"fewer than the stage's {world} ranks")
        self.windows = heldout.windows[rank * per_rank: (rank + 1) * per_rank]
        self.tokens = per_rank * world * seq_len
        self.steps = frozenset(evaluated_steps(num_steps, interval))
        self.batch_size = batch_size
        self.flops = eval_flops(num_flops_per_token, self.tokens)

    def due(self, step: int) -> bool:
        return step in self.steps

    def loss(self, model_parts: list[torch.nn.Module], device: torch.device) -> float:
        """Mean next-token loss (nats) over every rank's windows; every rank must call it."""
        if len(model_parts) != 1:
            raise NotImplementedError("held-out evaluation of a pipeline-parallel stage")
        model = model_parts[0]
        was_training = model.training
        total = torch.zeros((), dtype=torch.float64, device=device)
        model.eval()
        try:
            with torch.no_grad(), torch.compiler.set_stance("force_eager"):
                for batch in torch.split(self.windows, self.batch_size):
                    batch = batch.to(device)
                    logits = model(batch[:, :-1]).float()
                    total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(),
                                             reduction="sum").double()
        finally:
            model.train(was_training)
            _reshard(model)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
        return float(total) / self.tokens

    def record(self, step: int, model_parts: list[torch.nn.Module], device: torch.device) -> dict[str, Any]:
        """Evaluate now: the metrics record of step `step` (rank 0 writes it)."""
        started = time.monotonic()
        loss = self.loss(model_parts, device)
        return {"kind": EVAL_KIND, "step": step, "heldout_loss": loss, "tokens": self.tokens, "flops": self.flops,
                "seconds": round(time.monotonic() - started, 3)}


def _reshard(model: torch.nn.Module) -> None:
    """Put FSDP2's sharded parameters back. Modules it keeps unsharded after forward (the root, which backward
    would need at once) stay unsharded after a forward without backward, so the module's parameters are not the
    optimizer's until the next backward: a checkpoint saved then fails (torch's get_optimizer_state_dict:
    KeyError on the parameter id)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def from_environment(config: Any, *, num_flops_per_token: int) -> StageEvaluation | None:
    """The stage's evaluation as the environment asks for it (None: not asked for)."""
    heldout, interval, tokens = (os.environ.get(name) for name in (HELDOUT_ENV, EVAL_INTERVAL_ENV, EVAL_TOKENS_ENV))
    if not (heldout and interval and tokens):
        return None
    training = config.training
    return StageEvaluation(Path(heldout), Path(config.model.hf_assets_path), seq_len=training.seq_len,
                           tokens=int(tokens), interval=int(interval), num_steps=training.steps,
                           batch_size=training.local_batch_size, num_flops_per_token=num_flops_per_token)
