"""The hard-reset compensation (``neurodeploy/passes/reset_compensation.py``): the overshoot it measures, the
reset values it sets and what the spinnaker profiles and the spinnaker backend's lowering make of them, against
spike counts computed by hand."""

import numpy as np
import pytest
import torch
from conftest import constant_current_network, large_rare_inputs_network, simulate

from neurodeploy.backends.gpu.spinnaker_profile import compensate_hard_reset, mean_overshoot
from neurodeploy.backends.pynn.lowering import lower_network
from neurodeploy.ir import Identity, Network, NeuronSpec, Population
from neurodeploy.ir.ops import AvgPool2d
from neurodeploy.passes.reset_compensation import (
    METADATA_KEY,
    annotate_reset_compensation,
    lattice_step,
    lattice_values,
    v_reset,
)
from neurodeploy.passes.ring_buffers import METADATA_KEY as SUMMED
from neurodeploy.targets.spinnaker import DeltaCell, ExpCell, round_s1615


def _spike_steps(result) -> list[int]:
    """Steps (1-based) at which the hidden population (index 1) of one neuron spiked."""
    return [t + 1 for t, n in enumerate(result.spike_counts[0, :, 1]) if n]


def test_mean_overshoot_of_a_constant_current_by_hand():
    """Current 0.75 from step 2 (the input's one-step delay), subtract reset: the membrane after n input steps
    is 0.75 n - spikes, so spikes at n = 2, 3, 4 of every 4 leave 0.5, 0.25 and 0: 72 spikes in 96 input steps
    (T = 97), mean overshoot 0.25."""
    net = constant_current_network([0.75])
    x = torch.tensor([[0.75]])
    assert mean_overshoot(net, x, T=97) == {"hidden": pytest.approx(0.25, abs=1e-6)}
    assert simulate(net, x, 97, profile="pynn").spike_counts[0, :, 1].sum() == 72


def test_reset_value_sets_the_firing_rate_of_a_constant_current_by_hand():
    """Current 0.375 per step from step 2, threshold 1, 25 steps (24 input steps), only the hard reset of the
    profile: subtraction fires floor(24 * 0.375) = 9 times; a reset to 0 needs ceil(1 / 0.375) = 3 steps per
    spike (8 spikes); a reset to 0.25 needs 3 steps to the first spike, then ceil(0.75 / 0.375) = 2 (11)."""
    x = torch.tensor([[0.375]])
    net = constant_current_network([0.375])
    assert simulate(net, x, 25, profile="pynn").spike_counts[0, :, 1].sum() == 9
    hard = simulate(net, x, 25, profile="spinnaker", substeps=1, spinnaker_parts=("hard_reset",))
    assert _spike_steps(hard) == list(range(4, 26, 3))
    annotate_reset_compensation(net, {"hidden": 0.25}, "by hand")
    np.testing.assert_array_equal(v_reset(net, "hidden"), [0.25])
    for profile in ("spinnaker", "spinnaker_exp"):
        compensated = simulate(net, x, 25, profile=profile, substeps=1, spinnaker_parts=("hard_reset",))
        assert _spike_steps(compensated) == list(range(4, 26, 2))
        assert compensated.metadata["spinnaker_arithmetic"]["populations"]["hidden"]["reset_compensation"][
            "mean_overshoot"] == 0.25
    assert _spike_steps(simulate(net, x, 25, profile="pynn")) == [4, 7, 9, 12, 15, 17, 20, 23, 25]  # ignores it


@pytest.mark.parametrize("profile, cell", [("spinnaker", DeltaCell), ("spinnaker_exp", ExpCell)])
def test_reset_value_with_leak_and_fixed_point_by_hand(profile, cell):
    """The whole profile (leak, S16.15) resetting to 0.3: the membrane recurrence of each cell written out, the
    reset value rounded to S16.15 (0.3 -> 9830 / 32768); with a reset to 0 the neuron fires at steps 5 and 9 of
    12, with the reset at 5, 8 and 11."""
    constants = cell.for_tau(1000.0)
    net = constant_current_network([0.3])
    net.populations["output"].metadata[SUMMED] = [1.0, 0.0]
    annotate_reset_compensation(net, {"hidden": 0.3}, "by hand")
    increment = float(round_s1615(0.3)) if cell is DeltaCell else constants.bias_gain * float(
        constants.offset_for(0.3))
    v, spikes = 0.0, []
    for t in range(12):
        v = float(round_s1615(constants.decay * v + (increment if t >= 1 else 0.0)))
        spikes.append(v >= 1.0)
        v = float(round_s1615(0.3)) if v >= 1.0 else v
    assert [t + 1 for t, s in enumerate(spikes) if s] == [5, 8, 11]
    assert _spike_steps(simulate(net, torch.tensor([[0.3]]), 12, profile=profile, substeps=1)) == [5, 8, 11]


