"""Synapse counts of a projection from the non-zero patterns of its ops, without its composed matrix.

The count is structural: target i is a synapse of source j when at least one path of non-zero weights
leads from j to i through the op chain (docs/semantics.md, "Synaptic operations"). It covers the chains
the converter makes: any number of channel-wise ops (average pooling, depthwise convolutions with one
output channel per input channel, per-channel scales, channel slices, flatten, identity) around at most
one op that mixes channels (a convolution, or a dense layer, which is read as a convolution whose kernel
covers its whole flattened input map). :func:`reach_counts` returns None for any other chain.

How: a source neuron ``(c, y, x)`` reaches, in output channel ``o``, the positions that one spatial
chain reaches from ``(y, x)`` on a single-channel map: the chain of the channel-wise kernels of ``c``,
the mixing op's kernel support ``K[o, c]`` and the channel-wise kernels of ``o``. Channels whose chains
are equal share one spatial count, so a dense-weight network needs one spatial count per projection.
A spatial count labels sources whose spacing is at least the chain's receptive field (no target sees
two of them), propagates the labels by the maximum over each kernel's non-zero offsets, and reads
which source owns each reached target: ``prod(receptive field)`` probes of one map each. Memory and time
grow with the maps and kernels, never with ``n_source x n_target``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from neurodeploy.ir.ops import AvgPool1d, AvgPool2d, ChannelSlice, Conv1d, Conv2d, Dense, Flatten, Identity, Op, Scale

Pair = tuple[int, int]
#: elements of one probe batch's label maps (int32): bounds the working memory of a spatial count (16 MB)
_PROBE_ELEMENTS = 1 << 22
#: distinct spatial chains one projection may need before the count gives up (pruned kernels of many shapes)
MAX_CHAINS = 512
#: the ops modelled here, with the parameters each is modelled with (any other option: not covered)
_KNOWN: dict[type, set[str]] = {
    AvgPool2d: {"kernel", "stride", "padding"}, AvgPool1d: {"kernel", "stride", "padding"},
    Conv2d: {"stride", "padding", "dilation", "groups"}, Conv1d: {"stride", "padding", "dilation", "groups"},
    Dense: set(), Flatten: set(), Identity: set(), Scale: set(), ChannelSlice: {"offset", "channels"},
}


@dataclass(frozen=True)
class _Kernel:
    """One spatial stage on a single-channel ``[H, W]`` map: the non-zero offsets of its kernel."""

    mask: bytes          # np.packbits of the bool kernel support, C order
    size: Pair           # kernel (kh, kw)
    stride: Pair
    padding: Pair
    dilation: Pair

    def offsets(self) -> np.ndarray:
        bits = np.unpackbits(np.frombuffer(self.mask, np.uint8), count=self.size[0] * self.size[1])
        return np.argwhere(bits.reshape(self.size).astype(bool))


@dataclass
class _Stage:
    """A channel-wise op in the chain: ``kernels[k]`` is the kernel of the channels ``index == k`` (one
    shared kernel for pooling, one per channel for a depthwise convolution)."""

    kernels: list[_Kernel]
    index: np.ndarray | None   # [C] kernel of each channel at this point of the chain; None: kernels[0]


@dataclass
class _Plan:
    """The chain split around its mixing op, every channel index taken at the op it meets."""

    in_shape: tuple[int, int, int]     # source as (C, H, W)
    pre: list[tuple[_Stage, np.ndarray]]   # (stage, channel of every source channel there, -1 dead)
    mid_channel: np.ndarray            # [C_src] channel entering the mixing op (-1: dead)
    mixing: tuple | None               # (support [O, C/g, kh, kw] bool, groups, stride, padding, dilation)
    post: list[tuple[_Stage, np.ndarray]]  # (stage, channel of every mixing-op output channel there)
    out_channel: np.ndarray            # [O] final channel of every mixing-op output channel (-1: dead)
    out_shape: tuple[int, int, int]


class _Unsupported(Exception):
    """A chain outside what the structural count covers."""


def _as_3d(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return tuple(shape)
    if len(shape) == 2:
        return (shape[0], 1, shape[1])
    if len(shape) == 1:
        return (shape[0], 1, 1)
    raise _Unsupported


def _kernel(mask: np.ndarray, stride: Pair, padding: Pair, dilation: Pair) -> _Kernel:
    mask = np.asarray(mask, bool)
    return _Kernel(np.packbits(mask.reshape(-1)).tobytes(), mask.shape, stride, padding, dilation)


def _out_hw(hw: Pair, kernel: _Kernel) -> Pair:
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                 zip(hw, kernel.size, kernel.stride, kernel.padding, kernel.dilation, strict=True))


def _spatial(op: Op) -> tuple[Pair, Pair, Pair, Pair] | None:
    """(kernel, stride, padding, dilation) of a pooling or convolution op as 2-D pairs."""
    if isinstance(op, AvgPool2d):
        return op.kernel, op.stride, op.padding, (1, 1)
    if isinstance(op, AvgPool1d):
        return (1, op.kernel), (1, op.stride), (0, op.padding), (1, 1)
    if isinstance(op, Conv2d):
        return tuple(op.weight.shape[2:]), op.stride, op.padding, op.dilation
    if isinstance(op, Conv1d):
        return (1, op.weight.shape[2]), (1, op.stride), (0, op.padding), (1, op.dilation)
    return None


def _plan(ops: list[Op], source_shape: tuple[int, ...]) -> _Plan:
    in_shape = _as_3d(source_shape)
    c, h, w = in_shape
    channel = np.arange(c)          # the channel each tracked channel (source, later mixing output) is in now
    flat = False                    # a flatten of a map with more than one position happened
    pre: list = []
    post: list = []
    mixing = None
    mid_channel = None
    shape = tuple(source_shape)
    for op in ops:
        if type(op) not in _KNOWN or set(op.params()) != _KNOWN[type(op)]:
            raise _Unsupported  # an op or an option (e.g. ceil mode) this count does not model
        stages = pre if mixing is None else post
        spatial = _spatial(op)
        if isinstance(op, (Conv2d, Conv1d)) and flat:
            raise _Unsupported
        if isinstance(op, (AvgPool2d, AvgPool1d)):
            if flat:
                raise _Unsupported
            kernel = _kernel(np.ones(spatial[0], bool), *spatial[1:])
            stages.append((_Stage([kernel], None), channel.copy()))
            h, w = _out_hw((h, w), kernel)
        elif isinstance(op, (Conv2d, Conv1d)) and op.groups == c and op.weight.shape[:2] == (c, 1):
            support = op.weight[:, 0] != 0
            kernels = [_kernel(mask, *spatial[1:]) for mask in support.reshape(c, *spatial[0])]
            unique = {k: i for i, k in enumerate(dict.fromkeys(kernels))}
            stages.append((_Stage(list(unique), np.array([unique[k] for k in kernels])), channel.copy()))
            h, w = _out_hw((h, w), kernels[0])
        elif isinstance(op, (Conv2d, Conv1d, Dense)):
            if mixing is not None:
                raise _Unsupported
            if isinstance(op, Dense):
                if op.weight.shape[1] != c * h * w:
                    raise _Unsupported
                support = (op.weight != 0).reshape(op.weight.shape[0], c, h, w)
                mixing = (support, 1, (1, 1), (0, 0), (1, 1))
                h, w = 1, 1
            else:
                support = (op.weight != 0).reshape(*op.weight.shape[:2], *spatial[0])
                mixing = (support, op.groups, *spatial[1:])
                h, w = _out_hw((h, w), _kernel(support[0, 0], *spatial[1:]))
            mid_channel = channel
            c = op.weight.shape[0]
            channel = np.arange(c)
            flat = False
        elif isinstance(op, Flatten):
            flat = flat or h * w > 1  # a flattened map keeps its (C, H, W) here: only a dense op may follow
        elif isinstance(op, Identity):
            pass
        elif isinstance(op, Scale):
            if flat and op.factor.ndim:
                raise _Unsupported
            dead = np.nonzero(np.broadcast_to(op.factor, (c,)) == 0)[0]
            channel[np.isin(channel, dead)] = -1
        elif isinstance(op, ChannelSlice):
            if flat:
                raise _Unsupported
            channel[channel >= 0] += op.offset
            c = op.channels
        else:
            raise _Unsupported
        shape = op.out_shape(shape)
        if math.prod(shape) != c * h * w or (not flat and _as_3d(shape) != (c, h, w)):
            raise _Unsupported  # the op's own shape rule differs from the one modelled here
    if mixing is None:
        return _Plan(in_shape, pre, channel, None, [], channel, (c, h, w))
    return _Plan(in_shape, pre, mid_channel, mixing, post, channel, (c, h, w))


def _receptive_field(kernels: list[_Kernel]) -> Pair:
    """Width of the source window one output of the chain sees, per axis (full kernel extents)."""
    field, jump = [1, 1], [1, 1]
    for kernel in kernels:
        for axis in range(2):
            field[axis] += (kernel.size[axis] - 1) * kernel.dilation[axis] * jump[axis]
            jump[axis] *= kernel.stride[axis]
    return tuple(field)


def _propagate(labels: torch.Tensor, kernel: _Kernel) -> torch.Tensor:
    """``[N, H, W] -> [N, H', W']``: the largest label among the positions each output reaches through
    the kernel's non-zero offsets (0 where none)."""
    (ph, pw), (sh, sw), (dh, dw) = kernel.padding, kernel.stride, kernel.dilation
    h_out, w_out = _out_hw(labels.shape[1:], kernel)
    padded = F.pad(labels, (pw, pw, ph, ph))
    out = torch.zeros((labels.shape[0], h_out, w_out), dtype=labels.dtype)
    for i, j in kernel.offsets():
        window = padded[:, i * dh: i * dh + sh * (h_out - 1) + 1: sh, j * dw: j * dw + sw * (w_out - 1) + 1: sw]
        torch.maximum(out, window, out=out)
    return out


