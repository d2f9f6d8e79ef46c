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
from neurodeploy.ir.ops import AvgPool2d, Conv2d, Flatten
from neurodeploy.passes.fan_in import apply_dense_pooling, materialize_pooling, plan_dense_pooling, pool_inputs
from neurodeploy.passes.ring_buffers import METADATA_KEY, expected_summed_weights, firing_rates
from neurodeploy.targets.spinnaker import (
    DeltaCell,
    ExpCell,
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
    result = simulate(net, torch.tensor([[current]]), T, profile="spinnaker", substeps=1)
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
    result = simulate(net, torch.ones((1, 4)), 3, profile="spinnaker", substeps=1)
    # step 1 the hidden neurons get no current yet (one-step delay), step 2 they fire, step 3 it arrives
    assert result.readout[0, 2, 0] == pytest.approx(65535 / 32768, abs=1e-6)
    net.populations["output"].metadata[METADATA_KEY] = [4.0, 0.0]
    assert simulate(net, torch.ones((1, 4)), 3, profile="spinnaker", substeps=1).readout[0, 2, 0] == pytest.approx(4.0)


def test_parts_can_be_left_out_and_unknown_parts_are_refused():
    net = constant_current_network([0.3])
    x = torch.tensor([[0.3]])
    only_leak = simulate(net, x, 12, profile="spinnaker", substeps=1, spinnaker_parts=("leak",))
    pynn = simulate(net, x, 12, profile="pynn")
    assert only_leak.spike_counts.sum() == pynn.spike_counts.sum() == 3  # the leak alone loses no spike here
    with pytest.raises(ConfigError, match="unknown spinnaker profile parts"):
        simulate(net, x, 2, profile="spinnaker", substeps=1, spinnaker_parts=("hard_reset", "magic"))


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


# --- the spinnaker_exp profile: IF_curr_exp (tau_syn 1/32 ms) of the local-only variant -----------------------

def test_exp_cell_constants_by_hand():
    """tau_syn = 1/32 ms: exp(-32) is 0 in u0.32 and init = floor(1024 (2^32 - 1) / 2^15) = 2^27 - 1; cm makes
    R (1 - e) init about 1 (R about 31783, so R (1 - e) about 32)."""
    cell = ExpCell.for_tau(1000.0)
    assert cell.tau_syn == 1 / 32 and cell.syn_decay_bits == 0 and cell.init_bits == 2**27 - 1
    assert cell.decay == 32735 / 32768 and cell.cm == 1031 / 32768
    assert cell.resistance == round(1000 / (1031 / 32768) / Q) * Q
    assert cell.bias_gain == pytest.approx(cell.resistance * 33 / 32768)
    assert cell.bias_gain == pytest.approx(32.0078, abs=1e-4)
    assert cell.gain == pytest.approx(1.0, abs=3e-4)
    # floor(x * init): one S16.15 unit of current is lost whenever x is a multiple of 2^-10
    np.testing.assert_array_equal(cell.synaptic_input(np.array([0.0, 2**-10, 1.0, 22938 * Q])),
                                  np.array([0, 0, 1023, 716]) * Q)
    with pytest.raises(BackendError, match="tau_syn"):
        ExpCell.for_tau(1000.0, tau_syn=0.1)
    with pytest.raises(BackendError, match="tau_m = 5000"):
        ExpCell.for_tau(5000.0)


def test_exp_constant_current_spike_counts_by_hand():
    """Analog current 0.3: i_offset = round(0.3 / 32.0078) = 307 units, so v grows by 32.0078 * 307 / 32768 =
    0.29988 per step (from step 2, the input's one-step delay) and leaks by e; hard reset: spikes at steps 5
    and 9 of 12. The output reads them one step later through its ring buffer (shift 1: 16384 units, 32768
    bits of S16.15), as the current floor(32768 (2^27 - 1) / 2^32) = 1023 units, a jump of 0.99927."""
    cell = ExpCell.for_tau(1000.0)
    net = constant_current_network([0.3])
    net.populations["output"].metadata[METADATA_KEY] = [1.0, 0.0]
    T = 12
    result = simulate(net, torch.tensor([[0.3]]), T, profile="spinnaker_exp", substeps=1)
    increment = cell.bias_gain * 307 * Q
    arrival = cell.bias_gain * 1023 * Q
    assert increment == pytest.approx(0.29988, abs=1e-5) and arrival == pytest.approx(0.99927, abs=1e-5)
    v, out, spikes, expected = 0.0, 0.0, [], []
    for t in range(T):
        out = float(round_s1615(cell.decay * out + (arrival if spikes and spikes[-1] else 0.0)))
        expected.append(out)
        v = float(round_s1615(cell.decay * v + (increment if t >= 1 else 0.0)))
        spikes.append(v >= 1.0)
        v = 0.0 if v >= 1.0 else v
    assert [t + 1 for t, s in enumerate(spikes) if s] == [5, 9]
    np.testing.assert_allclose(result.readout[0, :, 0], expected, atol=1e-6)
    assert result.spike_counts[0, :, 1].sum() == 2
    report = result.metadata["spinnaker_arithmetic"]
    assert report["cell"]["model"] == "IF_curr_exp" and report["connectors"] == {"fromlist": 2}


def test_exp_one_synaptic_event_membrane_trajectory_by_hand():
    """One spike with weight 0.7 (shift 1: rint(0.7 * 16384) = 11469 units, 22938 bits): the current is
    floor(22938 (2^27 - 1) / 2^32) = 716 units for one step only (tau_syn 1/32 ms), so the membrane jumps to
    32.0078 * 716 / 32768 = 0.69940 and then only leaks (the delta cell would give 11469 / 16384 = 0.70001)."""
    cell = ExpCell.for_tau(1000.0)
    net = Network()
    net.add_population(Population("input", (1,), "input"))
    net.add_population(Population("hidden", (1,), "hidden", NeuronSpec()))
    net.add_population(Population("output", (1,), "output", NeuronSpec()))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "output", [Dense(np.array([[0.7]], np.float32))])
    net.validate()
    net.populations["output"].metadata[METADATA_KEY] = [1.0, 0.0]
    # the hidden neuron fires at step 3 (0.6 per step from step 2) and again at step 5, which arrives at step 6
    result = simulate(net, torch.tensor([[0.6]]), 5, profile="spinnaker_exp", substeps=1)
    jump = float(round_s1615(cell.bias_gain * 716 * Q))
    assert jump == pytest.approx(0.69940, abs=1e-5)
    np.testing.assert_allclose(result.readout[0, :, 0], [0.0, 0.0, 0.0, jump, float(round_s1615(cell.decay * jump))],
                               atol=1e-7)
    delta = simulate(net, torch.tensor([[0.6]]), 5, profile="spinnaker", substeps=1)
    assert delta.readout[0, 3, 0] == pytest.approx(11469 / 16384, abs=1e-6)


