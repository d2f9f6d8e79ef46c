"""NEURON through PyNN with the exact NL-IAF cell, against the reference simulator's pynn profile.

These run the real NEURON simulator (installed with the `neuron` extra); they are skipped, with the
reason, only where PyNN or NEURON is not installed.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("pyNN", reason="the neuron extra (PyNN + NEURON) is not installed")
pytest.importorskip("neuron", reason="the neuron extra (PyNN + NEURON) is not installed")

from conftest import constant_current_network  # noqa: E402

from neurodeploy.backends import RunOptions, get_backend  # noqa: E402
from neurodeploy.backends.pynn import lower_network  # noqa: E402
from neurodeploy.convert import convert  # noqa: E402
from neurodeploy.errors import BackendError, ConfigError  # noqa: E402
from neurodeploy.ir import Identity, Network, NeuronSpec, Population  # noqa: E402

pytestmark = pytest.mark.slow


def _compare(net, x, T, workers=2, labels=None):
    labels = torch.zeros(len(x), dtype=torch.long) if labels is None else labels
    options = RunOptions(T=T, batch_size=len(x), progress=False, record_neuron_counts=True)
    reference = get_backend("gpu", device="cpu", profile="pynn").run(net, x, labels, options)
    neuron = get_backend("neuron", workers=workers).run(net, x, labels, options)
    return reference, neuron


def test_dense_net_spike_for_spike():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(),
                          nn.Linear(16, 4)).eval()
    x = torch.rand(8, 20)
    net = convert(model, x, normalization="max", v_init="uniform", seed=3)
    reference, neuron = _compare(net, x, 30)
    assert neuron.spike_counts.sum() > 100
    np.testing.assert_array_equal(neuron.spike_counts, reference.spike_counts)
    np.testing.assert_array_equal(neuron.neuron_counts, reference.neuron_counts)
    np.testing.assert_array_equal(neuron.synaptic_events, reference.synaptic_events)
    np.testing.assert_allclose(neuron.readout, reference.readout, atol=1e-4)
    np.testing.assert_array_equal(neuron.predictions(), reference.predictions())
    assert neuron.metadata["pipeline_delay"] == reference.metadata["pipeline_delay"] == 3


def test_conv_net_with_pooling_and_zero_reset():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 2 * 2, 3)).eval()
    x = torch.rand(4, 1, 8, 8)
    net = convert(model, x, reset="zero")
    reference, neuron = _compare(net, x, 25)
    agree = (neuron.spike_counts.sum(1) == reference.spike_counts.sum(1)).mean()
    assert agree == 1.0
    np.testing.assert_array_equal(neuron.predictions(), reference.predictions())


def test_conv_mnist_architecture_neuron_by_neuron(mnist):
    """The conv MNIST layer structure (conv, conv, avgpool, conv, conv, avgpool, FC, FC) at 1/8 of its
    channel widths (617k synapses; the full width unrolls to 28 M, beyond a CI worker's memory in
    PyNN), trained one epoch: at least 99.9% of neurons spike as often as in the reference
    simulator's pynn profile, and every step's prediction is the same."""
    from neurodeploy.data import Split
    from neurodeploy.evaluate.compare import neuron_count_agreement
    from neurodeploy.train import TrainConfig, train_model
    from neurodeploy.train.zoo import conv_mnist

    torch.manual_seed(0)
    model = conv_mnist(channels=(4, 8))
    train_model(model, Split(mnist.train.images[:2000], mnist.train.labels[:2000]), TrainConfig(epochs=1, seed=0),
                progress=False)
    net = convert(model.eval(), mnist.train.images[:200])
    reference, neuron = _compare(net, mnist.test.images[:2], 40, labels=mnist.test.labels[:2])
    agreement = neuron_count_agreement(reference, neuron)
    assert reference.neuron_counts.sum() > 10_000
    assert agreement["all"]["equal_fraction"] >= 0.999, agreement
    np.testing.assert_array_equal(neuron.predictions(), reference.predictions())


def test_constant_current_analytic():
    """One neuron per current, theta = 1, subtract reset: floor(t I) spikes by step t, arriving at the
    output one step later (PyNN delay)."""
    currents = [0.125, 0.25, 0.5, 0.75]
    net = constant_current_network(currents)
    result = get_backend("neuron", workers=1).run(net, torch.tensor([currents]), torch.zeros(1, dtype=torch.long),
                                                  RunOptions(T=24, progress=False))
    t = np.arange(1, 25)[:, None]
    # the input current arrives at step 2 and spikes reach the output one step after they happen
    np.testing.assert_array_equal(result.readout[0], np.floor(np.maximum(t - 2, 0) * np.array(currents)))


def test_standard_profile_weight_scale_by_hand():
    """NEURON holds w exp(-n dt / tau) over each dt: one event delivers w dt / (1 - exp(-dt / tau)); with
    dt = tau = 0.1 ms and cm = 1 nF a unit membrane step needs w = 10 (1 - 1/e) nA."""
    from neurodeploy.backends.neuron.worker import standard_weight_scale

    assert standard_weight_scale() == pytest.approx(10 * (1 - np.exp(-1)))
    assert standard_weight_scale(dt=0.01, tau_syn=5.0) == pytest.approx(1 / 5.0, rel=1e-3)  # -> cm / tau_syn


def test_standard_profile_constant_current():
    """PyNN's IF_curr_exp with i_offset c (from t = 0), hard reset to 0 and dt = 0.1 ms: it first
    reaches theta = 1 at 1/c and then every 1/c + dt (the reset costs one dt), so a run of T ms holds
    1 + floor((T - 1/c) / (1/c + dt)) spikes; the output (unit weights) counts them to within 1e-3."""
    currents = [0.125, 0.25, 0.5, 1.0]
    T = 40
    net = constant_current_network(currents)
    result = get_backend("neuron", workers=1, profile="standard").run(
        net, torch.tensor([currents]), torch.zeros(1, dtype=torch.long),
        RunOptions(T=T, progress=False, record_neuron_counts=True))
    period = 1 / np.array(currents)
    expected = 1 + np.floor((T - period) / (period + 0.1))
    np.testing.assert_array_equal(result.population_neuron_counts()["hidden"][0], expected)
    arrived = result.spike_counts[0, :, 1].cumsum()[T - 3]  # spikes by step T - 2 have reached the output
    assert abs(result.readout[0, -1].sum() - arrived) < 1e-3 * arrived + result.spike_counts[0, -2:, 1].sum()
    assert result.metadata["profile"] == "standard"


def test_what_the_cell_cannot_do_is_refused():
    net = Network()
    net.add_population(Population("input", (2,), "input"))
    net.add_population(Population("h", (2,), "hidden", NeuronSpec(spike_cap=3, negative_spikes=True)))
    net.add_population(Population("output", (2,), "output", NeuronSpec()))
    net.connect("input", "h", [Identity()])
    net.connect("h", "output", [Identity()])
    with pytest.raises(BackendError, match=r"'h' has a spike cap \(--conversion qffs\).*use --conversion qcfs"):
        lower_network(net)
    net.populations["h"].neuron = NeuronSpec(negative_spikes=True)  # convert(..., negative_spikes=True)
    with pytest.raises(BackendError, match=r"'h' has negative spikes \(--negative-spikes;") as refusal:
        lower_network(net)
    assert "QFFS" not in str(refusal.value)
    with pytest.raises(BackendError, match="analog encoding"):
        lower_network(net, encoding="poisson")
    with pytest.raises(ConfigError, match="--profile 'fast' is not one of exact, standard"):
        get_backend("neuron", profile="fast")
