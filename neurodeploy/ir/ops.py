"""Projection operators: the linear maps that carry a source population's spikes to a target
population's input current.

A projection is a chain of these operators applied in order to a tensor of shape ``[B, *src_shape]``.
Arrays are numpy (float32) so the IR stays backend-neutral; :mod:`neurodeploy.ir.torch_ops` evaluates
them with PyTorch. Every op knows its output shape and how to serialize itself (JSON parameters plus
named arrays).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from neurodeploy.errors import IRValidationError

Shape = tuple[int, ...]


def _whole(value, what: str, minimum: int) -> int:
    """``value`` as an int when it is a whole number of at least ``minimum`` (numpy integers and floats
    with no fractional part count; 1.5, True or "2" do not)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise IRValidationError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, numbers.Integral) or (math.isfinite(value) and float(value).is_integer()):
        number = int(value)
    else:
        raise IRValidationError(f"{what} must be a whole number, got {value!r}")
    if number < minimum:
        raise IRValidationError(f"{what} must be at least {minimum}, got {number}")
    return number


def _pair(value: int | tuple[int, int] | list[int], what: str = "value", minimum: int = 0) -> tuple[int, int]:
    """An int or a pair of ints as a pair; anything else (three values, 1.5, a string) is refused."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        number = _whole(value, what, minimum)
        return (number, number)
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        raise IRValidationError(f"{what} must be a whole number or a pair of them, got {value!r}")
    return (_whole(value[0], what, minimum), _whole(value[1], what, minimum))


def _weight(op: Op, array: np.ndarray, ndim: int) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.ndim != ndim:
        shape = getattr(array, "shape", None)
        raise IRValidationError(f"{op.kind} op: weight must be a {ndim}-d array, got shape {shape}")
    return array


@dataclass
class Op:
    """Base class. Subclasses set ``kind`` and implement ``out_shape``."""

    kind: ClassVar[str] = "op"
    #: True for ops that mix neurons through a weight array (Dense, Conv2d).
    weighted: ClassVar[bool] = False

    def out_shape(self, in_shape: Shape) -> Shape:
        raise NotImplementedError

    def params(self) -> dict:
        """JSON-serializable parameters (no arrays)."""
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        """Named arrays stored in the ``.npz`` part of the IR file."""
        return {}


@dataclass
class Dense(Op):
    """``y = x @ W.T``; ``weight`` has shape ``[out_features, in_features]``; input ``[B, in]``."""

    weight: np.ndarray
    kind: ClassVar[str] = "dense"
    weighted: ClassVar[bool] = True

    def out_shape(self, in_shape: Shape) -> Shape:
        _weight(self, self.weight, 2)
        if len(in_shape) != 1 or in_shape[0] != self.weight.shape[1]:
            raise IRValidationError(
                f"dense op expects input shape ({self.weight.shape[1]},), got {in_shape}"
            )
        return (int(self.weight.shape[0]),)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight}


@dataclass
class Conv2d(Op):
    """2-D convolution; ``weight`` is ``[C_out, C_in / groups, kh, kw]``; input ``[B, C_in, H, W]``."""

    weight: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    kind: ClassVar[str] = "conv2d"
    weighted: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.stride = _pair(self.stride, "conv2d stride", 1)
        self.padding = _pair(self.padding, "conv2d padding", 0)
        self.dilation = _pair(self.dilation, "conv2d dilation", 1)
        self.groups = _whole(self.groups, "conv2d groups", 1)

    def out_shape(self, in_shape: Shape) -> Shape:
        c_out, c_in_g, kh, kw = _weight(self, self.weight, 4).shape
        if min(c_out, c_in_g, kh, kw) < 1:
            raise IRValidationError(f"conv2d: weight shape {self.weight.shape} has an empty dimension")
        if len(in_shape) != 3 or in_shape[0] != c_in_g * self.groups:
            raise IRValidationError(
                f"conv2d op expects input with {c_in_g * self.groups} channels (C, H, W), got {in_shape}"
            )
        if c_out % self.groups:
            raise IRValidationError(f"conv2d: {c_out} output channels not divisible by groups={self.groups}")
        h = (in_shape[1] + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        w = (in_shape[2] + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        if h < 1 or w < 1:
            raise IRValidationError(f"conv2d: input {in_shape} too small for kernel {(kh, kw)}")
        return (int(c_out), int(h), int(w))

    def params(self) -> dict:
        return {
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight}


@dataclass
class AvgPool2d(Op):
    """Average pooling (zero padding counted in the divisor, floor mode); input ``[B, C, H, W]``."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    kind: ClassVar[str] = "avgpool2d"

    def __post_init__(self) -> None:
        self.kernel = _pair(self.kernel, "avgpool2d kernel", 1)
        self.stride = _pair(self.stride, "avgpool2d stride", 1)
        self.padding = _pair(self.padding, "avgpool2d padding", 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel, strict=True)):
            raise IRValidationError(f"avgpool2d: padding {self.padding} exceeds half the kernel {self.kernel}")

    @property
    def overlapping(self) -> bool:
        """True when windows overlap (a neuron reaches several pooled outputs)."""
        return self.stride[0] < self.kernel[0] or self.stride[1] < self.kernel[1]

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise IRValidationError(f"avgpool2d expects (C, H, W) input, got {in_shape}")
        h = (in_shape[1] + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        w = (in_shape[2] + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        if h < 1 or w < 1:
            raise IRValidationError(f"avgpool2d: input {in_shape} too small for kernel {self.kernel}")
        return (in_shape[0], int(h), int(w))

    def params(self) -> dict:
        return {"kernel": list(self.kernel), "stride": list(self.stride), "padding": list(self.padding)}


@dataclass
class Conv1d(Op):
    """1-D convolution; ``weight`` is ``[C_out, C_in / groups, k]``; input ``[B, C_in, L]``."""

    weight: np.ndarray
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    kind: ClassVar[str] = "conv1d"
    weighted: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.stride = _whole(self.stride, "conv1d stride", 1)
        self.padding = _whole(self.padding, "conv1d padding", 0)
        self.dilation = _whole(self.dilation, "conv1d dilation", 1)
        self.groups = _whole(self.groups, "conv1d groups", 1)

    def out_shape(self, in_shape: Shape) -> Shape:
        c_out, c_in_g, k = _weight(self, self.weight, 3).shape
        if min(c_out, c_in_g, k) < 1:
            raise IRValidationError(f"conv1d: weight shape {self.weight.shape} has an empty dimension")
        if len(in_shape) != 2 or in_shape[0] != c_in_g * self.groups:
            raise IRValidationError(
                f"conv1d op expects input with {c_in_g * self.groups} channels (C, L), got {in_shape}")
        if c_out % self.groups:
            raise IRValidationError(f"conv1d: {c_out} output channels not divisible by groups={self.groups}")
        length = (in_shape[1] + 2 * self.padding - self.dilation * (k - 1) - 1) // self.stride + 1
        if length < 1:
            raise IRValidationError(f"conv1d: input {in_shape} too small for kernel {k}")
        return (int(c_out), int(length))

    def params(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight}


@dataclass
class AvgPool1d(Op):
    """1-D average pooling (zero padding counted in the divisor, floor mode); input ``[B, C, L]``."""

    kernel: int
    stride: int
    padding: int = 0
    kind: ClassVar[str] = "avgpool1d"

    def __post_init__(self) -> None:
        self.kernel = _whole(self.kernel, "avgpool1d kernel", 1)
        self.stride = _whole(self.stride, "avgpool1d stride", 1)
        self.padding = _whole(self.padding, "avgpool1d padding", 0)
        if 2 * self.padding > self.kernel:
            raise IRValidationError(f"avgpool1d: padding {self.padding} exceeds half the kernel {self.kernel}")

    @property
    def overlapping(self) -> bool:
        """True when windows overlap (a neuron reaches several pooled outputs)."""
        return self.stride < self.kernel

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 2:
            raise IRValidationError(f"avgpool1d expects (C, L) input, got {in_shape}")
        length = (in_shape[1] + 2 * self.padding - self.kernel) // self.stride + 1
        if length < 1:
            raise IRValidationError(f"avgpool1d: input {in_shape} too small for kernel {self.kernel}")
        return (in_shape[0], int(length))

    def params(self) -> dict:
        return {"kernel": self.kernel, "stride": self.stride, "padding": self.padding}


@dataclass
class ChannelSlice(Op):
    """Places the input's C channels at channels ``[offset, offset + C)`` of an output with ``channels``
    channels, zeros elsewhere (channel = first non-batch axis): one part of a concatenation along the
    channel axis. The population made from a concatenation receives one projection per part."""

    offset: int
    channels: int
    kind: ClassVar[str] = "channel_slice"

    def __post_init__(self) -> None:
        self.offset = _whole(self.offset, "channel_slice offset", 0)
        self.channels = _whole(self.channels, "channel_slice channels", 1)

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) < 1 or self.offset + in_shape[0] > self.channels:
            raise IRValidationError(f"channel_slice: {in_shape[:1]} channels at offset {self.offset} do not fit "
                                    f"{self.channels} channels")
        return (self.channels, *in_shape[1:])

    def params(self) -> dict:
        return {"offset": self.offset, "channels": self.channels}


@dataclass
class Flatten(Op):
    """Flattens all non-batch dimensions (C-order, as ``torch.flatten(x, 1)``)."""

    kind: ClassVar[str] = "flatten"

    def out_shape(self, in_shape: Shape) -> Shape:
        return (int(np.prod(in_shape)),)


@dataclass
class Identity(Op):
    """Passes the input through unchanged (e.g. a residual shortcut)."""

    kind: ClassVar[str] = "identity"

    def out_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)


