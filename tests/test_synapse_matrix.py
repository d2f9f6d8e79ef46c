"""The explicit synapse matrix of a projection built from each op's parameters (``passes.synapse_matrix``):
hand-computed entries, and the same matrix, bit for bit, as the one-hot construction it replaces (which the
board lowering and the spinnaker profile used, so their weights, ring buffers and spikes stay the same)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from one_hot_columns import chain_columns

from neurodeploy.ir.network import Projection
from neurodeploy.ir.op_matrix import op_matrix
from neurodeploy.ir.ops import (
    AvgPool1d,
    AvgPool2d,
    ChannelSlice,
    Conv1d,
    Conv2d,
    Dense,
    Flatten,
    Gather,
    Identity,
    Scale,
    SpatialLinear,
)
from neurodeploy.ir.torch_ops import compile_chain
from neurodeploy.passes.synapse_matrix import synapse_matrix


def columns_matrix(projection, source_shape, amplitude=None):
    """The construction ``synapse_matrix`` replaced: the chain on one-hot inputs (float64), columns times the
    amplitude."""
    n_source = int(np.prod(source_shape))
    rows, cols, values = [], [], []
    for start, columns in chain_columns(compile_chain(projection.ops, dtype=torch.float64), source_shape):
        columns = columns.numpy()
        j, i = np.nonzero(columns)
        rows.append(i)
        cols.append(j + start)
        values.append(columns[j, i] * (1.0 if amplitude is None else amplitude[j + start]))
    n_target = int(np.prod(compile_chain(projection.ops, dtype=torch.float64)(
        torch.zeros((1, *source_shape), dtype=torch.float64)).shape[1:]))
    return sp.coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_target, n_source)).tocsc()


def _weights(rng, *shape):
    w = rng.normal(size=shape).astype(np.float32)
    w[rng.random(shape) < 0.2] = 0.0  # zero weights are no synapses
    return w


def test_strided_padded_conv_by_hand():
    # 1 input channel 3 x 3, one 2 x 2 kernel [[1, 2], [3, 4]], stride 2, padding 1: output 2 x 2; output (0, 0)
    # sees only input (0, 0) through the kernel's bottom-right weight 4; output (1, 1) sees inputs (1, 1), (1, 2),
    # (2, 1), (2, 2) through 1, 2, 3, 4
    op = Conv2d(np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32), stride=2, padding=1)
    matrix = synapse_matrix(Projection("a", "b", [op]), (1, 3, 3), amplitude=np.full(9, 0.5)).toarray()
    expected = np.zeros((4, 9))
    expected[0, 0] = 4
    expected[1, [1, 2]] = [3, 4]
    expected[2, [3, 6]] = [2, 4]
    expected[3, [4, 5, 7, 8]] = [1, 2, 3, 4]
    np.testing.assert_array_equal(matrix, expected * 0.5)


CHAINS = {
    "conv grouped dilated": ((4, 7, 6), [Conv2d(_weights(np.random.default_rng(0), 6, 2, 3, 2), stride=(2, 1),
                                                padding=(1, 2), dilation=(2, 1), groups=2)]),
    "conv1d": ((4, 9), [Conv1d(_weights(np.random.default_rng(1), 2, 2, 3), stride=2, padding=1, groups=2)]),
    "avgpool2d padded": ((2, 5, 5), [AvgPool2d((3, 2), (2, 2), (1, 1))]),
    "avgpool1d": ((3, 7), [AvgPool1d(3, 2, 1)]),
    "flatten dense": ((2, 2, 3), [Flatten(), Dense(_weights(np.random.default_rng(2), 5, 12))]),
    "scale per channel": ((3, 2, 2), [Scale(np.array([0.5, -2.0, 3.0], np.float32))]),
    "scale scalar, identity": ((6,), [Identity(), Scale(np.array(1.5, np.float32))]),
    "channel slice": ((2, 3), [ChannelSlice(offset=1, channels=4)]),
    "gather": ((2, 3), [Gather(np.array([[5, -1, 0], [2, 2, 1]]))]),
    "spatial linear": ((2, 3, 4), [SpatialLinear(np.random.default_rng(3).random((2, 3)),
                                                 np.random.default_rng(4).random((3, 4)))]),
    "spatial linear 1-d": ((2, 5), [SpatialLinear(np.random.default_rng(5).random((3, 5)))]),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_one_op_bit_for_bit_as_one_hot(name):
    shape, ops = CHAINS[name]
    amplitude = np.random.default_rng(6).uniform(0.5, 2.0, int(np.prod(shape)))
    fast = synapse_matrix(Projection("a", "b", ops), shape, amplitude)
    slow = columns_matrix(Projection("a", "b", ops), shape, amplitude)
    fast.sort_indices()
    slow.sort_indices()
    assert fast.shape == slow.shape and fast.nnz == slow.nnz > 0
    np.testing.assert_array_equal(fast.indptr, slow.indptr)
    np.testing.assert_array_equal(fast.indices, slow.indices)
    np.testing.assert_array_equal(fast.data, slow.data)


def test_chain_of_ops_agrees_with_one_hot():
    rng = np.random.default_rng(7)
    ops = [AvgPool2d((2, 2), (1, 1)), Conv2d(_weights(rng, 3, 2, 2, 2), padding=1), Flatten(),
           Dense(_weights(rng, 4, 48))]
    fast = synapse_matrix(Projection("a", "b", ops), (2, 4, 4)).toarray()
    slow = columns_matrix(Projection("a", "b", ops), (2, 4, 4)).toarray()
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-15)


def test_reshaping_ops_have_no_matrix():
    assert op_matrix(Flatten(), (2, 3)) is None and op_matrix(Identity(), (6,)) is None
