"""The family's quality on text it never trained on: held-out loss, and KL between two members.

The held-out documents are tokenized as torchtitan's text loader does for training (BOS, the
document's tokens, EOS; documents packed back to back) and cut into windows of seq_len + 1
tokens, of which a fixed random sample is evaluated: the model sees the first seq_len, the loss is
taken on the next token at every position.
Models are torchtitan's own Llama 3 (familyc.backend.model) in fp32, loaded from the run's
model-only DCP checkpoints; everything runs without gradients on the CPU (or the given device).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from familyc.backend.model import build_model, plan_model_args
from familyc.checkpoint.reader import load_state_dict
from familyc.enums import HeldoutPart
from familyc.plan.ir import Plan

DEFAULT_MAX_TOKENS = 32_768
"""Held-out tokens evaluated by default: enough for a stable mean on the demo corpus (21K tokens)."""
WINDOW_SEED = 0
"""Which windows of the held-out split are drawn: fixed, so every run is evaluated on the same ones."""
POOL_TOKENS = 1 << 20
POOL_FACTOR = 16
"""The windows are drawn from the first max(POOL_TOKENS, POOL_FACTOR x asked) tokens of the split: all of a
builtin corpus's (stdlib-source's held-out split is about 600K tokens), and a bounded read of a large one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Heldout:
    windows: torch.Tensor
    """[n, seq_len + 1] token ids."""
    documents: int

    @property
    def tokens(self) -> int:
        """Predicted tokens: seq_len per window."""
        return self.windows.shape[0] * (self.windows.shape[1] - 1)


def load_heldout(heldout_dir: Path, tokenizer_dir: Path, *, seq_len: int,
                 max_tokens: int = DEFAULT_MAX_TOKENS, part: HeldoutPart = "all") -> Heldout:
    """`max_tokens` of the held-out documents of `part` (familyc.enums.HeldoutPart), as windows drawn at random.

    The documents are packed as for training and cut into consecutive windows; `max_tokens // seq_len` of
    them are drawn without replacement with a fixed seed (WINDOW_SEED), so every run and every stage is
    evaluated on the same windows, and they are spread over the documents: the first windows of a split in
    file order are a few neighbouring files (on `stdlib-source`, 8,192 tokens were two asyncio modules).
    A smaller `max_tokens` draws a subset of a larger one's windows (from the same pool). Documents are read
    in file order until the pool holds POOL_TOKENS (or POOL_FACTOR x max_tokens, if more), so a large split is
    not read whole."""
    from tokenizers import Tokenizer

    from familyc.data.builtin import in_heldout_part

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    bos, eos = tokenizer.token_to_id(config["bos_token"]), tokenizer.token_to_id(config["eos_token"])
    if bos is None or eos is None:
        raise ValueError(f"{tokenizer_dir / 'tokenizer.json'} lacks its config's bos_token or eos_token")
    ids: list[int] = []
    starts: list[int] = []  # where each document begins in `ids`
    pool = max(POOL_TOKENS, POOL_FACTOR * max_tokens)
    texts = (json.loads(line)["text"] for path in sorted(heldout_dir.glob("*.jsonl"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    for text in texts:
        if not in_heldout_part(text, part):
            continue
        starts.append(len(ids))
        ids += [bos, *tokenizer.encode(text, add_special_tokens=False).ids, eos]
        if len(ids) > pool:
            break
    available = (len(ids) - 1) // seq_len
    n = min(available, max_tokens // seq_len)
    if n < 1:
        raise ValueError(f"{heldout_dir} holds fewer than {seq_len + 1} tokens"
                         + ("" if part == "all" else f" in its {part} half"))
    order = torch.randperm(available, generator=torch.Generator().manual_seed(WINDOW_SEED))[:n]
    chosen = sorted(int(i) for i in order)
    flat = torch.tensor(ids, dtype=torch.long)
    windows = torch.stack([flat[i * seq_len: (i + 1) * seq_len + 1] for i in chosen])
    documents = {d for i in chosen for d in range(bisect.bisect_right(starts, i * seq_len),
                                                   bisect.bisect_right(starts, (i + 1) * seq_len) + 1)}
    return Heldout(windows=windows, documents=len(documents))


def load_member(plan: Plan, member_name: str, weights: Path, *, device: str = "cpu") -> torch.nn.Module:
    """A member's model with the weights of a model-only DCP checkpoint, in eval mode."""
    model = build_model(plan_model_args(plan, member_name), device=device)
    state = load_state_dict(weights)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    evaluated: torch.nn.Module = model.eval()
    return evaluated


def _batches(heldout: Heldout, batch_size: int) -> list[torch.Tensor]:
    return list(torch.split(heldout.windows, batch_size))


def heldout_loss(model: torch.nn.Module, heldout: Heldout, *, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats) over every held-out position."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in _batches(heldout, batch_size):
            batch = batch.to(device)
            logits = model(batch[:, :-1]).float()
            total += float(F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum"))
            count += batch[:, 1:].numel()
    return total / count


def kl_both_ways(small: torch.nn.Module, large: torch.nn.Module, heldout: Heldout, *,
                 batch_size: int = 8) -> tuple[float, float]:
    """(KL(small || large), KL(large || small)): mean over held-out positions of the next-token distributions."""
    kl_sl, kl_ls, count = 0.0, 0.0, 0
    device = next(small.parameters()).device
    with torch.no_grad():
        for batch in _batches(heldout, batch_size):
            inputs = batch[:, :-1].to(device)
            log_p = F.log_softmax(small(inputs).float(), dim=-1)
            log_q = F.log_softmax(large(inputs).float(), dim=-1)
            kl_sl += float((log_p.exp() * (log_p - log_q)).sum())
            kl_ls += float((log_q.exp() * (log_q - log_p)).sum())
            count += inputs.numel()
    return kl_sl / count, kl_ls / count
