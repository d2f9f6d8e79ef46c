"""``matrix_fan`` (the composed support map from each op's sparse matrix, ``neurodeploy.ir.op_matrix``) against the
one-hot count it replaced: the support chain applied to every source neuron alone (float64), and a hand count."""

import numpy as np
import pytest
import torch
from one_hot_columns import chain_columns

from neurodeploy.ir.connectivity import matrix_fan
from neurodeploy.ir.network import Projection
from neurodeploy.ir.ops import AvgPool2d, ChannelSlice, Conv2d, Dense, Flatten, Gather, Scale, SpatialLinear
from neurodeploy.ir.torch_ops import compile_chain


def _one_hot_fan(ops, shape):
    chain = compile_chain(ops, support=True, dtype=torch.float64)
    fan_out, fan_in = [], 0
    for _, columns in chain_columns(chain, shape):
        nonzero = (columns != 0).numpy()
        fan_out.append(nonzero.sum(1))
        fan_in = fan_in + nonzero.sum(0)
    return np.concatenate(fan_out), fan_in


def _sparse(rng, *shape):
    weight = rng.normal(size=shape).astype(np.float32)
    weight[rng.random(shape) < 0.4] = 0.0
    return weight


CHAINS = {
    "conv, overlapping pool, conv": ((2, 9, 9), lambda rng: [
        Conv2d(_sparse(rng, 3, 2, 3, 3), padding=1), AvgPool2d(3, 2), Conv2d(_sparse(rng, 2, 3, 2, 2))]),
    "scale with a zero, conv, slice, flatten, dense": ((2, 6, 6), lambda rng: [
        Scale(np.array([0.0, 1.5])), Conv2d(_sparse(rng, 3, 2, 3, 3), stride=2, padding=1), ChannelSlice(1, 5),
        Flatten(), Dense(_sparse(rng, 4, 45))]),
    "gather, spatial linear": ((2, 4, 4), lambda rng: [
        Gather(np.array([[[0, 5, -1], [31, 2, 2]]])), SpatialLinear(_sparse(rng, 3, 2), _sparse(rng, 2, 3))]),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_matrix_fan_equals_the_one_hot_count(name):
    shape, make = CHAINS[name]
    ops = make(np.random.default_rng(4))
    fan_out, fan_in = matrix_fan(Projection("a", "b", ops), shape)
    expected_out, expected_in = _one_hot_fan(ops, shape)
    assert fan_out.shape == shape and fan_in.sum() == fan_out.sum() > 0
    np.testing.assert_array_equal(fan_out.reshape(-1), expected_out)
    np.testing.assert_array_equal(fan_in.reshape(-1), expected_in.reshape(-1))


def test_opposite_paths_still_count_by_hand():
    """Dense [[1, 1]] then Dense [[1], [-1]]: the composed weights cancel to 0, but each source reaches both targets
    through non-zero weights (synapses exist): fan-out 2 each, fan-in 2 each."""
    ops = [Dense(np.array([[1.0, 1.0]], np.float32)), Dense(np.array([[1.0], [-1.0]], np.float32))]
    fan_out, fan_in = matrix_fan(Projection("a", "b", ops), (2,))
    np.testing.assert_array_equal(fan_out, [2, 2])
    np.testing.assert_array_equal(fan_in, [2, 2])
