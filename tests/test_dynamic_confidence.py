"""Dynamic Confidence: the exact sorted-pass threshold search equals brute force; oracle; pick rule."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurodeploy.evaluate.dynamic_confidence import (
    choose_threshold,
    confidence,
    confidence_log_odds,
    evaluate_dynamic_confidence,
    fit_temperature,
    oracle,
    pareto_front,
    stop_times,
    threshold_sweep,
)
from neurodeploy.evaluate.result import SimulationResult


def brute_force(conf, correct, thresholds):
    n, T = conf.shape
    latency, accuracy = [], []
    for c in thresholds:
        stops = stop_times(conf, c)
        latency.append(stops.mean())
        accuracy.append(correct[np.arange(n), stops - 1].mean())
    return np.array(latency), np.array(accuracy)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12), st.integers(1, 15), st.integers(0, 2**31 - 1), st.booleans())
def test_sweep_equals_brute_force(n, T, seed, coarse):
    rng = np.random.default_rng(seed)
    conf = rng.random((n, T))
    if coarse:
        conf = np.round(conf, 1)  # many ties
    correct = rng.random((n, T)) < 0.6
    sweep = threshold_sweep(conf, correct)
    latency, accuracy = brute_force(conf, correct, sweep.thresholds)
    np.testing.assert_allclose(sweep.mean_latency, latency)
    np.testing.assert_allclose(sweep.accuracy, accuracy)
    # Thresholds are the record values (where an item's running max rises); every other distinct
    # confidence value, and any threshold at all, gives one of the sweep's points.
    assert set(sweep.thresholds[:-1]) <= set(np.unique(conf))
    for c in np.concatenate([np.unique(conf), rng.random(5)]):
        lat, acc = brute_force(conf, correct, [c])
        assert (np.isclose(sweep.mean_latency, lat[0]) & np.isclose(sweep.accuracy, acc[0])).any()


def test_sweep_by_hand():
    conf = np.array([[0.5, 0.9, 0.7], [0.8, 0.6, 0.95]])
    correct = np.array([[False, True, True], [True, False, True]])
    sweep = threshold_sweep(conf, correct)
    # c >= 0.95: nobody exits early (latency 3, both correct at T)
    assert sweep.thresholds[0] == 0.95 and sweep.mean_latency[0] == 3 and sweep.accuracy[0] == 1
    # c = 0.8: item 0 exits at 2 (0.9 > 0.8), item 1 at 3 -> latency 2.5, accuracy 1
    k = list(sweep.thresholds).index(0.8)
    assert (sweep.mean_latency[k], sweep.accuracy[k]) == (2.5, 1.0)
    # below 0.5 everyone exits at step 1: item 0 wrong, item 1 right
    assert (sweep.mean_latency[-1], sweep.accuracy[-1]) == (1.0, 0.5)
    chosen = choose_threshold(sweep)
    assert sweep.accuracy[chosen] == 1.0 and sweep.mean_latency[chosen] == 1.5  # c in [0.5, 0.8)
    front = pareto_front(sweep)
    assert list(sweep.mean_latency[front]) == [1.0, 1.5]


def test_stable_rule_stops_at_the_first_drop():
    from neurodeploy.evaluate.dynamic_confidence import Sweep

    sweep = Sweep(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([10.0, 8, 6, 4, 2]),
                  np.array([0.90, 0.91, 0.89, 0.92, 0.5]))
    assert choose_threshold(sweep, rule="stable") == 1  # 0.89 at index 2 breaks the run
    assert choose_threshold(sweep, rule="fastest") == 3  # the lucky point far down the sweep
    assert choose_threshold(sweep, tolerance=0.02, rule="stable") == 3
    with pytest.raises(ValueError, match="rule must be one of"):
        choose_threshold(sweep, rule="greedy")


def test_tolerance_allows_a_faster_point():
    conf = np.array([[0.5, 0.9, 0.7], [0.8, 0.6, 0.95]])
    correct = np.array([[False, True, True], [True, False, True]])
    sweep = threshold_sweep(conf, correct)
    assert sweep.mean_latency[choose_threshold(sweep, tolerance=0.5)] == 1.0


def test_oracle_both_conventions():
    correct = np.array([[False, True, True], [False, False, False], [True, False, False]])
    bound = oracle(correct)
    assert bound["accuracy"] == pytest.approx(2 / 3)
    assert bound["mean_latency"] == pytest.approx((2 + 3 + 1) / 3)
    assert bound["mean_latency_never_correct_at_1"] == pytest.approx((2 + 1 + 1) / 3)


def test_confidence_and_temperature():
    readout = np.array([[[2.0, 0.0]]])
    assert confidence(readout, 2.0)[0, 0] == pytest.approx(np.exp(1) / (np.exp(1) + 1))
    readout = np.array([[[1.0, 3.0, 2.0], [900.0, 0.0, 1.0]]])
    log_odds = confidence_log_odds(readout, 1.0)
    c = confidence(readout, 1.0)[0, 0]
    assert log_odds[0, 0] == pytest.approx(np.log(c / (1 - c)))
    assert log_odds[0, 1] == pytest.approx(900 - np.log(1 + np.e))  # C == 1.0 in float64, log-odds finite
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 3
    labels = np.array([rng.choice(5, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    # Labels drawn from softmax(logits): the maximum-likelihood temperature is 1; scaled logits give 4.
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(4 * logits, labels) == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize("alpha", ["T", "fit"])
def test_evaluate_on_synthetic_result_saves_steps_without_loss(alpha):
    """Separable classes: the fitted temperature is tiny and plain softmax would saturate at 1.0."""
    rng = np.random.default_rng(0)
    n, T, classes = 400, 30, 4
    labels = rng.integers(0, classes, n)
    drift = np.zeros((n, classes))
    drift[np.arange(n), labels] = rng.uniform(1.5, 3.0, n)
    readout = np.cumsum(drift[:, None, :] + rng.normal(0, 1.0, (n, T, classes)), axis=1).astype(np.float32)
    events = np.ones((n, T, 2), np.float32)
    result = SimulationResult(readout, labels, events, events,
                              {"populations": [{"name": "h", "role": "hidden", "size": 1},
                                               {"name": "output", "role": "output", "size": classes}]})
    out = evaluate_dynamic_confidence(result, alpha=alpha, validation_fraction=0.5, seed=1)
    dc = out["dynamic_confidence"]
    assert dc["n_validation"] + dc["n_test"] == n
    assert dc["validation_accuracy"] >= dc["validation_full_T_accuracy"]
    assert dc["mean_latency"] < T and dc["step_saving"] == pytest.approx(1 - dc["mean_latency"] / T)
    assert dc["event_saving"] == pytest.approx(dc["step_saving"])
