"""The gpu backend on CUDA against itself on CPU. Runs only where PyTorch sees a CUDA GPU (skipped on CPU
machines, CI included); ``benchmarks/cuda_vs_cpu.py`` compares trained MNIST networks the same way.

The network's weights, biases and inputs are multiples of 2^-6 (small enough that every sum a
projection forms is exact in float32), so summation order cannot matter and the two devices must agree
spike for spike in every profile. The analytic neuron tests run on CUDA with
``NEURODEPLOY_TEST_DEVICE=cuda python -m pytest tests/test_neurons_analytic.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from neurodeploy.backends import ExitPolicy, RunOptions, get_backend
from neurodeploy.backends.gpu import PROFILES, GpuBackend
from neurodeploy.convert import convert

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

STEP = 2.0**-6


def _dyadic(array: np.ndarray) -> np.ndarray:
    return (np.round(array / STEP) * STEP).astype(np.float32)


@pytest.fixture(scope="module")
def network():
    """A conv net (conv, average pool, dense) with dyadic weights and biases, and 64 dyadic items."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 5)).eval()
    x = torch.round(torch.rand(64, 1, 12, 12) / STEP) * STEP
    net = convert(model, x, normalization="max", v_init="half")
    for projection in net.projections:
        projection.ops = [dataclasses.replace(op, weight=_dyadic(op.weight)) if op.weighted else op
                          for op in projection.ops]
    for population in net.populations.values():
        if population.bias is not None:
            population.bias = _dyadic(population.bias)
    return net, x, torch.arange(64) % 5


def _run(net, x, labels, device, profile="ideal", **options):
    backend = get_backend("gpu", device=device, profile=profile)
    prepared = backend.prepare(net, x)
    return backend.run(prepared, x, labels, RunOptions(T=40, batch_size=32, progress=False, **options))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_cuda_equals_cpu_spike_for_spike(network, profile):
    net, x, labels = network
    cpu = _run(net, x, labels, "cpu", profile, record_neuron_counts=True)
    cuda = _run(net, x, labels, "cuda", profile, record_neuron_counts=True)
    assert cuda.metadata["device"].startswith("cuda") and cpu.spike_counts.sum() > 0
    np.testing.assert_array_equal(cuda.neuron_counts, cpu.neuron_counts)
    np.testing.assert_array_equal(cuda.spike_counts, cpu.spike_counts)
    np.testing.assert_array_equal(cuda.synaptic_events, cpu.synaptic_events)
    np.testing.assert_array_equal(cuda.readout, cpu.readout)


def test_cuda_early_exit_stops_where_cpu_does(network):
    net, x, labels = network
    policy = ExitPolicy.from_confidence(alpha=1.0, confidence=0.9)
    cpu = _run(net, x, labels, "cpu", exit_policy=policy)
    cuda = _run(net, x, labels, "cuda", exit_policy=policy)
    assert 0 < (cpu.stop_times < 40).sum() < len(labels)  # some items stop early, not all
    np.testing.assert_array_equal(cuda.stop_times, cpu.stop_times)


def test_cuda_anytime_simulator_equals_cpu(network):
    net, x, labels = network
    cpu = GpuBackend(device="cpu").anytime_simulator(net, x, labels, 40).curves(net)
    cuda = GpuBackend(device="cuda").anytime_simulator(net, x, labels, 40).curves(net)
    for a, b in zip(cpu, cuda, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cuda_is_the_default_device():
    assert GpuBackend().device.type == "cuda"