def test_compensation_restores_the_rate_of_a_neuron_fed_by_large_rare_inputs():
    """Eight sources at rates 1/5 .. 1/12 (biases) drive one neuron through weights 0.45 .. 0.8 (threshold 1):
    inputs of a step are large against the threshold and the hard reset loses a third of the spikes (117 -> 78
    in 200 steps). The measured mean overshoot (0.59) as reset value brings the count back (118)."""
    net = large_rare_inputs_network()
    x, T = torch.zeros(1, 8), 200

    def count(**kwargs) -> float:
        return float(simulate(net, x, T, **kwargs).spike_counts[0, :, 2].sum())

    reference = count(profile="pynn")
    lost = reference - count(profile="spinnaker", substeps=1, spinnaker_parts=("hard_reset",))
    compensate_hard_reset(net, x, "analog")
    assert 0.0 < net.populations["target"].metadata[METADATA_KEY]["mean_overshoot"] < 1.0
    remaining = reference - count(profile="spinnaker", substeps=1, spinnaker_parts=("hard_reset",))
    assert lost > 0.2 * reference and abs(remaining) < 0.25 * lost


def _pool_network(threshold: float = 1.0, bias: float | None = None) -> Network:
    net = Network()
    net.add_population(Population("input", (1, 4, 4), "input"))
    net.add_population(Population("hidden", (1, 4, 4), "hidden", NeuronSpec(threshold=threshold)))
    net.add_population(Population("pool", (1, 2, 2), "hidden", NeuronSpec(), bias=bias))
    net.add_population(Population("output", (1, 2, 2), "output", NeuronSpec()))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "pool", [AvgPool2d((2, 2), (2, 2))])
    net.connect("pool", "output", [Identity()])
    return net.validate()


def test_lattice_of_a_pooling_population():
    """A 2 x 2 average pool of spikes of amplitude theta moves its membrane in steps of theta / 4; a bias or
    weights of its own (or an analog input) leave no lattice."""
    assert lattice_step(_pool_network(), "pool") == 0.25
    assert lattice_step(_pool_network(threshold=0.5), "pool") == 0.125
    assert lattice_step(_pool_network(bias=np.full(1, 0.1)), "pool") == 0.0
    assert lattice_step(_pool_network(), "hidden") == 0.0


def test_lattice_reset_values_by_hand():
    """Mean overshoot 0.125 on the lattice 0.25 (threshold 1: 4 steps from 0): every second neuron saves one
    step, reset in the middle of [0.25, 0.5), the values that save one, the others in the middle of [0, 0.25);
    threshold 0.9 (3.6 steps): resets in [0, 0.15) save none, in [0.15, 0.4) one. Overshoot 0.3: p = 1.2, one
    neuron in five saves two."""
    np.testing.assert_allclose(lattice_values(0.125, 0.25, np.ones(4)), [0.125, 0.375, 0.125, 0.375])
    np.testing.assert_allclose(lattice_values(0.125, 0.25, np.full(2, 0.9)), [0.025, 0.275])
    np.testing.assert_allclose(lattice_values(0.3, 0.25, np.ones(5)), [0.375, 0.375, 0.375, 0.375, 0.625])
    net = _pool_network()
    annotate_reset_compensation(net, {"pool": 0.125, "hidden": 0.2}, "by hand")
    assert net.populations["pool"].metadata[METADATA_KEY]["lattice_step"] == 0.25
    np.testing.assert_allclose(v_reset(net, "pool"), [0.125, 0.375, 0.125, 0.375])
    np.testing.assert_allclose(v_reset(net, "hidden"), np.full(16, 0.2))


def test_lowering_carries_the_reset_values_and_subtract_reset_is_the_only_one_compensated():
    net = constant_current_network([0.3, 0.6])
    assert not lower_network(net).populations[0].v_reset.any()
    annotate_reset_compensation(net, {"hidden": 0.2}, "by hand")
    np.testing.assert_array_equal(lower_network(net).populations[0].v_reset, [0.2, 0.2])
    zero = constant_current_network([0.3], reset="zero")
    annotate_reset_compensation(zero, {"hidden": 0.2}, "by hand")
    assert METADATA_KEY not in zero.populations["hidden"].metadata
