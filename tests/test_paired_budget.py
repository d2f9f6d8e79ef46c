"""The paired budget rule (neurodeploy.optimize.budget) against hand-computed cases.

Clopper-Pearson at two-sided level 0.90 for k losses among m discordant items has closed forms at the
edges: k = m gives q in [0.05 ** (1 / m), 1], k = 0 gives q in [0, 1 - 0.05 ** (1 / m)]; the difference
interval is d = (m / n)(1 - 2 q) at the other end of q.
"""

import numpy as np
import pytest

from neurodeploy.optimize.budget import CONFIDENCE, compare_paired, paired_interval


def flags(right: str) -> np.ndarray:
    return np.array([c == "1" for c in right])


def test_only_agreement_gives_a_zero_interval():
    # both right on 3 items, both wrong on 1: nothing discordant, d = 0 exactly
    c = compare_paired(flags("1110"), flags("1110"), budget=0.005)
    assert (c.gained, c.lost, c.difference, c.lower, c.upper) == (0, 0, 0.0, 0.0, 0.0)
    assert c.within_budget


def test_three_losses_in_a_hundred_are_not_shown_beyond_half_a_point():
    # 100 items, the candidate loses 3 the original gets right, gains none: d = -3 pp.
    # q (share of discordant items lost) in [0.05 ** (1/3), 1] = [0.368403, 1];
    # d in [0.03 (1 - 2), 0.03 (1 - 2 * 0.368403)] = [-0.03, +0.0078958]: the interval reaches above
    # -0.005, so three items are not evidence of a loss beyond 0.5 pp -> inside.
    original = np.ones(100, bool)
    candidate = original.copy()
    candidate[[5, 50, 95]] = False
    c = compare_paired(candidate, original, budget=0.005)
    assert (c.gained, c.lost, c.items) == (0, 3, 100)
    assert c.difference == pytest.approx(-0.03)
    assert c.lower == pytest.approx(-0.03)
    assert c.upper == pytest.approx(0.03 * (1 - 2 * 0.05 ** (1 / 3)))
    assert c.upper == pytest.approx(0.0078958, abs=1e-6)
    assert c.within_budget


def test_ten_losses_in_a_hundred_are_shown_beyond_half_a_point():
    # 10 lost, 0 gained of 100: q in [0.05 ** 0.1, 1] = [0.741134, 1];
    # upper end of d = 0.1 (1 - 2 * 0.741134) = -0.0482268 < -0.005 -> outside (shown at 95 % one-sided)
    original = np.ones(100, bool)
    candidate = original.copy()
    candidate[:10] = False
    c = compare_paired(candidate, original, budget=0.005)
    assert c.upper == pytest.approx(0.1 * (1 - 2 * 0.05 ** 0.1))
    assert c.upper == pytest.approx(-0.0482268, abs=1e-6)
    assert not c.within_budget
    # a budget of 5 pp: -4.82 pp is not below -5 pp -> inside
    assert compare_paired(candidate, original, budget=0.05).within_budget


def test_gains_only_bound_the_difference_from_below():
    # 2 gained, 0 lost of 50: q in [0, 1 - 0.05 ** 0.5] = [0, 0.776393];
    # d in [0.04 (1 - 2 * 0.776393), 0.04] = [-0.0221115, +0.04]
    lower, upper = paired_interval(gained=2, lost=0, items=50)
    assert upper == pytest.approx(0.04)
    assert lower == pytest.approx(0.04 * (1 - 2 * (1 - 0.05 ** 0.5)))
    assert lower == pytest.approx(-0.0221115, abs=1e-6)


def test_equal_gains_and_losses_give_a_symmetric_interval():
    # 2 gained, 2 lost of 40: d = 0, and the Clopper-Pearson interval of q = 1/2 is symmetric about 1/2
    lower, upper = paired_interval(gained=2, lost=2, items=40)
    assert lower == pytest.approx(-upper)
    assert 0 < upper < 4 / 40


def test_the_pairing_is_what_narrows_the_interval():
    # 1000 items; the candidate and the original each get 900 right. Paired: they disagree on 4 items only
    # (2 each way), so the interval is within 2 * 4 / 1000 of 0; unpaired, the standard error of one
    # accuracy alone is sqrt(0.9 * 0.1 / 1000) = 0.0095.
    original = np.zeros(1000, bool)
    original[:900] = True
    candidate = original.copy()
    candidate[[0, 1]] = False
    candidate[[900, 901]] = True
    c = compare_paired(candidate, original, budget=0.005)
    assert (c.gained, c.lost, c.difference) == (2, 2, 0.0)
    assert -0.008 < c.lower < 0 < c.upper < 0.008


def test_the_confidence_is_the_reported_one():
    c = compare_paired(flags("10"), flags("01"), budget=0.005)
    assert c.confidence == CONFIDENCE == 0.90
    assert c.as_dict()["within_budget"] is True


def test_mismatched_flags_are_refused():
    with pytest.raises(ValueError):
        compare_paired(flags("101"), flags("10"), budget=0.005)
    with pytest.raises(ValueError):
        paired_interval(gained=3, lost=3, items=5)
