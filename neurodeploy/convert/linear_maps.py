"""The matrices of operations that are linear in their input and act on each spatial axis separately.

Every average pooling of PyTorch (``avg_pool1d/2d`` with any ``ceil_mode``, ``count_include_pad`` and
``divisor_override``, ``adaptive_avg_pool1d/2d`` to any output size) is ``rows @ x @ cols.T`` per channel,
because its window is a product of one interval per axis and its divisor a product of one length per axis
(or a constant). These functions build one axis's matrix ``[out, size]`` (float64) with PyTorch's index
arithmetic (``aten/src/ATen/native/AvgPoolKernel.cpp``, ``AdaptiveAveragePooling.cpp``), for
:class:`neurodeploy.ir.ops.SpatialLinear`.
"""

from __future__ import annotations

import math

import numpy as np


def pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a pooling over ``size`` positions (PyTorch's ``pooling_output_shape``): with
    ``ceil_mode`` a last, partial window is kept when it starts inside the input or its left padding."""
    extent = dilation * (kernel - 1) + 1
    span = size + 2 * padding - extent
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def average_matrix(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool, count_include_pad: bool,
                   divide: bool = True) -> np.ndarray:
    """One axis of ``avg_pool``: row ``o`` holds 1 / length over the window's positions inside the input,
    where length counts the padding (``count_include_pad``, clipped at the padded end) or not; with
    ``divide=False`` the row holds ones (the divisor is applied elsewhere, e.g. ``divisor_override``)."""
    out = pooled_size(size, kernel, stride, padding, 1, ceil_mode)
    matrix = np.zeros((out, size))
    for o in range(out):
        start = o * stride - padding
        end = min(start + kernel, size + padding)
        length = end - start
        start, end = max(start, 0), min(end, size)
        if not count_include_pad:
            length = end - start
        matrix[o, start:end] = 1.0 / length if divide else 1.0
    return matrix


def adaptive_matrix(size: int, out: int) -> np.ndarray:
    """One axis of ``adaptive_avg_pool`` from ``size`` to ``out`` positions (either may be larger):
    output ``o`` averages positions ``floor(o * size / out)`` to ``ceil((o + 1) * size / out)``."""
    matrix = np.zeros((out, size))
    for o in range(out):
        start, end = (o * size) // out, math.ceil((o + 1) * size / out)
        matrix[o, start:end] = 1.0 / (end - start)
    return matrix


def padding_matrix(size: int, before: int, after: int) -> np.ndarray:
    """One axis of zero padding: ``before`` zeros, the input, ``after`` zeros."""
    matrix = np.zeros((before + size + after, size))
    matrix[before + np.arange(size), np.arange(size)] = 1.0
    return matrix
