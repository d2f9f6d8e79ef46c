"""Projections of binary spikes through int8 kernels (oneDNN's AMX / VNNI int8 convolution and matmul, CPU).

A projection whose source emits 0/1 spikes (times the source's amplitude) computes ``sum_i w_i s_i`` over the
active inputs. Here each weight (times the source's amplitude, in float64) is split into ``parts`` int8 parts
with a power-of-two scale per output channel,

    w = 2^-e (q_1 + 2^-7 q_2 + 2^-14 q_3 + ...),   |q_k| <= 127,

and each part runs as one int8 kernel on the spikes as uint8 with int32 accumulation and a float32 output
(the int32 sum is exact and below 2^24, so its float32 value and the power-of-two scale are exact). The parts
are accumulated into one float32 current. What differs from the float32 path: the residual of the split,
at most ``max|w| * 2^-(7 parts + 1)`` per weight (``max|w|`` per output channel), times the active inputs,
and the float32 rounding of the parts' sum (the float32 path rounds its own sum in another order). With 4
parts (the default) the residual is below 2^-29 of the largest weight: the currents differ from the float32
path's by about float32 rounding (``docs/semantics.md``, "Precision"; the tests check the bound and the
spike trains against the float32 path).

Average pooling without padding before a convolution (any stride: overlapping windows too, of up to 127
inputs) or a dense layer (stride = kernel) is summed in uint8 first (1 x 1 pools, an adaptive pool at its
input's size, dropped), its ``1/area`` folded into the weights (a power of two for 2x2 pools, otherwise
rounded once in float64 before the split). A window's sum leaves less room in uint8 for the pairing of parts
(a factor below 128), so windows of more than 7 inputs get one pair of parts more (6 parts: 3 kernels).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from neurodeploy.backends.gpu import fused
from neurodeploy.ir.ops import AvgPool2d, Op
from neurodeploy.ir.torch_ops import TensorFn

#: int8 parts per weight: 4 leave a residual below 2^-29 of the largest weight of an output channel
DEFAULT_PARTS = 4
#: output positions (H x W) below which a convolution runs as an int8 matrix product over its patches:
#: oneDNN's int8 convolution is slow on small feature maps (one core of a Sapphire Rapids CPU, 50 items, one
#: pair of parts, against the float32 convolution: 512 -> 512 channels at 4 x 4 12 ms vs 23, at 2 x 2 9.5
#: vs 7.7; the matrix products of the same sizes 7.2 and 1.7 ms; at 32 x 32 and 8 x 8 the convolution is the
#: faster: 64 -> 64 4.5 ms vs 9.0, 256 -> 256 4.3 vs 5.2)
MIN_POSITIONS = 64
#: dense matrices above this many weights keep the fp32 path: their int8 parts are as many bytes as the fp32
#: weights (4 parts), so at a small batch (a weight-bound product) they gain little, while splitting them in
#: float64 takes seconds and temporary arrays of several times their size (VGG-16's 25088 x 4096: GBs)
MAX_DENSE_WEIGHTS = 2**25


def available(device: torch.device) -> bool:
    """True when this PyTorch has oneDNN's int8 kernels for ``device`` (CPU only)."""
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.onednn, "qconv2d_pointwise") and hasattr(torch.ops.onednn, "qlinear_pointwise"))


