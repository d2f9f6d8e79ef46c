"""Projection operators: the linear maps that carry a source population's spikes to a target
population's input current.

A projection is a chain of these operators applied in order to a tensor of shape ``[B, *src_shape]``.
Arrays are numpy (float32) so the IR stays backend-neutral; :mod:`neurodeploy.ir.torch_ops` evaluates
them with PyTorch. Every op knows its output shape and how to serialize itself (JSON parameters plus
named arrays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from neurodeploy.errors import IRValidationError

Shape = tuple[int, ...]


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


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
        self.stride = _pair(self.stride)
        self.padding = _pair(self.padding)
        self.dilation = _pair(self.dilation)
        self.groups = int(self.groups)

    def out_shape(self, in_shape: Shape) -> Shape:
        c_out, c_in_g, kh, kw = self.weight.shape
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
        self.kernel = _pair(self.kernel)
        self.stride = _pair(self.stride)
        self.padding = _pair(self.padding)

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
        self.factor = np.asarray(self.factor, dtype=np.float32)

    def out_shape(self, in_shape: Shape) -> Shape:
        if self.factor.ndim > 1 or (self.factor.ndim == 1 and self.factor.shape[0] != in_shape[0]):
            raise IRValidationError(
                f"scale factor of shape {self.factor.shape} does not match input channels of {in_shape}"
            )
        return tuple(in_shape)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"factor": self.factor}


OP_TYPES: dict[str, type[Op]] = {
    cls.kind: cls for cls in (Dense, Conv2d, AvgPool2d, Flatten, Identity, Scale)
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
    return cls(**params, **arrays)
