"""The report's verdict in words: what progressive training saved, and what it cost in quality.

Derived only from what the report measured (its totals, each member's held-out loss and its independent twin's,
the KL between adjacent members); where something was not measured the verdict says so instead of guessing.
Torch-free: the planning-only install renders it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from familyc import units
from familyc.report.collect import MemberQuality, PairKL, RunReport

SAME_LOSS = 5e-5
"""Held-out losses closer than this (nats per token) are reported as the same: the tables print 4 decimals."""
SAME_SAVING = 5e-4
"""A saving smaller than this is reported as none: percentages are printed with one decimal."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    family: str
    saving: str
    """One sentence: how much less (or more) compute the progressive family used than independent training."""
    quality: tuple[str, ...]
    """The largest member, then each member, against its independent twin; then the adjacent members' consistency."""


def judge(report: RunReport) -> Verdict:
    """The verdict of a run's report."""
    totals = report.totals()
    return Verdict(family=report.plan.family.name,
                   saving=saving_sentence(planned=totals["savings_planned"], measured=totals["savings_measured"]),
                   quality=quality_lines(report.members, params={m.name: m.params for m in report.plan.members},
                                         kl=report.kl, kl_independent=report.kl_independent))


def saving_sentence(*, planned: float, measured: float | None) -> str:
    """The headline: the measured saving where the independent family ran, else the planned one, said as such."""
    fraction = planned if measured is None else measured
    source = ("as planned: the independent family was not run (familyc apply --baselines measures it)"
              if measured is None else f"measured in training FLOPs; planned {units.percent(planned)}")
    if fraction >= SAME_SAVING:
        amount = f"used {units.percent(fraction)} less compute than"
    elif fraction <= -SAME_SAVING:
        amount = f"used {units.percent(-fraction)} more compute than"
    else:
        amount, source = "used as much compute as", f"no saving, {source}"
    return f"progressive training {amount} training each member independently ({source})"


def quality_lines(members: Sequence[MemberQuality], *, params: Mapping[str, int], kl: Sequence[PairKL],
                  kl_independent: Sequence[PairKL]) -> tuple[str, ...]:
    """Held-out quality against the independent twins, largest member first, then adjacent consistency."""
    evaluated = [m for m in members if m.heldout_loss is not None]
    if not evaluated:
        return ("held-out quality: not evaluated (see the warnings)",)
    lines = []
    twins = [m for m in evaluated if m.baseline_heldout_loss is not None]
    if not twins:
        lines.append("held-out quality: no independent twin to compare with (familyc apply --baselines trains "
                     "them); held-out loss " + ", ".join(f"{m.name} {m.heldout_loss:.4f}" for m in evaluated))
    else:
        largest = max(twins, key=lambda m: params.get(m.name, 0))
        overall = max((m.name for m in members), key=lambda name: params.get(name, 0))
        which = "the largest member" if largest.name == overall else "the largest member with a twin"
        lines.append(f"held-out quality: {which}, {largest.name} ({units.count(params.get(largest.name, 0))} "
                     f"parameters), {_against_twin(largest)}")
        better = sum(1 for m in twins if _difference(m) <= -SAME_LOSS)
        lines.append(f"each member against its independent twin: {better} of {len(twins)} better; "
                     + "; ".join(f"{m.name} {_against_twin(m, short=True)}" for m in twins))
    lines += _consistency(kl, kl_independent)
    unevaluated = [m.name for m in members if m.heldout_loss is None]
    if unevaluated:
        lines.append("not evaluated yet: " + ", ".join(unevaluated))
    return tuple(lines)


def _difference(m: MemberQuality) -> float:
    assert m.heldout_loss is not None and m.baseline_heldout_loss is not None
    return m.heldout_loss - m.baseline_heldout_loss


def _against_twin(m: MemberQuality, *, short: bool = False) -> str:
    """`is 1.2% better than its independent twin (held-out loss 5.1234 against 5.1834, -0.0600 nats per token)`."""
    assert m.heldout_loss is not None and m.baseline_heldout_loss is not None
    diff = _difference(m)
    losses = f"{m.heldout_loss:.4f} against {m.baseline_heldout_loss:.4f}"
    if abs(diff) < SAME_LOSS:
        judgement = "as good as" if not short else "the same"
    else:
        relative = units.percent(abs(diff) / m.baseline_heldout_loss)
        word = "better" if diff < 0 else "worse"
        judgement = f"{relative} {word} than" if not short else f"{relative} {word}"
    if short:
        return f"{judgement} ({losses})"
    return (f"is {judgement} its independent twin: held-out loss {losses}, {diff:+.4f} nats per token "
            "(lower is better)")


def _mean_kl(k: PairKL) -> float:
    return (k.kl_small_large + k.kl_large_small) / 2


def _consistency(kl: Sequence[PairKL], kl_independent: Sequence[PairKL]) -> list[str]:
    """Whether adjacent progressive members disagree less (lower KL, both directions averaged) than the twins."""
    if not kl:
        return []
    independent = {(k.small, k.large): k for k in kl_independent}
    compared = [(k, independent[(k.small, k.large)]) for k in kl if (k.small, k.large) in independent]
    if not compared:
        return ["adjacent members' KL (nats per token, both directions averaged): "
                + ", ".join(f"{k.small}-{k.large} {_mean_kl(k):.4f}" for k in kl)
                + "; no independent family to compare with"]
    closer = sum(1 for p, i in compared if _mean_kl(p) < _mean_kl(i))
    if closer == len(compared):
        head = "adjacent members are more consistent than their independent twins"
    elif closer == 0:
        head = "adjacent members are less consistent than (or as consistent as) their independent twins"
    else:
        head = (f"adjacent members are more consistent than their independent twins for {closer} of {len(compared)} "
                "pairs")
    pairs = "; ".join(f"{p.small}-{p.large} {_mean_kl(p):.4f} against {_mean_kl(i):.4f}" for p, i in compared)
    return [f"{head}: KL between neighbours, both directions averaged, {pairs} nats per token"]
