"""Exact streamed percentiles against numpy on the concatenated data."""

import numpy as np
import pytest
import torch

from neurodeploy.convert.statistics import activation_scales


def _stream(arrays):
    return lambda: ({"layer": torch.from_numpy(a)} for a in arrays)


@pytest.mark.parametrize("method, p", [("max", 100.0), ("percentile", 99.9), ("percentile", 50.0),
                                       ("percentile_all", 99.0), ("percentile_all", 37.5), ("percentile", 0.0)])
@pytest.mark.parametrize("granularity", ["layer", "neuron"])
def test_matches_numpy(method, p, granularity):
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(5):
        x = np.maximum(rng.normal(0, 1, size=(40, 3, 5, 5)), 0)  # ReLU output: many exact zeros
        x[:, 1] = np.round(x[:, 1], 1)  # ties
        batches.append(x)
    scales, zeros = activation_scales(_stream(batches), method, p, granularity)
    data = np.concatenate(batches)
    groups = [data.reshape(-1)] if granularity == "layer" else [data[:, c].reshape(-1) for c in range(3)]
    for g, values in enumerate(groups):
        if method == "percentile":
            values = values[values > 0]
        expected = np.percentile(values, p)
        assert scales["layer"][g] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert zeros["layer"] == (int((data == 0).sum()), data.size)


def test_more_than_2_pow_24_elements():
    """torch.quantile refuses inputs this large; the streamed computation is exact."""
    rng = np.random.default_rng(1)
    batches = [rng.exponential(size=(1 << 22,)).astype(np.float32)[:, None] for _ in range(5)]
    scales, _ = activation_scales(_stream(batches), "percentile", 99.9, "layer")
    data = np.concatenate(batches).astype(np.float64).reshape(-1)
    assert data.size > 2**24
    assert scales["layer"][0] == pytest.approx(np.percentile(data, 99.9), rel=1e-12)


def test_all_zero_group_gives_zero_scale():
    scales, _ = activation_scales(_stream([np.zeros((4, 2))]), "percentile", 99.9, "neuron")
    assert list(scales["layer"]) == [0.0, 0.0]