def test_exp_local_only_weights_are_int16():
    """A 1 x 1 convolution between two (1, 4, 4) populations is a ConvolutionConnector in the local-only variant:
    its weight 1.5 at shift 0 needs 49152 units, more than int16 holds, so it is clipped to 32767 (current
    floor(32767 (2^27 - 1) / 2^32) = 1023 units); the same weight as a FromList synapse (the spinnaker
    profile) keeps its 49152 units."""
    net = Network()
    net.add_population(Population("input", (1, 4, 4), "input"))
    net.add_population(Population("hidden", (1, 4, 4), "hidden", NeuronSpec(threshold=0.5)))
    net.add_population(Population("next", (1, 4, 4), "hidden", NeuronSpec(threshold=100.0)))
    net.add_population(Population("output", (2,), "output", NeuronSpec()))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "next", [Conv2d(np.full((1, 1, 1, 1), 3.0, np.float32))])  # x amplitude 0.5 = 1.5
    net.connect("next", "output", [Flatten(), Dense(np.ones((2, 16), np.float32))])
    net.validate()
    net.populations["next"].metadata[METADATA_KEY] = [0.5, 0.5]  # -> shift 0
    x = torch.ones((1, 1, 4, 4))
    report = simulate(net, x, 4, profile="spinnaker_exp", substeps=1).metadata["spinnaker_arithmetic"]
    assert report["connectors"] == {"conv": 2, "pool_dense": 1}  # input -> hidden (identity) counts as conv
    assert report["populations"]["next"]["weights_clipped"] == 16
    delta = simulate(net, x, 4, profile="spinnaker", substeps=1)
    assert delta.metadata["spinnaker_arithmetic"]["populations"]["next"]["weights_clipped"] == 0


class _TwoBranchConcatPool(nn.Module):
    """Two convolution branches concatenated, then pooled into a dense head: the head's population takes one
    pooled projection from each branch (an Inception block's concatenation does the same)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 3, 3, padding=1)
        self.pool, self.head = nn.AvgPool2d(2), nn.Linear(5 * 4 * 4, 3)

    def forward(self, x):
        joined = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        return self.head(self.pool(joined).flatten(1))


def test_fan_in_pass_gives_each_pooled_source_of_one_target_its_own_pool_population():
    torch.manual_seed(0)
    network = convert(_TwoBranchConcatPool().eval(), torch.rand(32, 1, 8, 8))
    (head,) = {p.target for p in network.projections if p.ops and isinstance(p.ops[0], AvgPool2d)}
    changes = materialize_pooling(network, max_fan_in=40)  # fan-in before: (2 + 3) x 16 windows x 4 = 320
    pools = sorted((p.name, p.shape) for p in network.populations.values()
                   if p.metadata.get("inserted_by") == "fan-in pass")
    assert pools == [(f"{head}_pool", (2, 4, 4)), (f"{head}_pool_1", (3, 4, 4))]
    assert [c.fan_in_before for c in changes] == [320, 320]
    assert changes[-1].fan_in_after == 80  # one synapse per pooled neuron of both pools: 5 x 16
