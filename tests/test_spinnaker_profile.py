"""The reference simulator's spinnaker profile and the passes behind it, against values computed by
hand from sPyNNaker's arithmetic (S16.15, 16-bit ring buffers, IF_curr_delta)."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import constant_current_network, simulate

from neurodeploy.convert import convert
from neurodeploy.errors import BackendError, ConfigError
from neurodeploy.ir import Dense, Identity, Network, NeuronSpec, Population
from neurodeploy.passes.fan_in import apply_dense_pooling, materialize_pooling, plan_dense_pooling, pool_inputs
from neurodeploy.passes.ring_buffers import METADATA_KEY, expected_summed_weights, firing_rates
from neurodeploy.targets.spinnaker import (
    DeltaCell,
    quantize_weights,
    ring_buffer_limit,
    ring_buffer_shift,
    round_s1615,
)

Q = 2.0**-15


def test_ring_buffer_shift_follows_spynnaker():
    # smallest power of two above the sum, an exact power counts as "above" only one step up
    assert [ring_buffer_shift(w) for w in (0.0, 0.3, 1.0, 1.5, 2.0, 3.9, 4.0, 100.0)] == [0, 0, 1, 1, 2, 2, 3, 7]
    assert ring_buffer_limit(0) == pytest.approx(65535 / 32768)
    weights, clipped = quantize_weights(np.array([0.1, -0.1, 1e-6, 3.0]), shift=1)
    # one unit is 2^(1-15); 0.1 -> rint(1638.4) = 1638 units; 3.0 needs 49152 units < 65536
    np.testing.assert_allclose(weights, [1638 / 16384, -1638 / 16384, 0.0, 3.0])
    assert clipped == 0
    assert quantize_weights(np.array([5.0]), shift=0)[1] == 1


def test_delta_cell_constants_have_unit_gain():
    cell = DeltaCell.for_tau(1000.0)
    assert cell.decay == round(math.exp(-1e-3) / Q) * Q
    assert cell.gain == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(BackendError, match="tau_m"):
        DeltaCell.for_tau(1e6)


def test_constant_current_neuron_by_hand():
    """One neuron, analog current I: v <- round(e v + round(I)), spike at v >= 1, hard reset to 0; the
    output leaks too and receives the spike one step later as a 16-bit ring-buffer weight."""
    current = 0.3
    net = constant_current_network([current])
    net.populations["output"].metadata[METADATA_KEY] = [1.0, 0.0]  # -> shift 1
    T = 12
    result = simulate(net, torch.tensor([[current]]), T, profile="spinnaker")
    decay = DeltaCell.for_tau(1000.0).decay
    v, out, expected = 0.0, 0.0, []
    spikes = []
    for t in range(T):
        arriving = spikes[-1] if spikes else 0.0
        out = float(round_s1615(decay * out + arriving))
        expected.append(out)
        drive = float(round_s1615(current)) if t >= 1 else 0.0  # the analog input arrives one step late
        v = float(round_s1615(decay * v + drive))
        spikes.append(1.0 if v >= 1.0 else 0.0)
        if v >= 1.0:
            v = 0.0
    np.testing.assert_allclose(result.readout[0, :, 0], expected, atol=1e-6)
    assert sum(spikes) == 2  # hard reset: 0.3 per step fires every 4th step, not 0.3 per step as with subtraction


def test_ring_buffer_saturates_per_step():
    """Four sources fire together into one neuron with weight 1 each; a shift of 0 holds at most
    65535 / 32768 per step, so the target gets 1.99997 instead of 4."""
    net = Network()
    net.add_population(Population("input", (4,), "input"))
    net.add_population(Population("hidden", (4,), "hidden", NeuronSpec(threshold=0.5)))
    net.add_population(Population("output", (1,), "output", NeuronSpec()))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "output", [Dense(np.full((1, 4), 2.0, np.float32))])  # x amplitude 0.5 = 1 each
    net.validate()
    net.populations["output"].metadata[METADATA_KEY] = [0.5, 0.0]
    result = simulate(net, torch.ones((1, 4)), 3, profile="spinnaker")
    # step 1 the hidden neurons get no current yet (one-step delay), step 2 they fire, step 3 it arrives
    assert result.readout[0, 2, 0] == pytest.approx(65535 / 32768, abs=1e-6)
    net.populations["output"].metadata[METADATA_KEY] = [4.0, 0.0]
    assert simulate(net, torch.ones((1, 4)), 3, profile="spinnaker").readout[0, 2, 0] == pytest.approx(4.0)


def test_parts_can_be_left_out_and_unknown_parts_are_refused():
    net = constant_current_network([0.3])
    x = torch.tensor([[0.3]])
    only_leak = simulate(net, x, 12, profile="spinnaker", spinnaker_parts=("leak",))
    pynn = simulate(net, x, 12, profile="pynn")
    assert only_leak.spike_counts.sum() == pynn.spike_counts.sum() == 3  # the leak alone loses no spike here
    with pytest.raises(ConfigError, match="unknown spinnaker profile parts"):
        simulate(net, x, 2, profile="spinnaker", spinnaker_parts=("hard_reset", "magic"))


def test_rates_and_expected_summed_weight_by_hand():
    """hidden = [0.5 x0, 0.25 x0] (theta 1) -> rates 0.5, 0.25 for x0 = 1; output weights (1, -2):
    exc mean 0.5, var 0.25 -> 0.5 + 2 * 0.5; inh mean 0.5, var 4 * 0.1875 -> 0.5 + 2 * 0.866."""
    net = Network()
    net.add_population(Population("input", (1,), "input"))
    net.add_population(Population("hidden", (2,), "hidden", NeuronSpec()))
    net.add_population(Population("output", (1,), "output", NeuronSpec()))
    net.connect("input", "hidden", [Dense(np.array([[0.5], [0.25]], np.float32))])
    net.connect("hidden", "output", [Dense(np.array([[1.0, -2.0]], np.float32))])
    net.validate()
    np.testing.assert_allclose(firing_rates(net, np.ones((1, 1)))["hidden"], [[0.5, 0.25]])
    summed = expected_summed_weights(net, np.ones((1, 1)), sigma=2.0)
    assert summed["output"] == pytest.approx([1.0, min(0.5 + 2 * math.sqrt(4 * 0.1875), 2.0)])
    assert summed["hidden"] == [0.0, 0.0]  # analog input is current injection, no ring buffer
    assert expected_summed_weights(net, np.ones((1, 1)), encoding="if", sigma=0.0)["hidden"] == [0.5, 0.0]


def test_fan_in_pooling_plan_weights_and_host_pooling():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    plan, changes = plan_dense_pooling(model, (1, 8, 8), max_fan_in=20)
    assert plan == [{"flatten_index": 0, "factor": 2}] and changes[0].fan_in_after == 16
    pooled = apply_dense_pooling(model, (1, 8, 8), plan)
    flat = torch.rand(4, 1, 4, 4)
    constant_windows = flat.repeat_interleave(2, 2).repeat_interleave(2, 3)  # every 2x2 window constant
    torch.testing.assert_close(pooled(constant_windows), model(constant_windows))
    network = convert(pooled, torch.rand(32, 1, 8, 8))
    changes = materialize_pooling(network, max_fan_in=20)
    assert network.input.shape == (1, 4, 4) and changes[0].fan_in_after == 16
    assert pool_inputs(network, constant_windows).shape == (4, 1, 4, 4)
    torch.testing.assert_close(pool_inputs(network, constant_windows), flat)
    _, kept = plan_dense_pooling(model, (1, 8, 8), max_fan_in=3)
    assert "kept" in kept[0].action  # 64 / 16 still above 3 with at most 4x4 pooling


def test_fan_in_pass_splits_hidden_pooling_into_a_pool_population():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3)).eval()
    network = convert(model, torch.rand(32, 1, 8, 8))
    changes = materialize_pooling(network, max_fan_in=40)
    pools = [p for p in network.populations.values() if p.metadata.get("inserted_by") == "fan-in pass"]
    assert len(pools) == 1 and pools[0].shape == (2, 4, 4)
    assert changes[0].fan_in_before == 128 and changes[0].fan_in_after == 32
