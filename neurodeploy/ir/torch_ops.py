"""Evaluates IR projection ops with PyTorch.

``compile_chain`` turns an op chain into a callable on ``[B, *src_shape]`` tensors with the weights
already on the target device and dtype; ``support_chain`` builds the same chain on the binary support
(non-zero pattern) of the weights, which is what synapse counting needs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

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

TensorFn = Callable[[torch.Tensor], torch.Tensor]


def _channel_view(factor: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshapes a per-channel vector to broadcast over ``[B, C, ...]`` with ``ndim`` dims."""
    if factor.ndim == 0:
        return factor
    return factor.reshape((1, -1) + (1,) * (ndim - 2))


def compile_op(op: Op, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               support: bool = False) -> TensorFn:
    """Returns ``f(x)`` for one op. With ``support=True`` weights become ``(W != 0)`` and average
    pooling becomes a sum (so a chain counts connection paths instead of weighting them)."""

    def tensor(array: np.ndarray) -> torch.Tensor:
        array = (np.asarray(array) != 0).astype(np.float32) if support else np.asarray(array)
        return torch.as_tensor(array, dtype=dtype, device=device)

    if isinstance(op, Dense):
        weight = tensor(op.weight)
        return lambda x: F.linear(x, weight)
    if isinstance(op, Conv2d):
        weight = tensor(op.weight)
        return lambda x: F.conv2d(x, weight, None, op.stride, op.padding, op.dilation, op.groups)
    if isinstance(op, AvgPool2d):
        area = op.kernel[0] * op.kernel[1] if support else 1
        return lambda x: F.avg_pool2d(x, op.kernel, op.stride, op.padding, count_include_pad=True) * area
    if isinstance(op, Conv1d):
        weight = tensor(op.weight)
        return lambda x: F.conv1d(x, weight, None, op.stride, op.padding, op.dilation, op.groups)
    if isinstance(op, AvgPool1d):
        length = op.kernel if support else 1
        return lambda x: F.avg_pool1d(x, op.kernel, op.stride, op.padding, count_include_pad=True) * length
    if isinstance(op, ChannelSlice):
        def embed(x: torch.Tensor) -> torch.Tensor:
            out = x.new_zeros((x.shape[0], op.channels, *x.shape[2:]))
            out[:, op.offset: op.offset + x.shape[1]] = x
            return out
        return embed
    if isinstance(op, SpatialLinear):
        rows = tensor(op.rows)
        if op.cols is None:
            return lambda x: torch.matmul(x, rows.T)
        cols = tensor(op.cols)
        return lambda x: torch.matmul(torch.matmul(rows, x), cols.T)
    if isinstance(op, Gather):
        index = torch.as_tensor(op.index.reshape(-1), dtype=torch.long, device=device)
        picked, present = index.clamp(min=0), (index >= 0)

        def gather(x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(x.shape[0], -1)[:, picked] * present.to(x.dtype)
            return flat.reshape(x.shape[0], *op.index.shape)
        return gather
    if isinstance(op, Flatten):
        return lambda x: x.flatten(1)
    if isinstance(op, Identity):
        return lambda x: x
    if isinstance(op, Scale):
        factor = tensor(op.factor)
        return lambda x: x * _channel_view(factor, x.ndim)
    raise TypeError(f"no torch lowering for op {op.kind!r}")


def compile_chain(ops: list[Op], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  support: bool = False) -> TensorFn:
    """Composes :func:`compile_op` over a chain (an empty chain is the identity)."""
    fns = [compile_op(op, device, dtype, support) for op in ops]

    def apply(x: torch.Tensor) -> torch.Tensor:
        for fn in fns:
            x = fn(x)
        return x

    return apply
