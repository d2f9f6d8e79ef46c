"""A projection as an explicit sparse matrix: what machines with per-synapse memories store."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from neurodeploy.ir.network import Network, Projection
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
    Op,
    Scale,
    SpatialLinear,
)
from neurodeploy.ir.population import Population, per_neuron


def synapse_matrix(projection: Projection, source_shape: tuple[int, ...], amplitude: np.ndarray | None = None
                   ) -> sp.csc_matrix:
    """The composed linear map of the op chain (pooling, flatten, dense, convolution) as a sparse
    float64 matrix ``[n_target, n_source]`` (C order of both shapes, as ``reshape(-1)``), columns
    multiplied by the source's spike amplitude ``amplitude [n_source]`` (its threshold) when given; entries
    that are exactly 0 are left out. Each op's own matrix is built from its parameters (:func:`op_matrix`, time
    and memory linear in its synapses) and the chain's is their sparse product: the same matrix as the chain
    applied to one-hot inputs in float64 (quadratic in the population sizes, minutes on a ResNet), to the last
    bit where every entry is one product of weights (a chain with one weighted op and no overlapping pooling),
    else to rounding (the order of a sum's terms)."""
    matrix, shape = None, tuple(source_shape)
    for op in projection.ops:
        part = op_matrix(op, shape)
        shape = op.out_shape(shape)
        if part is not None:
            matrix = part if matrix is None else part @ matrix
    if matrix is None:
        matrix = sp.identity(int(np.prod(source_shape)), dtype=np.float64, format="csr")
    if amplitude is not None:
        matrix = matrix @ sp.diags(np.asarray(amplitude, np.float64))
    matrix = sp.csc_matrix(matrix)
    matrix.eliminate_zeros()
    matrix.sum_duplicates()
    return matrix


def op_matrix(op: Op, in_shape: tuple[int, ...]) -> sp.csr_matrix | None:
    """One op's linear map on an input of ``in_shape`` as a sparse float64 ``[n_out, n_in]`` matrix (C order),
    None for an op that only reshapes (flatten, identity)."""
    n_in = int(np.prod(in_shape))
    if isinstance(op, (Flatten, Identity)):
        return None
    if isinstance(op, Dense):
        return sp.csr_matrix(np.asarray(op.weight, np.float64))
    if isinstance(op, Conv2d):
        return _conv_matrix(np.asarray(op.weight, np.float64), in_shape, op.stride, op.padding, op.dilation,
                            op.groups)
    if isinstance(op, Conv1d):
        return _conv_matrix(np.asarray(op.weight, np.float64)[:, :, None], (in_shape[0], 1, in_shape[1]),
                            (1, op.stride), (0, op.padding), (1, op.dilation), op.groups)
    if isinstance(op, (AvgPool2d, AvgPool1d)):
        kernel = op.kernel if isinstance(op, AvgPool2d) else (1, op.kernel)
        stride = op.stride if isinstance(op, AvgPool2d) else (1, op.stride)
        padding = op.padding if isinstance(op, AvgPool2d) else (0, op.padding)
        shape = in_shape if isinstance(op, AvgPool2d) else (in_shape[0], 1, in_shape[1])
        weight = np.full((in_shape[0], 1, *kernel), 1.0 / (kernel[0] * kernel[1]))  # count_include_pad
        return _conv_matrix(weight, shape, stride, padding, (1, 1), in_shape[0])
    if isinstance(op, Scale):
        factor = np.asarray(op.factor, np.float64)
        per = np.broadcast_to(factor.reshape((-1,) + (1,) * (len(in_shape) - 1)) if factor.ndim else factor,
                              in_shape)
        return sp.diags(per.reshape(-1)).tocsr()
    if isinstance(op, ChannelSlice):
        inner = n_in // in_shape[0]
        cols = np.arange(n_in)
        return sp.csr_matrix((np.ones(n_in), (cols + op.offset * inner, cols)), shape=(op.channels * inner, n_in))
    if isinstance(op, Gather):
        index = op.index.reshape(-1)
        rows = np.flatnonzero(index >= 0)
        return sp.csr_matrix((np.ones(len(rows)), (rows, index[rows])), shape=(len(index), n_in))
    if isinstance(op, SpatialLinear):
        spatial = sp.csr_matrix(np.asarray(op.rows, np.float64))
        if op.cols is not None:
            spatial = sp.kron(spatial, sp.csr_matrix(np.asarray(op.cols, np.float64)))
        return sp.kron(sp.identity(in_shape[0]), spatial).tocsr()
    raise TypeError(f"no synapse matrix for op {op.kind!r}")


def _conv_matrix(weight: np.ndarray, in_shape: tuple[int, int, int], stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> sp.csr_matrix:
    """A 2-d convolution (``weight [C_out, C_in / groups, kh, kw]``, zero padding) on ``in_shape (C, H, W)`` as
    a sparse matrix: one entry per non-zero weight and output position whose input lies inside the image."""
    c_out, c_group, kh, kw = weight.shape
    _, H, W = in_shape
    ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    o, c, ky, kx = np.nonzero(weight)
    values = weight[o, c, ky, kx]
    channel = (o // (c_out // groups)) * c_group + c  # input channel of each weight
    oy, ox = np.arange(ho), np.arange(wo)
    iy = oy[None, :] * stride[0] - padding[0] + ky[:, None] * dilation[0]  # [weights, ho]
    ix = ox[None, :] * stride[1] - padding[1] + kx[:, None] * dilation[1]  # [weights, wo]
    valid = ((iy >= 0) & (iy < H))[:, :, None] & ((ix >= 0) & (ix < W))[:, None, :]  # [weights, ho, wo]
    n, y, x = np.nonzero(valid)
    rows = (o[n] * ho + y) * wo + x
    cols = (channel[n] * H + iy[n, y]) * W + ix[n, x]
    return sp.csr_matrix((values[n], (rows, cols)), shape=(c_out * ho * wo, in_shape[0] * H * W))


def spike_amplitude(population: Population) -> np.ndarray | None:
    """Per-neuron amplitude ``[size]`` of the spikes ``population`` sends (its threshold), or None for
    the input population, whose spikes are unit spikes."""
    if population.role == "input":
        return None
    return per_neuron(population.neuron.threshold, population.shape).reshape(-1)


def projection_matrix(network: Network, projection: Projection) -> sp.csc_matrix:
    """:func:`synapse_matrix` of one of ``network``'s projections, its source's spike amplitude folded in."""
    source = network.populations[projection.source]
    return synapse_matrix(projection, source.shape, spike_amplitude(source))


def receptor_parts(matrix: sp.spmatrix) -> tuple[sp.spmatrix, sp.spmatrix]:
    """(excitatory, inhibitory) synapses of a signed matrix, both as non-negative magnitudes."""
    return matrix.maximum(0), -matrix.minimum(0)
