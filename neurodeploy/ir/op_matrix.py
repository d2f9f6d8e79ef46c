"""One projection op as an explicit sparse matrix (``[n_out, n_in]``, C order of both shapes), built from the op's
parameters in time and memory linear in its synapses, and a chain of them composed (:func:`chain_matrix`): what
``neurodeploy.passes.synapse_matrix`` makes a projection's synapses of and
:func:`neurodeploy.ir.connectivity.matrix_fan` its support map."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

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


def chain_matrix(ops: list[Op], source_shape: tuple[int, ...], support: bool = False) -> sp.csr_matrix:
    """The composed linear map of an op chain on ``source_shape`` as a sparse float64 ``[n_target, n_source]``
    matrix (C order of both shapes): the sparse product of each op's :func:`op_matrix`, the identity for a chain that
    only reshapes. With ``support`` each op's non-zero entries are replaced by 1 first (a weight's support, pooling
    as a sum), so every entry of the product counts paths and none cancel. Time and memory grow with the ops'
    synapses and the composed map's, not with ``n_source x n_target``."""
    matrix, shape = None, tuple(source_shape)
    for op in ops:
        part = op_matrix(op, shape)
        shape = op.out_shape(shape)
        if part is None:
            continue
        if support:
            part = sp.csr_matrix(part)
            part.eliminate_zeros()
            part.data[:] = 1.0
        matrix = part if matrix is None else part @ matrix
    if matrix is None:
        return sp.identity(int(np.prod(source_shape)), dtype=np.float64, format="csr")
    return sp.csr_matrix(matrix)


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
