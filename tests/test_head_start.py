"""A growth's head start, from its stage's held-out curve (familyc.report.collect.head_start): torch-free."""

from __future__ import annotations

import pytest

from familyc.report.collect import head_start


def test_a_curve_that_rises_then_recovers() -> None:
    curve = [(0, 4.00), (5, 4.20), (10, 4.05), (15, 3.99), (20, 3.80)]
    h = head_start(curve, step="train-l", growth="expand-m-l", batch_tokens=1000)
    assert h is not None
    assert (h.loss_at_start, h.peak_loss, h.peak_step, h.final_loss, h.evaluations) == (4.0, 4.2, 5, 3.8, 5)
    assert h.peak_rise == pytest.approx(0.2)
    assert h.tokens_to_recover == 15_000  # the first evaluation below step 0's value


def test_a_curve_that_only_falls_has_no_rise_and_recovers_at_once() -> None:
    h = head_start([(0, 4.0), (4, 3.9), (8, 3.7)], step="t", growth="g", batch_tokens=10)
    assert h is not None and h.peak_rise == 0.0 and h.peak_step == 4 and h.tokens_to_recover == 40


def test_a_curve_that_never_recovers() -> None:
    h = head_start([(0, 4.0), (4, 4.3), (8, 4.1)], step="t", growth="g", batch_tokens=10)
    assert h is not None and h.tokens_to_recover is None and h.peak_rise == pytest.approx(0.3)


@pytest.mark.parametrize("curve", [[], [(0, 4.0)], [(3, 4.0), (6, 3.9)]])
def test_no_head_start_without_step_0_and_a_later_point(curve: list[tuple[int, float]]) -> None:
    assert head_start(curve, step="t", growth="g", batch_tokens=10) is None


def test_the_validation_and_test_halves_of_the_heldout_split_are_disjoint_and_cover_it() -> None:
    from familyc.data.builtin import in_heldout_part

    texts = [f"document {i}" for i in range(400)]
    validation = {t for t in texts if in_heldout_part(t, "validation")}
    test = {t for t in texts if in_heldout_part(t, "test")}
    assert validation.isdisjoint(test) and validation | test == set(texts)
    assert 150 < len(validation) < 250  # about half
    assert all(in_heldout_part(t, "all") for t in texts)
