"""Calibrated initial membranes (``neurodeploy.convert.membrane``; docs/semantics.md, "Calibrated initial
membrane"): hand-computed choices on a one-neuron network, and the converter's option end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from neurodeploy.convert import convert
from neurodeploy.convert.membrane import FRACTIONS, calibrate_initial_membrane
from neurodeploy.errors import ConfigError
from neurodeploy.ir import Dense, Identity, Network, NeuronSpec, Population
from neurodeploy.ir.io import load_network, save_network
from neurodeploy.train.quantized import calibrate_steps, quantize_activations


def one_neuron_network(class_one_bias: float) -> Network:
    """input (1,) -> hidden (1,), theta 1, by identity -> output (2,): O_0(t) = the hidden neuron's spikes so far,
    O_1(t) = t * class_one_bias."""
    net = Network()
    net.add_population(Population("input", (1,), "input"))
    net.add_population(Population("hidden", (1,), "hidden", NeuronSpec(threshold=1.0, v_init="half")))
    net.add_population(Population("output", (2,), "output", NeuronSpec(readout="membrane"),
                                  bias=np.array([0.0, class_one_bias], np.float32)))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "output", [Dense(np.array([[1.0], [0.0]], np.float32))])
    return net.validate()


def test_the_fraction_that_agrees_with_the_ann_is_chosen():
    """Current 0.3 for T = 3 steps: the neuron fires once when f + 0.9 >= 1, i.e. for every fraction f >= 0.125,
    and never for f = 0. With O_1(3) = 0.5 the SNN predicts class 0 after one spike and class 1 after none; the ANN
    says class 1, so f = 0 is the only fraction that agrees."""
    net = one_neuron_network(0.5 / 3)
    choice = calibrate_initial_membrane(net, torch.tensor([[0.3]]), np.array([[0.0, 1.0]]), T=3)
    assert choice["fractions"] == {"hidden": 0.0}
    assert choice["agreement_before"] == 0.0 and choice["agreement"] == 1.0
    np.testing.assert_array_equal(net.populations["hidden"].neuron.v_init, 0.0)


def test_equal_agreement_is_decided_by_the_readout_rate_error():
    """Current 0.3, T = 3, O_1(3) = -1: class 0 wins with one spike or none, so every fraction agrees with the ANN.
    With logits [0, -1/3] the rate O(3) / 3 is [0, -1/3] (error 0) after no spike (f = 0) and [1/3, -1/3]
    (mean squared error 1/18) after one (f >= 1/8): f = 0 is chosen."""
    net = one_neuron_network(-1.0 / 3)
    choice = calibrate_initial_membrane(net, torch.tensor([[0.3]]), np.array([[0.0, -1.0 / 3]]), T=3)
    assert choice["fractions"] == {"hidden": 0.0} and choice["agreement"] == choice["agreement_before"] == 1.0


def test_half_stays_where_no_fraction_is_better():
    """Current 0.3 for T = 4: every fraction in FRACTIONS gives exactly one spike (f + 1.2 >= 1 and f + 1.2 < 2),
    so every candidate has the same agreement and error, and theta / 2 is kept."""
    net = one_neuron_network(0.1)
    choice = calibrate_initial_membrane(net, torch.tensor([[0.3]]), np.array([[1.0, 0.0]]), T=4)
    assert choice["fractions"] == {"hidden": 0.5} and choice["agreement"] == choice["agreement_before"] == 1.0
    np.testing.assert_allclose(net.populations["hidden"].neuron.v_init, 0.5)


def _quantized_deep_model() -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = 6
    for _ in range(4):
        layers += [nn.Linear(width, 12), nn.ReLU()]
        width = 12
    model = quantize_activations(nn.Sequential(*layers, nn.Linear(12, 4)), 2)
    calibrate_steps(model, torch.rand(256, 6))
    return model.eval()


def test_converter_calibrates_on_calibration_items_and_the_choice_travels_with_the_ir(tmp_path):
    model = _quantized_deep_model()
    x = torch.rand(120, 6)
    net = convert(model, x, conversion="qcfs", v_init="calibrated", T=6, choice_items=50)
    choice = net.metadata["v_init_calibration"]
    assert choice["items"] == 50 and choice["T"] == 6
    assert choice["agreement"] >= choice["agreement_before"]
    hidden = [p for p in net.populations.values() if p.role == "hidden"]
    assert sorted(choice["fractions"]) == sorted(p.name for p in hidden)
    for population in hidden:
        fraction = choice["fractions"][population.name]
        assert fraction in FRACTIONS
        np.testing.assert_allclose(population.neuron.v_init, fraction * np.asarray(population.neuron.threshold))
    save_network(net, tmp_path / "net.zip")
    loaded = load_network(tmp_path / "net.zip")
    for population in hidden:
        np.testing.assert_allclose(loaded.populations[population.name].neuron.v_init, population.neuron.v_init)


def test_calibrated_needs_T_and_qcfs_takes_only_half_or_calibrated():
    model = _quantized_deep_model()
    x = torch.rand(20, 6)
    with pytest.raises(ConfigError, match="v_init='calibrated' needs T"):
        convert(model, x, conversion="qcfs", v_init="calibrated")
    with pytest.raises(ConfigError, match="must be 'half' or 'calibrated', not 'zero'"):
        convert(model, x, conversion="qcfs", v_init="zero")
    assert all(p.neuron.v_init == "half" for p in convert(model, x, conversion="qcfs").populations.values()
               if p.role == "hidden")


def test_the_optimizer_starts_from_the_calibrated_fractions():
    """--optimize after --v-init calibrated: phase 2's initial-membrane search starts where the calibration ended."""
    from neurodeploy.optimize.parameters import ScaleSpace

    net = one_neuron_network(0.5 / 3)
    calibrate_initial_membrane(net, torch.tensor([[0.3]]), np.array([[0.0, 1.0]]), T=3)
    space = ScaleSpace.of(net, v_init=True)
    np.testing.assert_array_equal(space.start(net), [0.0, 0.0])  # log scale factor 0, then v0 / theta = 0
    net.populations["hidden"].neuron.v_init = np.array([0.25], np.float32)
    net.populations["hidden"].neuron.threshold = 2.0
    assert space.start(net)[-1] == pytest.approx(0.125)
