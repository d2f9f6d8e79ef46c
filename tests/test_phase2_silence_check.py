"""Phase 2's silenced channels and its held-out check: the silence order, the space and the disconnected
network by hand, the check's choice recomputed from its measurements."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodeploy.backends.gpu import GpuBackend
from neurodeploy.data.datasets import Split
from neurodeploy.ir import Dense, Network, NeuronSpec, Population
from neurodeploy.optimize import OptimizeConfig, ScaleSpace, optimize_scales
from neurodeploy.optimize.budget import compare_paired
from neurodeploy.optimize.check import HeldOutCheck, choose_checked
from neurodeploy.optimize.parameters import MAX_SILENCED
from neurodeploy.optimize.silence import SILENT_THRESHOLD, channel_effects, disconnect_silenced, silence_order
from neurodeploy.train import evaluate_accuracy
from neurodeploy.train.sparsity import correct_flags
from neurodeploy.train.trainer import split_validation

#: hidden h0 = x0, h1 = x1, h2 = (x0 + x1) / 2, h3 = x0 / 10; out0 = h0 + h2 / 10 + h3 / 100, out1 = h1 + h2 / 10
W1 = np.array([[1, 0], [0, 1], [0.5, 0.5], [0.1, 0]], np.float32)
W2 = np.array([[1, 0, 0.1, 0.01], [0, 1, 0.1, 0]], np.float32)
#: predictions 0, 1, 0; rates h0 (0.9, 0.3, 0.6), h1 (0.2, 0.8, 0.5), h2 0.55 each, h3 (0.09, 0.03, 0.06)
ITEMS = torch.tensor([[0.9, 0.2], [0.3, 0.8], [0.6, 0.5]])


def hand_network(bias=None) -> Network:
    net = Network()
    net.add_population(Population("input", (2,), "input"))
    net.add_population(Population("hidden", (4,), "hidden", NeuronSpec(threshold=1.0, v_init="half"), bias=bias))
    net.add_population(Population("output", (2,), "output", NeuronSpec(readout="membrane")))
    net.connect("input", "hidden", [Dense(W1)])
    net.connect("hidden", "output", [Dense(W2)])
    return net.validate()


def test_channel_effects_and_order_by_hand():
    """Silenced alone, h0 flips items 1 and 3 (out0 drops to 0.0559 and 0.0556 < out1), h1 flips item 2
    (out1 0.055 < 0.3553), h2 and h3 flip nothing. Events per step: mean rate x outgoing synapses: h0 0.6 x 1,
    h1 0.5 x 1, h2 0.55 x 2, h3 0.06 x 1. Order: no change first, the busiest first: h2, h3, then h1, h0."""
    network = hand_network()
    [(changed, events)] = channel_effects(network, ITEMS, ("hidden",))
    np.testing.assert_array_equal(changed, [2, 1, 0, 0])
    np.testing.assert_allclose(events, [0.6, 0.5, 1.1, 0.06], rtol=1e-6)
    assert silence_order(network, ITEMS, ("hidden",)) == ((2, 3, 1, 0),)


def test_space_silences_the_first_of_the_order():
    """Fraction f silences floor(f x 4) channels of the order; at most MAX_SILENCED; bounds [0, MAX_SILENCED]."""
    network = hand_network()
    space = ScaleSpace.of(network, v_init=True, silence=((2, 3, 1, 0),))
    assert space.size == 4 + 1 + 1 and space.silence_offset == 5
    z = np.array([0.1, -0.2, 0.3, 0.0, 0.5, 0.5])
    hidden = space.apply(network, z).populations["hidden"].neuron
    np.testing.assert_allclose(hidden.threshold, [np.exp(0.1), np.exp(-0.2), SILENT_THRESHOLD, SILENT_THRESHOLD],
                               rtol=1e-6)
    np.testing.assert_allclose(hidden.v_init, 0.5 * hidden.threshold, rtol=1e-6)
    z[5] = 1.0  # clipped to 0.9: floor(3.6) = 3
    assert space.silenced(z)[0].tolist() == [2, 3, 1]
    z[5] = 0.24  # floor(0.96) = 0
    assert space.silenced(z)[0].tolist() == []
    lower, upper = space.bounds(8.0)
    assert lower[5] == 0.0 and upper[5] == MAX_SILENCED and upper[4] == 0.999
    with pytest.raises(Exception, match="every channel"):
        ScaleSpace.of(network, silence=((2, 3, 1),))


def test_disconnected_network_spikes_as_the_silent_thresholds():
    """The disconnected form (incoming weights and bias of silenced channels zero, thresholds back) gives the
    readout and the spikes of the SILENT_THRESHOLD form the search simulated."""
    network = hand_network(bias=np.array([0.01, 0.02, 0.03, 0.04], np.float32))
    space = ScaleSpace.of(network, v_init=True, silence=((2, 3, 1, 0),))
    z = np.array([0.1, -0.2, 0.3, 0.0, 0.5, 0.5])
    searched = space.apply(network, z)
    scaled = ScaleSpace.of(network, v_init=True).apply(network, z[:5])
    final = disconnect_silenced(searched, {"hidden": space.silenced(z)[0]},
                                {"hidden": scaled.populations["hidden"].neuron.threshold})
    hidden = final.populations["hidden"]
    np.testing.assert_allclose(hidden.neuron.threshold, scaled.populations["hidden"].neuron.threshold)
    np.testing.assert_allclose(hidden.neuron.v_init, scaled.populations["hidden"].neuron.v_init, rtol=1e-6)
    np.testing.assert_array_equal(final.projections[0].ops[0].weight[2:], 0.0)
    np.testing.assert_array_equal(final.projections[0].ops[0].weight[:2], W1[:2])
    np.testing.assert_array_equal(hidden.bias, np.float32([0.01, 0.02, 0.0, 0.0]))
    assert network.projections[0].ops[0].weight[2, 0] == 0.5  # the input network is untouched
    labels = torch.tensor([0, 1, 0])
    backend = GpuBackend(device="cpu")
    a = backend.anytime_simulator(searched, ITEMS, labels, 20).totals(searched)
    b = backend.anytime_simulator(final, ITEMS, labels, 20).totals(final)
    np.testing.assert_array_equal(a[0], b[0])
    assert (b[1] <= a[1]).all()  # the zeroed incoming synapses carry no events any more


@pytest.fixture(scope="module")
def check_setup(small_dense_model, mnist):
    from neurodeploy.convert import convert

    network = convert(small_dense_model, mnist.train.images[:500], granularity="neuron", v_init="half")
    _, val = split_validation(mnist.train, 0.1, 0)
    items, held = val.head(150), Split(val.images[150:400], val.labels[150:400])
    return network, items, held


def test_check_chooses_the_best_on_its_items(check_setup, small_dense_model):
    """The check simulates every candidate on its own items; its choice is the feasible one (paired interval
    against the ANN there not wholly below -budget) of least L_SNN with lambda_l, lambda_p = 1 / (H0's P_l,
    P_p) there, recomputed here from its measurements; the search returns that point."""
    network, items, held = check_setup
    backend = GpuBackend(device="cpu")
    reference = correct_flags(small_dense_model, held).numpy()
    check = HeldOutCheck(backend.anytime_simulator(network, held.images, held.labels, 20), reference,
                         evaluate_accuracy(small_dense_model, held))
    space = ScaleSpace.of(network, v_init=True)
    x0 = space.start(network)
    candidates = [x0, x0 + np.r_[np.full(space.n_scales, 0.4), np.zeros(2)],
                  x0 + np.r_[np.full(space.n_scales, -0.6), np.zeros(2)]]
    chosen, measured = choose_checked(check, network, space, candidates, 200.0, 0.005)
    assert len(measured) == 3
    loss = []
    for x, m in zip(candidates, measured, strict=True):
        correct, _ = check.simulator.item_curves(space.apply(network, x))
        peak = int(correct.mean(0).argmax())
        paired = compare_paired(correct[:, peak], reference, 0.005)
        assert m["paired"] == paired.as_dict() and m["feasible"] == paired.within_budget
        l_snn = 200 * (1 - m["peak_accuracy"]) + m["pareto_latency"] / measured[0]["pareto_latency"] \
            + m["pareto_power"] / measured[0]["pareto_power"]
        short = 0.0 if paired.within_budget else -0.005 - paired.upper
        assert m["loss"] == pytest.approx(l_snn + 1e4 * short)
        loss.append((short, l_snn))
    assert chosen == min(range(3), key=lambda i: loss[i])

    config = OptimizeConfig(max_evals=20, T=20, groups=(1, 2), evals_per_dimension=(4, 4), v_init=True,
                            silence=True, accuracy_budget=0.005)
    simulator = backend.anytime_simulator(network, items.images, items.labels, 20)
    _, result = optimize_scales(network, simulator, items.images, items.labels,
                                evaluate_accuracy(small_dense_model, items), config, progress=False,
                                reference_correct=correct_flags(small_dense_model, items).numpy(), check=check)
    points = result.check["points"]
    assert result.check["items"] == 250 and 2 <= len(points) <= 4
    ranks = [(0.0 if p["feasible"] else 1.0, p["loss"]) for p in points]
    assert result.check["chosen"] == min(range(len(points)), key=lambda i: (ranks[i][0], ranks[i][1], i)) or \
        not any(p["feasible"] for p in points)


def test_scale_factor_range_reads_the_scales_only(check_setup, small_dense_model):
    """summary's scale_factor_range is exp of the least and largest log scale factor, not of the initial
    membranes or silenced fractions that follow them in x."""
    network, items, _ = check_setup
    config = OptimizeConfig(max_evals=6, T=10, groups=(1,), evals_per_dimension=(1,), v_init=True, silence=True)
    simulator = GpuBackend(device="cpu").anytime_simulator(network, items.images, items.labels, 10)
    _, result = optimize_scales(network, simulator, items.images, items.labels,
                                evaluate_accuracy(small_dense_model, items), config, progress=False)
    space = ScaleSpace.of(network, v_init=True)
    scales = result.x[:space.n_scales]
    assert result.n_scales == space.n_scales and result.x.size == space.n_scales + 4
    assert result.as_dict()["scale_factor_range"] == [float(np.exp(scales.min())), float(np.exp(scales.max()))]
