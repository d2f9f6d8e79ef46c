"""Neuron dynamics against closed forms (docs/semantics.md, "Neuron model")."""

import math

import numpy as np
import pytest
import torch
from conftest import constant_current_network, simulate

# Multiples of 1/64 are exact in float32, so floor() below has no rounding ambiguity.
CURRENTS = [0.0, 1 / 64, 0.125, 0.25, 21 / 64, 0.5, 0.75, 63 / 64, 1.0]


@pytest.mark.parametrize("v0_name, v0", [("zero", 0.0), ("half", 0.5)])
def test_subtract_reset_spike_count_is_floor_tI_plus_v0(v0_name, v0):
    T = 200
    net = constant_current_network(CURRENTS, v_init=v0_name)
    result = simulate(net, torch.tensor([CURRENTS]), T)
    spikes = result.readout[0]  # output membrane = cumulative hidden spikes (identity weights)
    for t in range(1, T + 1):
        expected = [math.floor(t * i + v0) for i in CURRENTS]
        np.testing.assert_array_equal(spikes[t - 1], expected)


def test_uniform_initial_membrane_is_seeded_and_in_range():
    net = constant_current_network([0.25] * 50, v_init="uniform")
    v0 = np.random.default_rng(3).random(50).astype(np.float32)
    assert np.all((v0 >= 0) & (v0 < 1))
    result = simulate(net, torch.full((1, 50), 0.25), 40)
    for t in range(1, 41):
        np.testing.assert_array_equal(result.readout[0, t - 1], np.floor(t * 0.25 + v0))
    again = simulate(net, torch.full((1, 50), 0.25), 40)
    np.testing.assert_array_equal(result.readout, again.readout)


def test_zero_reset_loses_the_overshoot():
    currents = [0.25, 0.375, 0.75, 1.0]
    T = 60
    net = constant_current_network(currents, reset="zero")
    result = simulate(net, torch.tensor([currents]), T)
    for k, current in enumerate(currents):
        period = math.ceil(1 / current)  # steps from 0 to threshold; the excess is discarded
        expected = [t // period for t in range(1, T + 1)]
        np.testing.assert_array_equal(result.readout[0, :, k], expected)


def test_zero_reset_with_half_start():
    net = constant_current_network([0.375], reset="zero", v_init="half")
    result = simulate(net, torch.tensor([[0.375]]), 30)
    first = math.ceil((1 - 0.5) / 0.375)  # 2 steps from 0.5, then every ceil(1/0.375) = 3
    expected = [0 if t < first else 1 + (t - first) // 3 for t in range(1, 31)]
    np.testing.assert_array_equal(result.readout[0, :, 0], expected)


def test_membrane_readout_is_v0_plus_cumulative_input():
    from neurodeploy.ir import Identity, Network, NeuronSpec, Population

    net = Network()
    net.add_population(Population("input", (3,), "input"))
    v0 = np.array([0.5, -1.0, 2.0], np.float32)
    net.add_population(Population("output", (3,), "output", NeuronSpec(readout="membrane", v_init=v0),
                                  bias=np.array([0.25, 0.0, -0.5], np.float32)))
    net.connect("input", "output", [Identity()])
    x = torch.tensor([[0.125, 0.75, 0.5]])
    result = simulate(net, x, 16)
    t = np.arange(1, 17)[:, None]
    np.testing.assert_allclose(result.readout[0], v0 + t * (x.numpy() + [0.25, 0.0, -0.5]), rtol=0, atol=1e-6)


def test_threshold_amplitude_and_per_channel_threshold():
    # theta = 2: spikes by t = floor(t * I / 2), each carrying amplitude 2 downstream.
    currents = [0.5, 1.0, 1.5]
    net = constant_current_network(currents, threshold=2.0)
    result = simulate(net, torch.tensor([currents]), 40)
    for t in range(1, 41):
        np.testing.assert_array_equal(result.readout[0, t - 1], [2 * math.floor(t * i / 2) for i in currents])


def test_leak_decays_membrane():
    from neurodeploy.ir import Identity, Network, NeuronSpec, Population

    net = Network()
    net.add_population(Population("input", (1,), "input"))
    net.add_population(Population("hidden", (1,), "hidden", NeuronSpec(leak_tau=10.0)))
    net.add_population(Population("output", (1,), "output", NeuronSpec()))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "output", [Identity()])
    # steady state of v = d v + I is I / (1 - d) = 0.095 / (1 - e^-0.1) ~ 0.998 < 1: never fires.
    result = simulate(net, torch.tensor([[0.095]]), 300)
    assert result.readout[0, -1, 0] == 0
    result = simulate(net, torch.tensor([[0.11]]), 300)
    assert result.readout[0, -1, 0] > 0
