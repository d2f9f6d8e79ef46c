"""The gpu backend bounds one step of the items it simulates together (issue 27): a batch whose step does
not fit ``state_budget_mb`` runs in parts, each seeded as a batch of its own, so the result equals a run
with that batch size (and, with analog input, the unsplit run)."""

import numpy as np
import pytest
import torch
from torch import nn

from neurodeploy.backends.base import RunOptions
from neurodeploy.backends.gpu import GpuBackend
from neurodeploy.backends.gpu.compiled import compile_network
from neurodeploy.backends.gpu.engine import batch_part
from neurodeploy.convert import convert

FIELDS = ("readout", "spike_counts", "synaptic_events", "neuron_counts")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    return convert(model, torch.rand(16, 1, 8, 8))


def test_part_size_from_the_budget(net):
    """64 input + 256 conv + 3 output neurons, 3 float32 values each: 3,876 bytes per item and step."""
    compiled = compile_network(net, torch.device("cpu"))
    assert batch_part(compiled, 3 * 3876) == 3
    assert batch_part(compiled, 3 * 3876 - 1) == 2
    assert batch_part(compiled, 1) == 1


@pytest.mark.parametrize("encoding", ["analog", "poisson"])
def test_parts_equal_batches_of_that_size(net, encoding):
    x, y = torch.rand(10, 1, 8, 8), torch.zeros(10, dtype=torch.long)

    def run(batch_size, **options):
        return GpuBackend(device="cpu", **options).run(net, x, y, RunOptions(
            T=12, batch_size=batch_size, encoding=encoding, progress=False, record_neuron_counts=True))

    whole, parts, batches = run(10), run(10, state_budget_mb=3 * 3876 / 2**20), run(3)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(parts, name), getattr(batches, name))
        if encoding == "analog":
            np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))
