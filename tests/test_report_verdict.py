"""The report's verdict in words, from the numbers alone (torch-free: it runs in the planning-only install too)."""

from __future__ import annotations

from familyc.report.collect import MemberQuality, PairKL
from familyc.report.verdict import quality_lines, saving_sentence

PARAMS = {"xs": 1_000, "s": 2_000, "m": 4_000}


def member(name: str, loss: float | None, twin: float | None) -> MemberQuality:
    return MemberQuality(name=name, heldout_loss=loss, baseline_heldout_loss=twin)


def test_the_saving_is_the_measured_one_where_the_independent_family_ran() -> None:
    assert saving_sentence(planned=0.4, measured=0.41) == (
        "progressive training used 41.0% less compute than training each member independently "
        "(measured in training FLOPs; planned 40.0%)")
    assert saving_sentence(planned=0.4, measured=None).startswith(
        "progressive training used 40.0% less compute than training each member independently (as planned: the "
        "independent family was not run")
    assert "used 5.0% more compute than" in saving_sentence(planned=-0.05, measured=None)
    assert saving_sentence(planned=0.0, measured=0.0) == (
        "progressive training used as much compute as training each member independently (no saving, measured in "
        "training FLOPs; planned 0.0%)")


def test_the_largest_member_comes_first_and_each_member_is_judged_honestly() -> None:
    members = (member("xs", 5.0, 4.9), member("s", 4.5, 4.6), member("m", 4.0, 4.0))
    lines = quality_lines(members, params=PARAMS, kl=(), kl_independent=())
    assert lines[0] == ("held-out quality: the largest member, m (4,000 parameters), is as good as its independent "
                        "twin: held-out loss 4.0000 against 4.0000, +0.0000 nats per token (lower is better)")
    assert lines[1] == ("each member against its independent twin: 1 of 3 better; xs 2.0% worse (5.0000 against "
                        "4.9000); s 2.2% better (4.5000 against 4.6000); m the same (4.0000 against 4.0000)")
    assert len(lines) == 2


def test_a_largest_member_without_a_twin_is_not_called_the_largest() -> None:
    lines = quality_lines((member("xs", 5.0, 5.5), member("s", 4.5, None)), params=PARAMS, kl=(), kl_independent=())
    assert lines[0].startswith("held-out quality: the largest member with a twin, xs (1,000 parameters), is 9.1% "
                               "better than its independent twin")


def test_adjacent_consistency_is_compared_pair_by_pair() -> None:
    members = (member("xs", 5.0, 5.1), member("s", 4.5, 4.6), member("m", 4.0, 4.1))
    kl = (PairKL(small="xs", large="s", kl_small_large=0.1, kl_large_small=0.3),
          PairKL(small="s", large="m", kl_small_large=0.5, kl_large_small=0.5))
    independent = (PairKL(small="xs", large="s", kl_small_large=0.4, kl_large_small=0.4),
                   PairKL(small="s", large="m", kl_small_large=0.2, kl_large_small=0.2))
    (*_, consistency) = quality_lines(members, params=PARAMS, kl=kl, kl_independent=independent)
    assert consistency == ("adjacent members are more consistent than their independent twins for 1 of 2 pairs: KL "
                           "between neighbours, both directions averaged, xs-s 0.2000 against 0.4000; s-m 0.5000 "
                           "against 0.2000 nats per token")
    (*_, consistency) = quality_lines(members, params=PARAMS, kl=kl[:1], kl_independent=independent)
    assert consistency.startswith("adjacent members are more consistent than their independent twins: KL")
    (*_, alone) = quality_lines(members, params=PARAMS, kl=kl, kl_independent=())
    assert alone.endswith("no independent family to compare with")


def test_what_was_not_measured_is_said_not_guessed() -> None:
    assert quality_lines((member("xs", None, None),), params=PARAMS, kl=(), kl_independent=()) == (
        "held-out quality: not evaluated (see the warnings)",)
    lines = quality_lines((member("xs", 5.0, None), member("s", None, None)), params=PARAMS, kl=(), kl_independent=())
    assert lines == ("held-out quality: no independent twin to compare with (familyc apply --baselines trains them); "
                     "held-out loss xs 5.0000", "not evaluated yet: s")
