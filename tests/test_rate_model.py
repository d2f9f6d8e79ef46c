"""The rate model (``neurodeploy.ir.rate_model``) by hand: the one rule the ring buffers' rates and phase 2's silence
order both read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodeploy.ir import Dense, Network, NeuronSpec, Population
from neurodeploy.ir.rate_model import RateModel
from neurodeploy.passes.ring_buffers import firing_rates

X = torch.tensor([[0.5, 1.0]])


def hand_network() -> Network:
    """h1 (theta 2, bias 0.5 on neuron 1) = W1 x; h2 (theta 0.5) = W2 (rate x theta of h1); out = h2_0 - h2_1 + 0.1;
    a one-step feedback h2 -> h1 that the rate model leaves out."""
    net = Network()
    net.add_population(Population("input", (2,), "input"))
    net.add_population(Population("h1", (3,), "hidden", NeuronSpec(threshold=2.0),
                                  bias=np.array([0.0, 0.5, 0.0], np.float32)))
    net.add_population(Population("h2", (2,), "hidden", NeuronSpec(threshold=0.5)))
    net.add_population(Population("out", (1,), "output", NeuronSpec(), bias=np.array([0.1], np.float32)))
    net.connect("input", "h1", [Dense(np.array([[2, 0], [0, 1], [4, 4]], np.float32))])
    net.connect("h1", "h2", [Dense(np.array([[0.2, 0.2, 0], [0, 0, 0.1]], np.float32))])
    net.connect("h2", "out", [Dense(np.array([[1, -1]], np.float32))])
    net.connect("h2", "h1", [Dense(np.full((3, 2), 10.0, np.float32))], delay=1)
    return net.validate()


def test_rates_signals_and_readout_by_hand():
    """h1 currents (1, 1.5, 6) / 2 -> rates (0.5, 0.75, 1) clipped at 1, signals x 2 = (1, 1.5, 2); h2 currents
    (0.5, 0.2) / 0.5 -> (1, 0.4), signals (0.5, 0.2); readout 0.5 - 0.2 + 0.1 = 0.4. Up to k = 2 spikes a step:
    h1 (0.5, 0.75, 2), signals (1, 1.5, 4); h2 currents (0.5, 0.4) -> (1, 0.8); readout 0.2."""
    model = RateModel(hand_network())
    state = model.forward(X)
    assert state.readout.dtype == torch.float32 and state.readout.shape == (1, 1)
    np.testing.assert_allclose(state.rates["h1"], [[0.5, 0.75, 1.0]])
    np.testing.assert_allclose(state.signals["h1"], [[1.0, 1.5, 2.0]])
    np.testing.assert_allclose(state.rates["h2"], [[1.0, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(state.signals["h2"], [[0.5, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(state.readout, [[0.4]], rtol=1e-6)
    assert set(state.rates) == {"h1", "h2"} and torch.equal(state.signals["input"], X)
    doubled = RateModel(hand_network(), torch.float64, max_rate=2).forward(X)
    assert doubled.readout.dtype == torch.float64
    np.testing.assert_allclose(doubled.rates["h1"], [[0.5, 0.75, 2.0]])
    np.testing.assert_allclose(doubled.rates["h2"], [[1.0, 0.8]], rtol=1e-7)  # float32 weights (0.2, 0.1) in float64
    np.testing.assert_allclose(doubled.readout, [[0.2]], rtol=1e-7)  # float32 weights (0.2, 0.1) in float64


def test_a_silenced_channel_is_recomputed_from_its_population_on():
    """h1's channel 0 silenced: h1 signals (0, 1.5, 2), h2 currents (0.3, 0.2) -> rates (0.6, 0.4); readout 0.2; the
    input is taken from the base call, not recomputed."""
    model = RateModel(hand_network())
    base = model.forward(X)
    silenced = model.forward(X, base, "h1", 0)
    np.testing.assert_allclose(silenced.rates["h1"], [[0.0, 0.75, 1.0]])
    np.testing.assert_allclose(silenced.rates["h2"], [[0.6, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(silenced.readout, [[0.2]], rtol=1e-6)
    assert silenced.signals["input"] is base.signals["input"]
    np.testing.assert_allclose(base.rates["h1"], [[0.5, 0.75, 1.0]])  # the base is not changed


@pytest.mark.parametrize("substeps", [1, 2])
def test_ring_buffer_rates_are_the_rate_model_per_tick(substeps):
    """firing_rates: the rate model's rates (up to ``substeps`` spikes a step) / substeps per tick, flattened."""
    rates = firing_rates(hand_network(), X.numpy(), substeps=substeps)
    expected = {1: ([0.5, 0.75, 1.0], [1.0, 0.4]), 2: ([0.25, 0.375, 1.0], [0.5, 0.4])}[substeps]
    assert set(rates) == {"h1", "h2"}
    np.testing.assert_allclose(rates["h1"], [expected[0]], rtol=1e-7)  # float32 weights (0.2, 0.1) in float64
    np.testing.assert_allclose(rates["h2"], [expected[1]], rtol=1e-7)  # float32 weights (0.2, 0.1) in float64
