"""Folds ``Scale`` ops of a projection chain into its weighted ops (a torch.fx-style plain pass).

Scales come from batch-norm folding (after the weighted op) and from normalization (lambda of the
source before the chain, 1 / lambda of the target after it). Per-channel scales commute with average
pooling, spatial linear maps and identity, and pass a gather that takes whole channels; before a
flatten a per-channel scale becomes a per-feature scale; through a channel slice (one part of a
concatenation) a per-channel scale is padded with ones (forward) or sliced
(backward). A scale that reaches a weighted op is multiplied into its input columns (moving forward) or
output rows (moving backward). Chains without a weighted op keep one merged ``Scale``.

A channel slice followed (through pooling and a flatten) by an ungrouped weighted op folds into that
op: only the weight columns of its channels are kept, so a concatenation costs nothing extra.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

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
from neurodeploy.ir.torch_ops import compile_chain

Shape = tuple[int, ...]


#: weightless ops a dense layer after them may absorb (:func:`fold_into_dense`)
_WEIGHTLESS = (Flatten, SpatialLinear, Gather, AvgPool2d, AvgPool1d, Identity)
#: largest composed map (inputs x outputs) :func:`fold_into_dense` builds
_MAX_ABSORBED = 1 << 25
#: ops a per-channel scale commutes with
_CHANNELWISE = (AvgPool2d, AvgPool1d, SpatialLinear, Identity)


def _conv_input_factor(conv: Conv2d | Conv1d, factor: np.ndarray) -> np.ndarray:
    """Per-input-channel factor laid out as ``conv.weight``'s second axis per group, shape [C_out, C_in/g]."""
    c_out, c_in_g = conv.weight.shape[:2]
    group_of_output = np.arange(c_out) // (c_out // conv.groups)
    channels = group_of_output[:, None] * c_in_g + np.arange(c_in_g)[None, :]
    return factor[channels]


def _fold_into_input(op: Op, factor: np.ndarray) -> Op:
    if isinstance(op, Dense):
        return Dense(op.weight * (factor if factor.ndim == 0 else factor[None, :]))
    assert isinstance(op, (Conv2d, Conv1d))
    spatial = (1,) * (op.weight.ndim - 2)
    scale = factor if factor.ndim == 0 else _conv_input_factor(op, factor).reshape(op.weight.shape[:2] + spatial)
    return dataclasses.replace(op, weight=op.weight * scale)


def _fold_into_output(op: Op, factor: np.ndarray) -> Op:
    shape = (-1,) + (1,) * (op.weight.ndim - 1)
    weight = op.weight * (factor if factor.ndim == 0 else factor.reshape(shape))
    return dataclasses.replace(op, weight=weight)


def _shapes(ops: list[Op], in_shape: Shape) -> list[Shape]:
    """Input shape of each op, plus the chain's output shape at the end."""
    shapes = [tuple(in_shape)]
    for op in ops:
        shapes.append(op.out_shape(shapes[-1]))
    return shapes


def _push_forward(ops: list[Op], index: int, in_shape: Shape) -> bool:
    """Moves the scale at ``index`` one step forward or folds it; False when it cannot move."""
    scale, nxt = ops[index], ops[index + 1] if index + 1 < len(ops) else None
    factor = scale.factor
    if nxt is None:
        return False
    if isinstance(nxt, Scale):
        ops[index: index + 2] = [Scale(_merge(factor, nxt.factor))]
        return True
    if nxt.weighted:
        ops[index: index + 2] = [_fold_into_input(nxt, factor)]
        return True
    if isinstance(nxt, _CHANNELWISE) or (isinstance(nxt, Gather) and factor.ndim == 0):
        ops[index], ops[index + 1] = nxt, scale
        return True
    if isinstance(nxt, Gather):
        moved = _through_gather(nxt, factor, _shapes(ops, in_shape)[index])
        if moved is None:
            return False
        ops[index], ops[index + 1] = nxt, Scale(moved)
        return True
    if isinstance(nxt, ChannelSlice):
        if factor.ndim:
            channels = _shapes(ops, in_shape)[index][0]
            padded = np.ones(nxt.channels, np.float64)
            padded[nxt.offset: nxt.offset + channels] = factor
            factor = padded
        ops[index], ops[index + 1] = nxt, Scale(factor)
        return True
    if isinstance(nxt, Flatten):
        shape = _shapes(ops, in_shape)[index]
        spatial = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        flat = factor if factor.ndim == 0 else np.repeat(factor, spatial)
        ops[index], ops[index + 1] = nxt, Scale(flat)
        return True
    return False


