"""Pass 4, assign_budgets: tokens for every progressive stage and every independent member.

Needs: `members` (parameter counts, FLOPs per token). Adds: `budgets`.

Rules (C_k = FLOPs/token_k x D_k is member k's compute trained from scratch on D_k tokens):
- tokens_per_param: every independent member k trains D_k = r x N_k tokens, and so does every
  progressive stage (same tokens; the comparison is then about quality, not compute).
- paper (arXiv 2504.00623): independent members train D_k = r x N_k tokens (r given, or
  largest_tokens / N_largest); the first stage equals its independent member; a stage grown
  from member j gets the compute its independent counterpart needs beyond j:
  C_k - C_j, i.e. (C_k - C_j) / FLOPs/token_k tokens. Along a chain the stages telescope to
  C_largest: the whole family costs what its largest member costs from scratch.
- explicit: the tokens given per member; the baseline trains baseline_tokens (default: the
  same tokens).
N_k is the total or the non-embedding parameter count (budget.params).
"""

from __future__ import annotations

from dataclasses import replace

from familyc.compiler.state import Compilation, StageBudget
from familyc.errors import SpecError


def budget_params(c: Compilation) -> dict[str, int]:
    assert c.spec is not None
    which = c.spec.budget.params
    return {m.name: m.params if which == "total" else m.non_embedding_params for m in c.members}


def tokens_per_param(c: Compilation) -> float | None:
    """r of the paper and tokens_per_param rules (derived from largest_tokens when given)."""
    assert c.spec is not None
    b = c.spec.budget
    if b.rule == "explicit":
        return None
    if b.tokens_per_param is not None:
        return b.tokens_per_param
    assert b.largest_tokens is not None
    return b.largest_tokens / max(budget_params(c).values())


def assign_budgets(c: Compilation) -> Compilation:
    assert c.spec is not None
    spec = c.spec
    rule = spec.budget.rule
    fpt = {m.name: m.flops_per_token for m in c.members}
    if rule == "explicit":
        stage = {k: float(v) for k, v in spec.budget.tokens.items()}
        baseline = {k: float(spec.budget.baseline_tokens.get(k, stage[k])) for k in stage}
    else:
        r = tokens_per_param(c)
        assert r is not None
        baseline = {name: r * n for name, n in budget_params(c).items()}
        stage = dict(baseline)
        if rule == "paper":
            for g in spec.growth:
                extra = fpt[g.target] * baseline[g.target] - fpt[g.source] * baseline[g.source]
                if extra <= 0:
                    path = ("growth", g.index, "to")
                    raise SpecError([c.doc.diagnostic(path, f"{g.target} needs no more compute than {g.source} "
                                                      "under the paper rule", code="budget")])
                stage[g.target] = extra / fpt[g.target]
    budgets = tuple(
        StageBudget(member=m.name, tokens_requested=round(stage[m.name]),
                    baseline_tokens_requested=round(baseline[m.name]))
        for m in spec.members
    )
    return replace(c, budgets=budgets)