@dataclass
class Scale(Op):
    """Multiplies by a scalar or a per-channel vector (channel = first non-batch dimension)."""

    factor: np.ndarray = field(default_factory=lambda: np.ones((), np.float32))
    kind: ClassVar[str] = "scale"

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool | np.bool_) or (isinstance(self.factor, np.ndarray) and self.factor.dtype.kind
                                                          not in "fiu"):
            raise IRValidationError(f"scale factor must be numeric, got {self.factor!r:.60}")
        self.factor = np.asarray(self.factor, dtype=np.float32)

    def out_shape(self, in_shape: Shape) -> Shape:
        if self.factor.ndim > 1 or (self.factor.ndim == 1 and self.factor.shape[0] != in_shape[0]):
            raise IRValidationError(
                f"scale factor of shape {self.factor.shape} does not match input channels of {in_shape}"
            )
        return tuple(in_shape)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"factor": self.factor}


@dataclass
class SpatialLinear(Op):
    """The same linear map of the spatial axes for every channel, separable by axis: for an input
    ``[B, C, H, W]``, ``y[b, c] = rows @ x[b, c] @ cols.T`` with ``rows`` ``[H_out, H]`` and ``cols``
    ``[W_out, W]``; for ``[B, C, L]``, ``y[b, c] = rows @ x[b, c]`` (``cols`` is None). Every average
    pooling is one (adaptive to any size, ``ceil_mode``, ``count_include_pad``, ``divisor_override``: the
    window of an output is a product of a row interval and a column interval, its divisor a product of
    two lengths), as are zero padding and strided selection of the spatial axes."""

    rows: np.ndarray
    cols: np.ndarray | None = None
    kind: ClassVar[str] = "spatial_linear"

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if value is None and name == "cols":
                continue
            if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind != "f" or min(value.shape) < 1:
                raise IRValidationError(f"spatial_linear {name} must be a non-empty 2-d float array, got "
                                        f"{getattr(value, 'shape', value)!r:.60}")

    @property
    def overlapping(self) -> bool:
        """True when a position reaches several outputs (several non-zeros in a column of ``rows`` or
        ``cols``)."""
        return any(int((m != 0).sum(0).max()) > 1 for m in (self.rows, self.cols) if m is not None)

    def out_shape(self, in_shape: Shape) -> Shape:
        matrices = [m for m in (self.rows, self.cols) if m is not None]
        if len(in_shape) != 1 + len(matrices) or any(m.shape[1] != s for m, s in zip(matrices, in_shape[1:],
                                                                                           strict=True)):
            raise IRValidationError(f"spatial_linear with matrices {[m.shape for m in matrices]} expects input "
                                    f"(C, {', '.join(str(m.shape[1]) for m in matrices)}), got {in_shape}")
        return (in_shape[0], *(int(m.shape[0]) for m in matrices))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"rows": self.rows} if self.cols is None else {"rows": self.rows, "cols": self.cols}


