"""Anytime metrics against hand-computed values."""

import numpy as np
import pytest

from neurodeploy.evaluate.metrics import (
    combined_sparsity,
    events_to_accuracy,
    pareto_envelope,
    pareto_latency,
    pareto_power,
    spikes_per_neuron,
    time_to_accuracy,
)
from neurodeploy.evaluate.result import SimulationResult

CURVE = np.array([0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.75, 0.75])
A_STAR = 0.75


def test_reference_case_raw_form():
    # (0.65 + 0.45 + 0.25 + 0.15 + 0.05 - 0.05 + 0 + 0) / 0.75 = 2.0
    assert pareto_latency(CURVE, A_STAR, "raw") == pytest.approx(2.0)


def test_reference_case_pareto_form():
    # envelope = min(cummax, a*) = [.1, .3, .5, .6, .7, .75, .75, .75]
    # (0.65 + 0.45 + 0.25 + 0.15 + 0.05) / 0.75 = 1.55 / 0.75 = 2.0666...
    np.testing.assert_allclose(pareto_envelope(CURVE, A_STAR), [.1, .3, .5, .6, .7, .75, .75, .75])
    assert pareto_latency(CURVE, A_STAR, "pareto") == pytest.approx(1.55 / 0.75)


def test_pareto_power_by_hand():
    events = np.array([10, 20, 30, 40, 50, 60, 70, 80.0])
    raw = (0.65 * 10 + 0.45 * 20 + 0.25 * 30 + 0.15 * 40 + 0.05 * 50 - 0.05 * 60) / 0.75
    pareto = (0.65 * 10 + 0.45 * 20 + 0.25 * 30 + 0.15 * 40 + 0.05 * 50) / 0.75
    assert pareto_power(CURVE, A_STAR, events, "raw") == pytest.approx(raw)
    assert pareto_power(CURVE, A_STAR, events, "pareto") == pytest.approx(pareto)


def test_pareto_envelope_never_rewards_a_drop():
    dropping = np.array([0.5, 0.9, 0.2, 0.2])
    assert pareto_latency(dropping, 0.9, "pareto") == pytest.approx(0.4 / 0.9)
    assert pareto_latency(dropping, 0.9, "raw") == pytest.approx((0.4 + 0.7 + 0.7) / 0.9)


def test_time_and_events_to_accuracy():
    events = np.array([1, 2, 3, 4, 5, 6, 7, 8.0])
    assert time_to_accuracy(CURVE, 0.6) == 4
    assert events_to_accuracy(CURVE, events, 0.6) == 1 + 2 + 3 + 4
    assert time_to_accuracy(CURVE, 0.81) is None
    assert events_to_accuracy(CURVE, events, 0.81) is None


def test_combined_sparsity():
    assert combined_sparsity(0.5, 0.2) == pytest.approx(1 - 0.5 * 0.8)


def test_spikes_per_neuron_by_hand():
    spikes = np.zeros((2, 3, 3), np.float32)
    spikes[:, :, 1] = [[1, 2, 3], [0, 0, 4]]  # hidden: 10 spikes over 2 items
    spikes[:, :, 0] = 7  # input spikes are not neurons of the SNN
    result = SimulationResult(np.zeros((2, 3, 2), np.float32), np.zeros(2, np.int64), spikes, spikes.copy(),
                              {"populations": [{"name": "input", "role": "input", "size": 4},
                                               {"name": "h", "role": "hidden", "size": 5},
                                               {"name": "output", "role": "output", "size": 2}]})
    assert spikes_per_neuron(result) == pytest.approx(10 / 5 / 2)
    assert spikes_per_neuron(result, stop=np.array([1, 2])) == pytest.approx(1 / 5 / 2)