def _push_backward(ops: list[Op], index: int, in_shape: Shape) -> bool:
    scale, prev = ops[index], ops[index - 1] if index > 0 else None
    if prev is None:
        return False
    if isinstance(prev, Scale):
        ops[index - 1: index + 1] = [Scale(_merge(prev.factor, scale.factor))]
        return True
    if prev.weighted:
        ops[index - 1: index + 1] = [_fold_into_output(prev, scale.factor)]
        return True
    if isinstance(prev, _CHANNELWISE) or (isinstance(prev, Gather) and scale.factor.ndim == 0):
        ops[index - 1], ops[index] = scale, prev
        return True
    if isinstance(prev, ChannelSlice):
        factor = scale.factor
        if factor.ndim:
            channels = _shapes(ops, in_shape)[index - 1][0]
            factor = factor[prev.offset: prev.offset + channels]
        ops[index - 1], ops[index] = Scale(factor), prev
        return True
    return False


def _through_gather(gather: Gather, factor: np.ndarray, in_shape: Shape) -> np.ndarray | None:
    """The per-channel factor after ``gather`` equal to ``factor`` before it, when every output channel takes
    neurons of one input channel only (a channel permutation or shuffle, a spatial slice); else None."""
    spatial = int(np.prod(in_shape[1:]))
    index = gather.index.reshape(gather.index.shape[0], -1)
    source = np.where(index >= 0, index // spatial, -1)
    first = np.where((source >= 0).any(1), source.max(1), -1)
    if len(in_shape) < 2 or gather.index.ndim < 2 or not np.all((source == first[:, None]) | (source < 0)):
        return None
    return np.where(first >= 0, factor[np.maximum(first, 0)], 1.0)


def _compose(first: Gather, second: Gather) -> Gather:
    """One gather for ``first`` then ``second``."""
    flat = first.index.reshape(-1)
    return Gather(np.where(second.index >= 0, flat[np.maximum(second.index, 0)], -1))


def fold_gathers(ops: list[Op], in_shape: Shape) -> list[Op]:
    """Returns an equivalent chain where consecutive gathers (and a flatten next to one) are one gather,
    and a gather that keeps every neuron in place is removed (or is a :class:`Flatten`)."""
    ops = list(ops)
    index = 0
    while index < len(ops) - 1:
        op, nxt = ops[index], ops[index + 1]
        if isinstance(op, Gather) and isinstance(nxt, (Gather, Flatten)):
            second = nxt if isinstance(nxt, Gather) else Gather(np.arange(op.index.size))
            ops[index: index + 2] = [_compose(op, second)]
        elif isinstance(op, Flatten) and isinstance(nxt, Gather):
            del ops[index]  # a gather's indices are flat already
        else:
            index += 1
    shapes = _shapes(ops, in_shape)
    for i in reversed(range(len(ops))):
        op = ops[i]
        if isinstance(op, Gather) and np.array_equal(op.index.reshape(-1), np.arange(int(np.prod(shapes[i])))):
            if op.index.shape == shapes[i]:
                del ops[i]
            elif op.index.ndim == 1:
                ops[i] = Flatten()
    return ops


def fold_into_dense(ops: list[Op], in_shape: Shape) -> list[Op]:
    """Returns an equivalent chain where weightless ops that enlarge the activation before a
    :class:`Dense` (an adaptive pooling from 1 x 1 to 7 x 7 before VGG's classifier, a zero padding) are
    absorbed into it: W' = W M with M the composed map from the smallest activation on the way, so the
    weight matrix shrinks by the enlargement (49 times for VGG at 32 x 32)."""
    ops = list(ops)
    for j in range(len(ops)):
        if not isinstance(ops[j], Dense):
            continue
        shapes = _shapes(ops, in_shape)
        first = j
        while first > 0 and isinstance(ops[first - 1], _WEIGHTLESS):
            first -= 1
        k = min(range(first, j + 1), key=lambda i: (int(np.prod(shapes[i])), -i))
        n_in, n_mid = int(np.prod(shapes[k])), int(np.prod(shapes[j]))
        if k == j or n_in * n_mid > _MAX_ABSORBED:
            continue
        with torch.no_grad():
            basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shapes[k])
            matrix = compile_chain(ops[k:j], dtype=torch.float64)(basis).reshape(n_in, n_mid).numpy()
        weight = np.asarray(ops[j].weight, dtype=np.float64) @ matrix.T
        ops[k:j + 1] = [*([Flatten()] if len(shapes[k]) > 1 else []), Dense(weight.astype(ops[j].weight.dtype))]
        return fold_into_dense(ops, in_shape)
    return ops


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(a) * np.asarray(b)


