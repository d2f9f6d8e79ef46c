"""Shared fixtures: small networks built by hand and a quickly trained dense MNIST model."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.data import load_dataset
from neurodeploy.ir import Dense, Identity, Network, NeuronSpec, Population


def constant_current_network(currents, v_init="zero", reset="subtract", threshold=1.0) -> Network:
    """Input (n,) -> hidden (n,) by identity -> output (n,) by identity: hidden neuron i receives the
    analog input x_i as a constant current every step."""
    n = len(currents)
    net = Network()
    net.add_population(Population("input", (n,), "input"))
    net.add_population(Population("hidden", (n,), "hidden",
                                  NeuronSpec(threshold=threshold, reset=reset, v_init=v_init, v_init_seed=3)))
    net.add_population(Population("output", (n,), "output", NeuronSpec(readout="membrane")))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "output", [Dense(np.eye(n, dtype=np.float32))])
    return net.validate()


#: the device the analytic tests simulate on (``NEURODEPLOY_TEST_DEVICE=cuda`` runs them on a GPU)
TEST_DEVICE = os.environ.get("NEURODEPLOY_TEST_DEVICE", "cpu")


def large_rare_inputs_network() -> Network:
    """Eight sources at rates 1/5 .. 1/12 per step (biases) drive one neuron, ``target``, through weights 0.45 .. 0.8
    (threshold 1): a step's input is large against the threshold, so a hard reset loses much of the overshoot.
    Input ``(8,)`` (unused: zero weights), output one neuron fed by ``target``."""
    net = Network()
    net.add_population(Population("input", (8,), "input"))
    net.add_population(Population("sources", (8,), "hidden", NeuronSpec(), bias=1.0 / np.arange(5, 13)))
    net.add_population(Population("target", (1,), "hidden", NeuronSpec()))
    net.add_population(Population("output", (1,), "output", NeuronSpec()))
    net.connect("input", "sources", [Dense(np.zeros((8, 8), np.float32))])
    net.connect("sources", "target", [Dense(np.linspace(0.45, 0.8, 8, dtype=np.float32)[None])])
    net.connect("target", "output", [Dense(np.ones((1, 1), np.float32))])
    return net.validate()


def simulate(net: Network, x: torch.Tensor, T: int, **backend_kwargs):
    options = RunOptions(T=T, batch_size=max(len(x), 1), progress=False,
                         encoding=backend_kwargs.pop("encoding", "analog"))
    labels = torch.zeros(len(x), dtype=torch.long)
    return get_backend("gpu", device=TEST_DEVICE, **backend_kwargs).run(net, x, labels, options)


@pytest.fixture(scope="session", autouse=True)
def model_cache_in_tmp(tmp_path_factory):
    """Every test's model cache is a per-session tmp folder, never the user's cache folder."""
    import os

    before = os.environ.get("NEURODEPLOY_CACHE")
    os.environ["NEURODEPLOY_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if before is None:
        os.environ.pop("NEURODEPLOY_CACHE", None)
    else:
        os.environ["NEURODEPLOY_CACHE"] = before


@pytest.fixture(scope="session")
def mnist():
    return load_dataset()


@pytest.fixture(scope="session")
def small_dense_model(mnist):
    """dense_mnist (hidden 64) trained 3 epochs on 4,000 embedded digits (a few seconds)."""
    from neurodeploy.data import Split
    from neurodeploy.train import TrainConfig, train_model
    from neurodeploy.train.zoo import dense_mnist

    torch.manual_seed(0)
    model = dense_mnist(hidden=64)
    train_model(model, Split(mnist.train.images[:4000], mnist.train.labels[:4000]),
                TrainConfig(epochs=3, seed=0), progress=False)
    return model