def split_int8(weight: np.ndarray, parts: int, pair: int = 128) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Splits float64 ``weight [O, ...]`` into ``parts`` int8 arrays and their per-output-channel scales
    (powers of two), ``weight ~ sum_k q_k * scale_k``; the first part's scale makes ``max |q_1| <= 127``.
    Each part's scale is 2^-7 of the one before, except that an odd part's is ``1 / pair`` of the even part
    before it (``pair`` a power of two up to 128: the factor of a paired input, :func:`_pairs`)."""
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
    peak = np.abs(flat).max(axis=1)
    scale = np.exp2(-np.floor(np.log2(127.0 / np.where(peak > 0, peak, 1.0))))
    residual, qs, scales = flat.copy(), [], []
    for k in range(parts):
        if k:  # |residual / scale| <= 64 for a 2^-7 step, less for a smaller one
            scale = scale / (pair if k % 2 else 128)
        q = np.clip(np.round(residual / scale[:, None]), -127, 127)
        residual -= q * scale[:, None]
        qs.append(q.astype(np.int8).reshape(weight.shape))
        scales.append(scale)
    return qs, scales


def _positions(ops: list[Op], source_shape: tuple[int, ...]) -> int:
    """Output positions H x W of a chain ending in a convolution."""
    shape = source_shape
    for op in ops:
        shape = op.out_shape(shape)
    return shape[1] * shape[2]


def _poolable(pool: AvgPool2d, shape: tuple[int, ...]) -> bool:
    """A pool summed in uint8 before the next layer: no padding, a (C, H, W) source, windows of up to 127 inputs
    (their sums fit uint8 with a pairing factor of at least 2, :func:`_pair_factor`)."""
    return pool.padding == (0, 0) and len(shape) == 3 and math.prod(pool.kernel) <= 127


def _identity(op: Op) -> bool:
    """An average pool of 1 x 1 windows every step (an adaptive pool at its input's size): nothing to do."""
    return op.kind == "avgpool2d" and op.kernel == (1, 1) and op.stride == (1, 1) and op.padding == (0, 0)


def binary_projection(ops: list[Op], source_shape: tuple[int, ...], amplitude, parts: int = DEFAULT_PARTS,
                      bias: torch.Tensor | None = None) -> TensorFn | None:
    """The int8 lowering of a projection chain from a binary source, or None when the chain has another form.

    Chains: ``[Conv2d]``, ``[AvgPool2d, Conv2d]`` (any stride), ``[Dense]``, ``[Flatten, Dense]``,
    ``[AvgPool2d, Flatten, Dense]`` (stride = kernel); pools without padding, windows of up to 127 inputs;
    1 x 1 pools are dropped.
    ``amplitude``: the source's spike amplitude (None for 1, a scalar tensor, or per channel ``[C, 1, 1]``),
    folded into the weights. ``bias``: float32 ``[C_out]``
    added to the current by the first kernel (None: no bias). The returned function maps spikes
    ``[n, *source_shape]`` (0/1, any float dtype) to the float32 current ``[n, *target_shape]`` (channels-last
    memory for convolutions).
    """
    ops = [op for op in ops if not _identity(op)]
    kinds = [op.kind for op in ops]
    if kinds[-1] == "dense" and ops[-1].weight.size > MAX_DENSE_WEIGHTS:
        return None
    if "conv2d" in kinds and (ops[-1].dilation != (1, 1) or ops[-1].groups != 1):
        return None
    if kinds == ["conv2d"]:
        conv = ops[0]
        return _conv_fn(conv.weight.astype(np.float64), conv.stride, conv.padding, source_shape, amplitude, parts,
                        bias=bias, positions=_positions(ops, source_shape))
    if kinds == ["avgpool2d", "conv2d"] and _poolable(ops[0], source_shape):
        conv = ops[1]
        return _conv_fn(conv.weight.astype(np.float64), conv.stride, conv.padding, source_shape, amplitude, parts,
                        pool=ops[0].kernel, bias=bias, positions=_positions(ops, source_shape),
                        pool_stride=ops[0].stride)
    if kinds in (["dense"], ["flatten", "dense"]):
        return _dense_fn(ops[-1].weight.astype(np.float64), source_shape, amplitude, parts, channels_last=False,
                         bias=bias)
    # a dense layer after an overlapping pool would need 6 parts of a big matrix: AlexNet's first classifier
    # layer (9216 x 4096) then took 50 s and 2.5 GB to split and pack against 4 s and 1.6 GB with it in fp32
    if (kinds == ["avgpool2d", "flatten", "dense"] and _poolable(ops[0], source_shape)
            and ops[0].kernel == ops[0].stride):
        return _dense_fn(ops[2].weight.astype(np.float64), source_shape, amplitude, parts, channels_last=True,
                         pool=ops[0], bias=bias)
    return None


def _pair_factor(area: int) -> int:
    """The largest power of two up to 128 with ``[pair x, x]`` in uint8 for inputs up to ``area``."""
    return min(128, 1 << int(math.floor(math.log2(255 // area))))


def _sum_pool(x: torch.Tensor, pool: tuple[int, int] | None, stride: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 ``x [n, C, H, W]`` summed over ``pool`` windows every ``stride`` (default: the window; overlapping
    windows when smaller), floor mode, channels-last (None: ``x``)."""
    if pool is None:
        return x
    stride = stride or pool
    rows, cols = ((size - k) // s + 1 for size, k, s in zip(x.shape[2:], pool, stride, strict=True))
    slices = [x[:, :, i:i + stride[0] * (rows - 1) + 1:stride[0], j:j + stride[1] * (cols - 1) + 1:stride[1]]
              for i in range(pool[0]) for j in range(pool[1])]
    out = slices[0].clone(memory_format=torch.channels_last)
    for other in slices[1:]:
        out.add_(other)
    return out


def _channel_amplitude(amplitude, channels: int) -> np.ndarray:
    """The source's amplitude per input channel (float64 ``[channels]``)."""
    if amplitude is None:
        return np.ones(channels)
    values = np.asarray(torch.as_tensor(amplitude).detach().cpu(), dtype=np.float64).reshape(-1)
    return np.broadcast_to(values, (channels,)) if values.size == 1 else values


def _pairs(qs: list[np.ndarray], scales: list[np.ndarray], axis: int, pair: int = 128
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive parts joined two by two along the input ``axis``: against the input ``[pair x, x]`` a pair
    ``[q_k, q_k+1]`` gives ``pair q_k + q_k+1`` in one exact int32 sum at the scale of ``q_k+1`` (``1 / pair``
    that of ``q_k``, :func:`split_int8`); an odd last part pairs with zeros."""
    pairs = []
    for k in range(0, len(qs), 2):
        low = qs[k + 1] if k + 1 < len(qs) else np.zeros_like(qs[k])
        scale = scales[k + 1] if k + 1 < len(qs) else scales[k] / pair
        pairs.append((np.concatenate([qs[k], low], axis=axis), scale))
    return pairs


def _paired_input(x: torch.Tensor, pair: int) -> torch.Tensor:
    """``[pair x, x]`` along the channels of uint8 ``x [n, C, H, W]`` (channels-last memory)."""
    n, c, h, w = x.shape
    out = torch.empty((n, 2 * c, h, w), dtype=torch.uint8, device=x.device, memory_format=torch.channels_last)
    out[:, c:].copy_(x)
    torch.mul(out[:, c:], pair, out=out[:, :c])
    return out


def _conv_fn(weight: np.ndarray, stride, padding, source_shape, amplitude, parts: int,
             pool: tuple[int, int] | None = None, bias: torch.Tensor | None = None,
             positions: int = MIN_POSITIONS, pool_stride: tuple[int, int] | None = None) -> TensorFn:
    """int8 parts of a convolution over uint8 channels-last spikes (paired, :func:`_pairs`), summed in float32.
    With ``pool`` the spikes are first sum-pooled over ``pool`` windows every ``pool_stride`` (in uint8: at most
    the window's area) and ``weight`` is the pooled convolution's divided by that area. Maps of fewer than
    :data:`MIN_POSITIONS` output ``positions`` run as one int8 matrix product over their patches."""
    c_in = source_shape[0]
    weight = weight * _channel_amplitude(amplitude, c_in)[None, :, None, None]
    area = 1 if pool is None else pool[0] * pool[1]
    weight = weight / area
    pair = _pair_factor(area)
    if pair < 32:  # windows of more than 7 inputs: each pair of parts adds fewer bits, so one pair more
        parts += 2
    qs, scales = split_int8(weight, parts, pair)
    stride, padding, dilation = list(stride), list(padding), [1, 1]
    zero = torch.zeros(weight.shape[0], dtype=torch.int64)
    pairs = _pairs(qs, scales, 1, pair)
    if positions < MIN_POSITIONS:
        return _patch_conv_fn(pairs, weight.shape[2:], stride, padding, pool, pair, bias, pool_stride)
    packed = [(torch.ops.onednn.qconv_prepack(torch.from_numpy(q).contiguous(memory_format=torch.channels_last),
                                              torch.from_numpy(scale).float(), 1.0, 0, stride, padding, dilation,
                                              1, None),
               torch.from_numpy(scale).float()) for q, scale in pairs]

    def conv(spikes: torch.Tensor) -> torch.Tensor:
        x = spikes.to(torch.uint8, memory_format=torch.channels_last)
        x = _paired_input(_sum_pool(x, pool, pool_stride), pair)
        (first, scale), rest = packed[0], packed[1:]
        out = torch.ops.onednn.qconv2d_pointwise(x, 1.0, 0, first, scale, zero, bias, stride, padding, dilation, 1,
                                                 1.0, 0, torch.float32, "none", [], "")
        for weights, scale in rest:  # each further part summed into ``out`` by the kernel (a "sum" post-op)
            out = torch.ops.onednn.qconv2d_pointwise.binary(x, 1.0, 0, weights, scale, zero, out, None, stride,
                                                            padding, dilation, 1, 1.0, 0, torch.float32, 1.0, 0,
                                                            "sum", 1.0, "none", [], "")
        return out

    return conv


def _patch_conv_fn(pairs, kernel, stride, padding, pool, pair: int, bias: torch.Tensor | None,
                   pool_stride: tuple[int, int] | None = None) -> TensorFn:
    """A convolution of small maps as int8 matrix products: the paired input's patches ``[n H' W', kh kw 2C]``
    (channels-last order) against each pair's weights ``[O, kh kw 2C]``."""
    kh, kw = (int(k) for k in kernel)
    zero = torch.zeros(pairs[0][0].shape[0], dtype=torch.int64)
    packed = [(torch.ops.onednn.qlinear_prepack(torch.from_numpy(np.ascontiguousarray(
                  q.transpose(0, 2, 3, 1).reshape(q.shape[0], -1))), None), torch.from_numpy(scale).float())
              for q, scale in pairs]

    def conv(spikes: torch.Tensor) -> torch.Tensor:
        x = _sum_pool(spikes.to(torch.uint8, memory_format=torch.channels_last), pool, pool_stride)
        n, _, h, w = x.shape
        rows = (h + 2 * padding[0] - kh) // stride[0] + 1
        cols = (w + 2 * padding[1] - kw) // stride[1] + 1
        out = _linear_parts(_paired_patches(x, kh, kw, stride, padding, pair), packed, zero, bias)
        return out.reshape(n, rows, cols, -1).permute(0, 3, 1, 2)

    return conv


def _paired_patches(x: torch.Tensor, kh: int, kw: int, stride, padding, pair: int) -> torch.Tensor:
    """The patches ``[n H' W', kh kw 2C]`` of uint8 ``x [n, C, H, W]`` (channels-last) with every tap's channels
    as ``[pair s, s]``: in one pass by the fused scan's extension where it is built (``fused``), else by pairing,
    padding and stacking the taps."""
    extension = fused.kernel()
    if extension is not None:
        return extension.paired_patches(x.permute(0, 2, 3, 1).contiguous(), kh, kw, stride[0], stride[1],
                                        padding[0], padding[1], pair)
    x = _paired_input(x, pair)
    n, c, h, w = x.shape
    rows = (h + 2 * padding[0] - kh) // stride[0] + 1
    cols = (w + 2 * padding[1] - kw) // stride[1] + 1
    padded = x.new_zeros((n, h + 2 * padding[0], w + 2 * padding[1], c))
    padded[:, padding[0]:padding[0] + h, padding[1]:padding[1] + w] = x.permute(0, 2, 3, 1)
    taps = [padded[:, i:i + stride[0] * (rows - 1) + 1:stride[0], j:j + stride[1] * (cols - 1) + 1:stride[1]]
            for i in range(kh) for j in range(kw)]
    return torch.stack(taps, dim=3).reshape(n * rows * cols, -1)


def _dense_fn(weight: np.ndarray, source_shape, amplitude, parts: int, channels_last: bool,
              pool: AvgPool2d | None = None, bias: torch.Tensor | None = None) -> TensorFn:
    """int8 parts of a dense layer over the flattened uint8 spikes (``weight [O, inputs]``, paired as in
    :func:`_pairs`). With ``pool`` the spikes ``(C, H, W)`` are first sum-pooled (:func:`_sum_pool`) and
    ``weight`` is over the pooled, flattened ``pool.out_shape``, divided here by the window's area (windows of
    more than 7 inputs get one pair of parts more, as in :func:`_conv_fn`)."""
    shape = source_shape if pool is None else pool.out_shape(tuple(source_shape))
    area = 1 if pool is None else math.prod(pool.kernel)
    weight = weight / area
    if amplitude is not None:
        channels = shape[0]
        per = _channel_amplitude(amplitude, channels)
        weight = (weight.reshape(weight.shape[0], channels, -1) * per[None, :, None]).reshape(weight.shape)
    if channels_last:  # the spikes arrive channels-last: order the weight's columns (c, h, w) as (h, w, c)
        c, h, w = shape
        weight = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
    pair = _pair_factor(area)
    if pair < 32:
        parts += 2
    qs, scales = split_int8(weight, parts, pair)
    zero = torch.zeros(weight.shape[0], dtype=torch.int64)
    packed = [(torch.ops.onednn.qlinear_prepack(torch.from_numpy(np.ascontiguousarray(q)), None),
               torch.from_numpy(scale).float()) for q, scale in _pairs(qs, scales, 1, pair)]
    n_in = math.prod(shape)

    def dense(spikes: torch.Tensor) -> torch.Tensor:
        if channels_last:
            pooled = _sum_pool(spikes.to(torch.uint8, memory_format=torch.channels_last),
                               None if pool is None else pool.kernel, None if pool is None else pool.stride)
            flat = pooled.permute(0, 2, 3, 1).reshape(-1, n_in)
        else:
            flat = spikes.reshape(-1, n_in)
        x = torch.empty((flat.shape[0], 2 * n_in), dtype=torch.uint8, device=spikes.device)
        x[:, n_in:].copy_(flat)
        torch.mul(x[:, n_in:], pair, out=x[:, :n_in])
        return _linear_parts(x, packed, zero, bias)

    return dense


def _linear_parts(x: torch.Tensor, packed, zero: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """uint8 ``x [n, inputs]`` against each packed pair of parts, summed in float32 ``[n, outputs]``: the first
    kernel adds the bias, each further one adds its part into the output (a "sum" post-op, the same float32
    addition as adding the parts afterwards, one pass less)."""
    (first, scale), rest = packed[0], packed[1:]
    out = torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, first, scale, zero, bias, 1.0, 0, torch.float32, "none",
                                             [], "")
    for weights, scale in rest:
        out = torch.ops.onednn.qlinear_pointwise.binary(x, 1.0, 0, weights, scale, zero, out, None, 1.0, 0,
                                                        torch.float32, 1.0, 0, "sum", 1.0, "none", [], "")
    return out