def fold_scales(ops: list[Op], in_shape: Shape) -> list[Op]:
    """Returns an equivalent chain with every foldable ``Scale`` merged into a weighted op (gathers
    composed first, :func:`fold_gathers`)."""
    ops = _fold_forward(fold_into_dense(fold_gathers(ops, in_shape), in_shape), Scale, _push_forward, in_shape)
    index = len(ops) - 1
    while index >= 0:
        if isinstance(ops[index], Scale) and _push_backward(ops, index, in_shape):
            index = min(index, len(ops) - 1)
            continue
        index -= 1
    trivial = [i for i, op in enumerate(ops) if isinstance(op, Scale) and np.all(op.factor == 1)]
    return fold_slices([op for i, op in enumerate(ops) if i not in trivial], in_shape)


def _fold_slice(ops: list[Op], index: int, in_shape: Shape) -> bool:
    """Folds the channel slice at ``index`` into the ungrouped weighted op it reaches through
    channel-wise ops and at most one flatten; False when there is none."""
    shapes = _shapes(ops, in_shape)
    slice_op, channels = ops[index], shapes[index][0]
    flatten = None
    for j in range(index + 1, len(ops)):
        op = ops[j]
        if isinstance(op, _CHANNELWISE) and flatten is None:
            continue
        if isinstance(op, Flatten) and flatten is None:
            flatten = j
            continue
        if not op.weighted or getattr(op, "groups", 1) != 1:
            return False
        if flatten is None:
            columns = slice(slice_op.offset, slice_op.offset + channels)
        else:
            spatial = int(np.prod(shapes[flatten][1:]))
            columns = slice(slice_op.offset * spatial, (slice_op.offset + channels) * spatial)
        if isinstance(op, Dense) and flatten is None and len(shapes[j]) != 1:
            return False
        ops[j] = dataclasses.replace(op, weight=np.ascontiguousarray(op.weight[:, columns]))
        del ops[index]
        return True
    return False


def fold_slices(ops: list[Op], in_shape: Shape) -> list[Op]:
    """Returns an equivalent chain with every foldable :class:`ChannelSlice` folded into the weighted op
    after it (its weight columns sliced to the slice's channels)."""
    return _fold_forward(list(ops), ChannelSlice, _fold_slice, in_shape)


def _fold_forward(ops: list[Op], kind: type, fold, in_shape: Shape) -> list[Op]:
    """Tries ``fold(ops, index, in_shape)`` (which changes ``ops`` in place and says whether it did) at
    every op of type ``kind``, front to back, and returns ``ops``."""
    index = 0
    while index < len(ops):
        if isinstance(ops[index], kind) and fold(ops, index, in_shape):
            continue
        index += 1
    return ops