def spatial_counts(kernels: list[_Kernel], hw: Pair) -> tuple[np.ndarray, np.ndarray]:
    """For a chain of single-channel kernels on an ``hw`` map: ``(out [H, W], in [H', W'])``, the
    number of output positions each input position reaches and of input positions reaching each output."""
    h, w = hw
    if h * w >= 2**31 - 1:
        raise _Unsupported
    field = _receptive_field(kernels)
    spacing = (min(field[0], h), min(field[1], w))
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    phase = torch.as_tensor((ys % spacing[0]) * spacing[1] + xs % spacing[1])
    label = torch.arange(1, h * w + 1, dtype=torch.int32).reshape(h, w)
    n_probes = spacing[0] * spacing[1]
    sizes = [hw]
    for kernel in kernels:
        sizes.append(_out_hw(sizes[-1], kernel))
    batch = max(1, _PROBE_ELEMENTS // max(a * b for a, b in sizes))
    fan_out = np.zeros(h * w + 1, np.int64)
    fan_in = torch.zeros(sizes[-1], dtype=torch.int64)
    for start in range(0, n_probes, batch):
        probes = torch.arange(start, min(start + batch, n_probes))
        labels = torch.where(phase[None] == probes[:, None, None], label[None], 0)
        for kernel in kernels:
            labels = _propagate(labels, kernel)
        reached = labels > 0
        fan_in += reached.sum(0)
        fan_out += np.bincount(labels[reached].numpy(), minlength=h * w + 1)
    return fan_out[1:].reshape(h, w), fan_in.numpy()


def _mask_ids(support: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """``support [A, B, kh, kw]`` bool -> (ids [A, B] of each kernel support, the distinct supports)."""
    a, b, kh, kw = support.shape
    if support.all():
        return np.zeros((a, b), np.int64), [np.ones((kh, kw), bool)]
    flat = support.reshape(a * b, kh * kw)
    if kh * kw == 1:
        if not flat.any():
            return np.zeros((a, b), np.int64), [np.zeros((1, 1), bool)]
        return flat.reshape(a, b).astype(np.int64), [np.zeros((1, 1), bool), np.ones((1, 1), bool)]
    if kh * kw <= 16:  # small kernels: the support as a number, distinct values by counting (no sort)
        code = flat.astype(np.int32) @ (1 << np.arange(kh * kw, dtype=np.int32))
        present = np.nonzero(np.bincount(code, minlength=1 << (kh * kw)))[0]
        lookup = np.zeros(1 << (kh * kw), np.int64)
        lookup[present] = np.arange(len(present))
        bits = (present[:, None] >> np.arange(kh * kw)) & 1
        return lookup[code].reshape(a, b), list(bits.astype(bool).reshape(-1, kh, kw))
    packed = np.packbits(flat, axis=1)
    width = -(-packed.shape[1] // 8) * 8
    packed = np.pad(packed, ((0, 0), (0, width - packed.shape[1]))).view(np.uint64)
    if packed.shape[1] == 1:
        _, first, ids = np.unique(packed[:, 0], return_index=True, return_inverse=True)
    else:
        _, first, ids = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    return ids.reshape(a, b), [flat[i].reshape(kh, kw) for i in first]


def _stage_keys(stages: list[tuple[_Stage, np.ndarray]], n: int) -> tuple[np.ndarray, list[tuple[_Kernel, ...]]]:
    """Per tracked channel, the id of its tuple of kernels through ``stages`` (and the distinct tuples)."""
    chains: dict[tuple[_Kernel, ...], int] = {}
    ids = np.zeros(n, np.int64)
    for k in range(n):
        chain = tuple(stage.kernels[0 if stage.index is None or at[k] < 0 else stage.index[at[k]]]
                      for stage, at in stages)
        ids[k] = chains.setdefault(chain, len(chains))
    return ids, list(chains)


def reach_counts(ops: list[Op], source_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(fan_out, fan_in)`` int64 arrays shaped like the source and the chain's output: the structural
    synapse counts of the chain, or None when the chain is outside what this count covers (see the
    module docstring) or needs more than :data:`MAX_CHAINS` distinct spatial chains."""
    try:
        plan = _plan(ops, source_shape)
    except _Unsupported:
        return None
    c_src, h, w = plan.in_shape
    pre_ids, pre_chains = _stage_keys(plan.pre, c_src)
    fan_out = np.zeros(plan.in_shape, np.int64)
    fan_in = np.zeros(plan.out_shape, np.int64)
    cache: dict[tuple[_Kernel, ...], tuple[np.ndarray, np.ndarray]] = {}

    def counts(chain: tuple[_Kernel, ...]) -> tuple[np.ndarray, np.ndarray]:
        if chain not in cache:
            if len(cache) >= MAX_CHAINS:
                raise _Unsupported
            cache[chain] = spatial_counts(list(chain), (h, w))
        return cache[chain]

    alive = plan.mid_channel >= 0
    try:
        if plan.mixing is None:
            for source in np.nonzero(alive)[0]:
                out, inn = counts(pre_chains[pre_ids[source]])
                fan_out[source] = out
                fan_in[plan.out_channel[source]] += inn
            return fan_out, fan_in
        support, groups, stride, padding, dilation = plan.mixing
        post_ids, post_chains = _stage_keys(plan.post, support.shape[0])
        mask_ids, masks = _mask_ids(support)
        kernels = [_kernel(mask, stride, padding, dilation) for mask in masks]
        o_group, c_group = support.shape[0] // groups, support.shape[1]
        # mixing-op input channel -> source channel (slices and scales keep it one to one)
        source_of = np.full(c_group * groups, -1)
        source_of[plan.mid_channel[alive]] = np.nonzero(alive)[0]
        for g in range(groups):
            sources = source_of[g * c_group:(g + 1) * c_group]
            outputs = np.arange(g * o_group, (g + 1) * o_group)
            final = plan.out_channel[outputs]
            ids = mask_ids[outputs]
            for p in np.unique(pre_ids[sources[sources >= 0]]):
                columns = (sources >= 0) & (pre_ids[np.maximum(sources, 0)] == p)
                for q in np.unique(post_ids[outputs[final >= 0]]):
                    rows = (final >= 0) & (post_ids[outputs] == q)
                    if len(masks) == 1:  # one kernel support (dense weights): every pair has it
                        present = [0]
                    else:
                        block = ids[np.ix_(rows, columns)]
                        present = np.nonzero(np.bincount(block.reshape(-1), minlength=len(masks)))[0]
                    for u in present:
                        if not masks[u].any():
                            continue
                        out, inn = counts(pre_chains[p] + (kernels[u],) + post_chains[q])
                        if len(masks) == 1:
                            per_source = np.full(int(columns.sum()), int(rows.sum()))
                            per_target = np.full(int(rows.sum()), int(columns.sum()))
                        else:
                            hits = block == u
                            per_source, per_target = hits.sum(0), hits.sum(1)
                        fan_out[sources[columns]] += per_source[:, None, None] * out
                        np.add.at(fan_in, final[rows], per_target[:, None, None] * inn)
    except _Unsupported:
        return None
    return fan_out, fan_in