@dataclass
class Gather(Op):
    """Output neuron ``i`` takes input neuron ``index[i]`` (C-order flat index over the non-batch axes),
    or 0 where ``index[i]`` is -1; the output shape is ``index.shape``. Every static rearrangement is one:
    reshape, view, transpose, permute, squeeze, channel shuffle, indexing and slicing with static indices,
    zero padding (consecutive gathers compose into one)."""

    index: np.ndarray
    kind: ClassVar[str] = "gather"

    def __post_init__(self) -> None:
        if not isinstance(self.index, np.ndarray) or self.index.dtype.kind not in "iu" or self.index.ndim < 1 \
                or self.index.size < 1:
            raise IRValidationError(f"gather index must be a non-empty integer array, got "
                                    f"{getattr(self.index, 'dtype', self.index)!r:.60}")
        if int(self.index.min()) < -1:
            raise IRValidationError(f"gather index holds {int(self.index.min())}; it takes -1 (zero) or an input index")

    @property
    def overlapping(self) -> bool:
        """True when an input neuron reaches several outputs."""
        used = self.index[self.index >= 0]
        return len(np.unique(used)) < used.size

    def out_shape(self, in_shape: Shape) -> Shape:
        if int(self.index.max()) >= int(np.prod(in_shape)):
            raise IRValidationError(f"gather index {int(self.index.max())} is outside an input of shape {in_shape}")
        return tuple(int(s) for s in self.index.shape)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"index": self.index}


OP_TYPES: dict[str, type[Op]] = {
    cls.kind: cls for cls in (Dense, Conv2d, AvgPool2d, Flatten, Identity, Scale, Conv1d, AvgPool1d, ChannelSlice,
                                   SpatialLinear, Gather)
}


def chain_out_shape(ops: list[Op], in_shape: Shape) -> Shape:
    """Output shape of a chain of ops applied to ``in_shape`` (batch dimension excluded)."""
    shape = tuple(in_shape)
    for op in ops:
        shape = op.out_shape(shape)
    return shape


def op_from_parts(kind: str, params: dict, arrays: dict[str, np.ndarray]) -> Op:
    """Rebuilds an op from its serialized kind, parameters and arrays."""
    if kind not in OP_TYPES:
        raise IRValidationError(f"unknown op kind {kind!r}; known: {sorted(OP_TYPES)}")
    cls = OP_TYPES[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((set(params) | set(arrays)) - fields)
    if unknown or set(params) & set(arrays):
        raise IRValidationError(f"{kind} op: unknown or repeated parameters {unknown}; it takes {sorted(fields)}")
    return cls(**params, **arrays)
