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
from neurodeploy.errors import BackendError  # noqa: E402
from neurodeploy.ir import Identity, Network, NeuronSpec, Population  # noqa: E402

pytestmark = pytest.mark.slow


def _compare(net, x, T, workers=2):
    labels = torch.zeros(len(x), dtype=torch.long)
    options = RunOptions(T=T, batch_size=len(x), progress=False)
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


def test_what_the_cell_cannot_do_is_refused():
    net = Network()
    net.add_population(Population("input", (2,), "input"))
    net.add_population(Population("h", (2,), "hidden", NeuronSpec(spike_cap=3, negative_spikes=True)))
    net.add_population(Population("output", (2,), "output", NeuronSpec()))
    net.connect("input", "h", [Identity()])
    net.connect("h", "output", [Identity()])
    with pytest.raises(BackendError, match="spike caps .QFFS., negative spikes .QFFS."):
        lower_network(net)
    with pytest.raises(BackendError, match="analog encoding"):
        lower_network(net, encoding="poisson")
