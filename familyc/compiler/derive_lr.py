"""Pass 5, derive_lr: the peak learning rate of every member.

Needs: `members`. Adds: `max_lr`. The paper only says the maximum LR is "adjusted by model
size"; the spec chooses: one constant (the paper's ablation), a table, or a power law
lr = reference_lr x (N / reference_params)^exponent in total parameters N (a negative
exponent gives larger members a smaller peak), rounded to 4 significant digits so that the
plan reads well. A baseline member uses its size's LR.
"""

from __future__ import annotations

from dataclasses import replace

from familyc.compiler.state import Compilation


def derive_lr(c: Compilation) -> Compilation:
    assert c.spec is not None
    lr = c.spec.lr
    out: dict[str, float] = {}
    for m in c.members:
        if lr.rule == "constant":
            assert lr.value is not None
            out[m.name] = lr.value
        elif lr.rule == "table":
            out[m.name] = lr.table[m.name]
        else:
            law = lr.power_law
            assert law is not None
            out[m.name] = float(f"{law.reference_lr * (m.params / law.reference_params) ** law.exponent:.4g}")
    return replace(c, max_lr=out)
