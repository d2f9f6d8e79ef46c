"""torch.fx walk: a PyTorch module becomes an (unnormalized) IR network.

Every traced value is an affine expression of spiking populations: a list of terms (source
population + op chain) plus a bias field. Linear layers, 2-D and 1-D convolutions and pooling, spatial
means and sums, flattening, batch norm and constant factors extend the op chains; ``+`` and ``-`` join
two expressions (residual networks), a concatenation along channels joins its parts each placed in its
channel slice, and constant shifts add to the bias field (a shift before a zero-padded convolution
becomes a bias map that is smaller at the borders, so input normalization folds exactly); a ReLU or a
clipped ReLU turns an expression into a new hidden population whose incoming projections are the terms
(terms from one source that differ only in one weighted op's weights are merged into one projection).
With the "spiking" strategy a max pooling becomes a tree of ReLU populations, max(a, b) = b + relu(a - b).
The model output becomes the non-spiking output population; a softmax right before it is dropped and
said once in ``notes``. Values that depend on no population (buffers, constants reshaped in
``forward``) are computed directly. A refused op raises its advice from
:data:`neurodeploy.convert.refusals.REFUSALS`.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.convert.fold import fold_scales
from neurodeploy.convert.linear_maps import adaptive_matrix, average_matrix, padding_matrix, pooled_size
from neurodeploy.convert.refusals import REFUSALS, refusal, unlisted
from neurodeploy.errors import UnsupportedOperationError
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import (
    AvgPool1d,
    AvgPool2d,
    ChannelSlice,
    Conv1d,
    Conv2d,
    Dense,
    Flatten,
    Gather,
    Op,
    Scale,
    SpatialLinear,
    chain_out_shape,
)
from neurodeploy.ir.population import NeuronSpec, Population
from neurodeploy.ir.torch_ops import compile_chain, compile_op
from neurodeploy.train.quantized import QuantReLU

#: normalizations folded into the layer before them: an activation after one is named after that layer
NORMALIZATIONS = (nn.BatchNorm1d, nn.BatchNorm2d)
RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
DROPOUT_FUNCTIONS = {F.dropout, F.dropout2d, F.dropout1d}
SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
#: binary arithmetic -> "add" | "sub" | "mul" | "div"
ARITHMETIC = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    operator.truediv: "div", operator.itruediv: "div", torch.div: "div",
}
METHOD_ARITHMETIC = {"add": "add", "add_": "add", "__add__": "add", "sub": "sub", "sub_": "sub",
                     "mul": "mul", "mul_": "mul", "div": "div", "div_": "div"}
#: clamp-like op -> (names of its arguments after the input, the argument values that make it a ReLU)
_CLAMP = (("min", "max"), {"min": 0, "max": None})
_CLAMP_MIN = (("min",), {"min": 0})
_THRESHOLD = (("threshold", "value"), {"threshold": 0, "value": 0})
CLAMP_FUNCTIONS = {torch.clamp: _CLAMP, torch.clip: _CLAMP, torch.clamp_min: _CLAMP_MIN,
                   F.threshold: _THRESHOLD, F.threshold_: _THRESHOLD}
CLAMP_METHODS = {"clamp": _CLAMP, "clamp_": _CLAMP, "clip": _CLAMP, "clip_": _CLAMP,
                 "clamp_min": _CLAMP_MIN, "clamp_min_": _CLAMP_MIN}
#: clipped ReLUs min(max(x, 0), a): function -> (names of its arguments after the input, their defaults)
CLIP_FUNCTIONS = {F.relu6: ((), {}), F.hardtanh: (("min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0}),
                  F.hardtanh_: (("min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0})}
MEAN_FUNCTIONS = {torch.mean: "mean", torch.sum: "sum"}
CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
#: max pooling: function or module class -> number of spatial axes, adaptive
MAX_POOL_FUNCTIONS = {F.max_pool2d: (2, False), F.max_pool1d: (1, False), F.adaptive_max_pool2d: (2, True),
                      F.adaptive_max_pool1d: (1, True)}
MAX_POOL_MODULES = {nn.MaxPool2d: (2, False), nn.MaxPool1d: (1, False), nn.AdaptiveMaxPool2d: (2, True),
                    nn.AdaptiveMaxPool1d: (1, True)}
aten = torch.ops.aten
#: static rearrangements (linear maps that move, drop or zero-pad neurons): function -> its ``torch`` call;
#: they become :class:`Gather` ops (``FxConverter._rearrange``)
REARRANGE_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze, torch.chunk,
    torch.split, torch.narrow, torch.select, torch.movedim, torch.swapaxes, torch.unflatten, operator.getitem,
    aten.transpose.int, aten.permute.default, aten.slice.Tensor, aten.select.int, aten.squeeze.dim,
    aten.squeeze.dims, aten.squeeze.default, aten.unsqueeze.default, aten.split.Tensor,
    aten.split_with_sizes.default, aten.chunk.default, aten.narrow.default, aten.index.Tensor,
    aten.unflatten.int, aten.movedim.int,
}
REARRANGE_METHODS = {"view", "reshape", "flatten", "transpose", "permute", "squeeze", "unsqueeze", "chunk", "split",
                     "narrow", "select", "movedim", "swapaxes", "unflatten", "__getitem__", "t"}
#: zero padding: function -> (name of the padding argument, of the mode, of the value)
PAD_FUNCTIONS = {F.pad: ("pad", "mode", "value"), aten.constant_pad_nd.default: ("pad", None, "value"),
                 aten.pad.default: ("pad", "mode", "value")}
#: strategies for max pooling (``convert(..., max_pool=...)``)
MAX_POOL_STRATEGIES = ("avg", "spiking")


@dataclass
class Term:
    source: str
    ops: list[Op] = field(default_factory=list)


@dataclass
class Affine:
    """A traced tensor: ``sum_k chain_k(source_k) + bias``; ``shape`` excludes the batch axis."""

    terms: list[Term]
    shape: tuple[int, ...]
    bias: torch.Tensor | None = None  # float64, shape == self.shape

    def apply(self, op: Op) -> Affine:
        shape = op.out_shape(self.shape)
        bias = None
        if self.bias is not None:
            bias = compile_op(op, dtype=torch.float64)(self.bias[None])[0]
        return Affine([Term(t.source, [*t.ops, op]) for t in self.terms], shape, bias)

    def shifted(self, field_: torch.Tensor) -> Affine:
        """``self + field_`` for a constant ``field_`` of shape ``self.shape`` (float64)."""
        return Affine(self.terms, self.shape, field_.clone() if self.bias is None else self.bias + field_)

    def add_bias(self, per_channel: torch.Tensor) -> Affine:
        """``self + b`` for a per-channel ``b`` of shape ``[C]`` (channel = first axis of ``shape``)."""
        view = (-1,) + (1,) * (len(self.shape) - 1)
        return self.shifted(per_channel.to(torch.float64).reshape(view).expand(self.shape))


class _BatchSize:
    """Stands for ``x.size(0)`` / ``x.shape[0]`` in traced reshapes."""


def _refuse(node: torch.fx.Node, key: str, what: str | None = None) -> UnsupportedOperationError:
    """The refusal of table entry ``key`` at ``node``; ``what`` describes the op met (default: ``key``)."""
    return refusal(what or key, node.name, key)


def _refuse_op(node: torch.fx.Node, key: str | None, what: str, args: list) -> UnsupportedOperationError:
    """Refuses an op named ``key``: its table entry, else the advice for tensors used directly in
    ``forward()`` when one is an argument, else the list of supported operations."""
    if key in REFUSALS:
        return refusal(what, node.name, key)
    if _contains(args, torch.Tensor):
        return refusal(what, node.name, "parameter or buffer used directly")
    return unlisted(what, node.name)


def _contains(value, kinds) -> bool:
    """Whether ``value`` (possibly nested in tuples, lists and dicts) holds an instance of ``kinds``."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return any(_contains(v, kinds) for v in value)
    return isinstance(value, kinds)


def _function_key(fn) -> str | None:
    """``F.name``, ``torch.name`` or ``operator.name`` when ``fn`` is that public function."""
    name = getattr(fn, "__name__", "").lstrip("_")  # F.threshold is named _threshold
    spaces = (("F", F), ("torch", torch), ("operator", operator))
    return next((f"{prefix}.{name}" for prefix, space in spaces if getattr(space, name, None) is fn), None)


def _is_normalize(module: nn.Module) -> bool:
    """A torchvision-style ``Normalize`` (``(x - mean) / std`` per channel), recognised by name."""
    return type(module).__name__ == "Normalize" and hasattr(module, "mean") and hasattr(module, "std")


def _constant(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def _broadcasts(shape: tuple[int, ...], full: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to ``full`` without enlarging it."""
    return len(shape) <= len(full) and all(s in (1, f) for s, f in zip(reversed(shape), reversed(full), strict=False))


def _matches(value, expected: float | None) -> bool:
    return value is None if expected is None else isinstance(value, (int, float)) and value == expected


def _with_batch(value, size: int):
    """``value`` (nested in tuples, lists and dicts) with every batch size stand-in replaced by ``size``."""
    if isinstance(value, _BatchSize):
        return size
    if isinstance(value, dict):
        return {k: _with_batch(v, size) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_with_batch(v, size) for v in value)
    return value


def _as_ints(value, n: int) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints as a tuple of ``n`` ints."""
    return (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)


def _dims(dim, ndim: int) -> tuple[int, ...] | None:
    """Axes ``dim`` (an int or a sequence, negative allowed) of a tensor with ``ndim`` axes, batch included,
    as sorted non-negative ints; None for ``dim=None`` (every axis)."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted({int(d) % ndim for d in dims}))


class _Tracer(torch.fx.Tracer):
    """Keeps quantized activations and ``Normalize`` modules as single graph nodes (their forward has
    data-dependent code or checks that tracing cannot pass)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, QuantReLU) or _is_normalize(m) or super().is_leaf_module(m, module_qualified_name)


class FxConverter:
    """Builds the IR of ``module`` for inputs of shape ``input_shape`` (no batch axis).

    ``quantizers`` maps each population made from a ``QuantReLU`` to that module (for QCFS/QFFS);
    ``notes`` lists what the conversion changed without changing predictions (a dropped softmax).
    ``max_pool``: None (max pooling is refused) or "spiking" (an exact max built from ReLU populations,
    max(a, b) = b + relu(a - b)); the "avg" strategy rewrites the model before the walk
    (:func:`neurodeploy.convert.max_pool.replace_max_pooling`). ``derived`` lists populations whose ANN
    activation is not a graph node's output: (graph node, function of that node's output giving the
    activations, population names)."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], max_pool: str | None = None):
        try:
            graph = _Tracer().trace(module)
            self.graph_module = torch.fx.GraphModule(module, graph)
        except Exception as err:  # fx raises many types on untraceable code
            raise UnsupportedOperationError(
                f"torch.fx could not trace {type(module).__name__} ({err}): {REFUSALS['data-dependent control flow']}"
            ) from None
        self.modules = dict(self.graph_module.named_modules())
        self.input_shape = tuple(input_shape)
        self.network = Network()
        #: population name -> fx node whose output holds that population's ANN activation
        self.activation_nodes: dict[str, str] = {}
        self.quantizers: dict[str, QuantReLU] = {}
        self.notes: list[str] = []
        self.max_pool = max_pool
        self.derived: list[tuple[str, Callable[[torch.Tensor], list[torch.Tensor]], list[str]]] = []

    def run(self) -> Network:
        values: dict[str, object] = {}
        for node in self.graph_module.graph.nodes:
            values[node.name] = self._visit(node, values)
        return self.network

    def _arg(self, values: dict, arg):
        if isinstance(arg, torch.fx.Node):
            return values[arg.name]
        if isinstance(arg, (tuple, list)):
            return type(arg)(self._arg(values, a) for a in arg)
        if isinstance(arg, slice):  # x[:, :n] with n computed from static sizes
            return slice(*(self._arg(values, a) for a in (arg.start, arg.stop, arg.step)))
        return arg

    def _visit(self, node: torch.fx.Node, values: dict):
        args = [self._arg(values, a) for a in node.args]
        kwargs = {k: self._arg(values, v) for k, v in node.kwargs.items()}
        if node.op == "placeholder":
            if self.network.populations:
                raise _refuse(node, "second model input")
            self.network.add_population(Population("input", self.input_shape, "input"))
            return Affine([Term("input")], self.input_shape)
        if node.op == "output":
            result = args[0]
            if not isinstance(result, Affine):
                raise _refuse(node, "model output that is not one tensor")
            self._make_population(node, result, role="output")
            return None
        if node.op == "get_attr":
            value = self.graph_module
            for part in node.target.split("."):
                value = getattr(value, part)
            return value.detach() if isinstance(value, torch.Tensor) else value
        if node.op == "call_function" and node.target is operator.getitem and isinstance(args[0], (tuple, list)):
            return args[0][args[1]]  # an item of x.shape, of x.size() or of the parts of a split
        if not _contains([args, kwargs], Affine):
            if not _contains([args, kwargs], _BatchSize):
                return self._evaluate(node, args, kwargs)
            what = f"{getattr(node.target, '__name__', node.target)} of the batch size"
            raise _refuse(node, "batch size used in arithmetic", what)
        if node.op == "call_module":
            return self._visit_module(node, self.modules[node.target], args)
        if node.op == "call_function":
            return self._visit_function(node, node.target, args, kwargs)
        return self._visit_method(node, node.target, args, kwargs)

    def _evaluate(self, node: torch.fx.Node, args: list, kwargs: dict):
        """Computes a node that depends on no population (e.g. a buffer reshaped in ``forward``)."""
        with torch.no_grad():
            if node.op == "call_module":
                return self.modules[node.target](*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return node.target(*args, **kwargs)

    # --- modules -------------------------------------------------------------------------------
    def _visit_module(self, node: torch.fx.Node, module: nn.Module, args: list):
        x = args[0]
        kind = type(module).__name__
        if isinstance(module, nn.ReLU):
            return self._relu(node, x)
        if isinstance(module, QuantReLU):
            out = self._relu(node, x)
            self.quantizers[out.terms[0].source] = module
            return out
        if isinstance(module, nn.Threshold):
            return self._clamp(node, "nn.Threshold", _THRESHOLD, [x, module.threshold, module.value], {})
        if isinstance(module, nn.Hardtanh):  # nn.ReLU6 included
            return self._clipped(node, f"nn.{kind}", x, module.min_val, module.max_val)
        if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
            return self._softmax(node, x, module.dim, kind)
        if _is_normalize(module):
            channel = (-1,) + (1,) * (len(x.shape) - 1)
            centered = self._arithmetic(node, "sub", x, _constant(module.mean).reshape(channel))
            return self._arithmetic(node, "div", centered, _constant(module.std).reshape(channel))
        if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)):
            return x
        if isinstance(module, nn.Linear):
            out = x.apply(Dense(module.weight.detach().double().numpy()))
            return out.add_bias(module.bias.detach()) if module.bias is not None else out
        if isinstance(module, (nn.Conv2d, nn.Conv1d)):
            return self._conv(node, module, x)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self._batch_norm(node, module, x)
        if isinstance(module, nn.AvgPool2d):
            return self._avg_pool(node, x, module.kernel_size, module.stride, module.padding,
                                  module.ceil_mode, module.count_include_pad, module.divisor_override)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return self._adaptive_pool(node, x, module.output_size)
        if isinstance(module, nn.AvgPool1d):
            return self._avg_pool(node, x, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                                  module.count_include_pad, None, n_axes=1)
        if isinstance(module, nn.AdaptiveAvgPool1d):
            return self._adaptive_pool(node, x, module.output_size)
        for cls, (n_axes, adaptive) in MAX_POOL_MODULES.items():
            if isinstance(module, cls):
                what = f"module {node.target!r} of type {kind}"
                if adaptive:
                    return self._adaptive_max_pool(node, x, n_axes, module.output_size, module.return_indices, what)
                return self._max_pool(node, x, n_axes, module.kernel_size, module.stride, module.padding,
                                      module.dilation, module.ceil_mode, module.return_indices, what)
        if isinstance(module, nn.Flatten):
            return self._rearrange(node, x, lambda t, n: module(t), f"module {node.target!r} of type {kind}")
        if isinstance(module, nn.Unflatten):
            return self._rearrange(node, x, lambda t, n: module(t), f"module {node.target!r} of type {kind}")
        if isinstance(module, (nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d)):
            return self._pad(node, x, module.padding, "constant", module.value,
                             f"module {node.target!r} of type {kind}")
        key = next((k for k in (f"nn.{c.__name__}" for c in type(module).__mro__) if k in REFUSALS), None)
        raise _refuse_op(node, key, f"module {node.target!r} of type {kind}", args)

    def _conv(self, node, module: nn.Conv2d | nn.Conv1d, x: Affine) -> Affine:
        kind = type(module).__name__
        if module.padding_mode != "zeros":
            raise _refuse(node, "convolution padding_mode other than 'zeros'",
                          f"nn.{kind} with padding_mode={module.padding_mode!r}")
        padding = module.padding
        if padding == "same":
            total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
            if any(t % 2 for t in total):
                raise _refuse(node, "asymmetric 'same' padding")
            padding = tuple(t // 2 for t in total)
        elif padding == "valid":
            padding = (0,) * len(module.kernel_size)
        weight = module.weight.detach().double().numpy()
        if isinstance(module, nn.Conv1d):
            op = Conv1d(weight, module.stride[0], padding[0], module.dilation[0], module.groups)
        else:
            op = Conv2d(weight, module.stride, padding, module.dilation, module.groups)
        out = x.apply(op)
        return out.add_bias(module.bias.detach()) if module.bias is not None else out

    def _batch_norm(self, node, module, x: Affine) -> Affine:
        if module.running_mean is None:
            raise _refuse(node, "batch norm without running statistics")
        std = torch.sqrt(module.running_var.double() + module.eps)
        gamma = module.weight.detach().double() if module.affine else torch.ones_like(std)
        beta = module.bias.detach().double() if module.affine else torch.zeros_like(std)
        factor = gamma / std
        out = x.apply(Scale(factor.numpy()))
        return out.add_bias(beta - module.running_mean.double() * factor)

    def _avg_pool(self, node, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override,
                  n_axes: int = 2):
        """Average pooling: an :class:`AvgPool2d` / :class:`AvgPool1d` op where it is one (floor mode, the
        padding counted or absent, no divisor override), else the same map as a :class:`SpatialLinear`
        (exact for every ``ceil_mode`` / ``count_include_pad`` / ``divisor_override``)."""
        kernel, padding = _as_ints(kernel, n_axes), _as_ints(padding, n_axes)
        stride = _as_ints(stride, n_axes) if stride else kernel
        if len(x.shape) != n_axes + 1:
            raise _refuse_op(node, None, f"{n_axes}-d average pooling of an activation of shape {x.shape}", [])
        sizes = x.shape[1:]
        plain = divisor_override is None and (count_include_pad or not any(padding)) and (
            not ceil_mode or all(pooled_size(n, k, s, p, 1, True) == pooled_size(n, k, s, p)
                                 for n, k, s, p in zip(sizes, kernel, stride, padding, strict=True)))
        if plain and all(2 * p <= k for p, k in zip(padding, kernel, strict=True)):
            return x.apply(AvgPool2d(kernel, stride, padding) if n_axes == 2
                           else AvgPool1d(kernel[0], stride[0], padding[0]))
        divide = divisor_override is None
        matrices = [average_matrix(n, k, s, p, bool(ceil_mode), bool(count_include_pad), divide)
                    for n, k, s, p in zip(sizes, kernel, stride, padding, strict=True)]
        if not divide:
            matrices[0] = matrices[0] / float(divisor_override)
        return x.apply(SpatialLinear(*matrices))

    def _adaptive_size(self, node, x: Affine, output_size, what: str) -> tuple[int, ...]:
        """The output size of an adaptive pooling of ``x`` (C, H, W) or (C, L) to ``output_size``."""
        n_axes = len(x.shape) - 1
        sizes = (output_size,) * n_axes if isinstance(output_size, int) or output_size is None else output_size
        out = tuple(x.shape[1 + i] if o is None else int(o) for i, o in enumerate(sizes))
        if n_axes not in (1, 2) or len(out) != n_axes:
            raise _refuse_op(node, None, f"{what} of an activation of shape {x.shape} to {output_size}", [])
        return out

    def _adaptive_pool(self, node, x: Affine, output_size) -> Affine:
        """Adaptive average pooling to any size: an average pooling op when the output divides the input,
        else the exact :class:`SpatialLinear` of PyTorch's windows (overlapping, or repeating an input
        position when the output is larger)."""
        out = self._adaptive_size(node, x, output_size, "adaptive average pooling")
        if all(s % o == 0 for s, o in zip(x.shape[1:], out, strict=True)):
            kernel = tuple(s // o for s, o in zip(x.shape[1:], out, strict=True))
            return x.apply(AvgPool2d(kernel, kernel) if len(kernel) == 2 else AvgPool1d(kernel[0], kernel[0]))
        return x.apply(SpatialLinear(*(adaptive_matrix(s, o) for s, o in zip(x.shape[1:], out, strict=True))))

    def _pad(self, node, x: Affine, pad, mode, value, what: str) -> Affine:
        """Zero padding of the last axes (``F.pad`` order: last axis first, (before, after) pairs) as a
        :class:`Gather`; other modes and values are refused."""
        if (mode or "constant") != "constant" or (value or 0) != 0:
            raise _refuse(node, "padding other than with zeros", f"{what} (mode={mode!r}, value={value})")
        pad = tuple(int(p) for p in (pad if isinstance(pad, (tuple, list)) else (pad,) * 2 * (len(x.shape) - 1)))
        return self._rearrange(node, x, lambda t, n: F.pad(t, pad, value=-1), what)

    def _rearrange(self, node, x: Affine, fn: Callable[[torch.Tensor, int], object], what: str):
        """A static rearrangement (view, reshape, transpose, permute, flatten, squeeze, indexing, slicing,
        chunk, split, zero padding): ``fn(indices, n)`` applied to the flat indices of a batch of ``n``
        items (n = 2 and 3; ``n`` stands for the batch size in its arguments) tells which input neuron each
        output neuron takes (-1: zero), so the result is a :class:`Gather` (a tuple of them for chunk and
        split). Refused when the batch axis does not stay the first axis and apart for both batch sizes."""
        numel = int(np.prod(x.shape))
        base = torch.arange(numel).reshape(x.shape)
        found = []
        for n in (2, 3):
            try:
                with torch.no_grad():
                    result = fn(torch.stack([base + k * numel for k in range(n)]), n)
            except (RuntimeError, IndexError, TypeError, ValueError) as err:
                raise _refuse(node, "rearrangement that mixes the batch axis", f"{what} ({err})") from None
            parts = list(result) if isinstance(result, (tuple, list)) else [result]
            for part in parts:
                first = part[0] if isinstance(part, torch.Tensor) and part.ndim > 1 and part.shape[0] == n else None
                if first is None or (first >= numel).any() or any(
                        not torch.equal(part[k], torch.where(first >= 0, first + k * numel, first)) for k in range(n)):
                    raise _refuse(node, "rearrangement that mixes the batch axis", what)
            found.append([part[0] for part in parts])
        if len(found[0]) != len(found[1]) or any(not torch.equal(a, b) for a, b in zip(*found, strict=True)):
            raise _refuse(node, "rearrangement that mixes the batch axis", what)
        gathered = [x.apply(Gather(first.numpy().astype(np.int64))) for first in found[0]]
        return type(result)(gathered) if isinstance(result, (tuple, list)) else gathered[0]

    # --- max pooling (strategy "spiking") -------------------------------------------------------
    def _adaptive_max_pool(self, node, x: Affine, n_axes: int, output_size, return_indices, what: str) -> Affine:
        if self.max_pool is None:
            raise _refuse(node, "max pooling without a strategy", what)
        out = self._adaptive_size(node, x, output_size, "adaptive max pooling")
        if any(s % o for s, o in zip(x.shape[1:], out, strict=True)):
            raise _refuse(node, "adaptive max pooling to a size that does not divide the input",
                          f"{what} from {x.shape[1:]} to {out}")
        kernel = tuple(s // o for s, o in zip(x.shape[1:], out, strict=True))
        return self._max_pool(node, x, n_axes, kernel, kernel, 0, 1, False, return_indices, what)

    def _max_pool(self, node, x: Affine, n_axes: int, kernel, stride, padding, dilation, ceil_mode, return_indices,
                  what: str) -> Affine:
        """Max pooling as a tree of pairwise maxima max(a, b) = b + relu(a - b): each window position is
        selected by a one-hot depthwise convolution, each relu(a - b) is a hidden population, and the
        result is the affine sum of one selection and the populations on its path. Exact for rates in the
        limit of large T; it adds ceil(log2(window size)) populations in series. With ``ceil_mode`` the last,
        partial windows see zeros past the input's end, exact where padding is (a non-negative input)."""
        if self.max_pool is None:
            raise _refuse(node, "max pooling without a strategy", what)
        kernel = _as_ints(kernel, n_axes)
        stride = _as_ints(stride, n_axes) if stride else kernel
        padding, dilation = _as_ints(padding, n_axes), _as_ints(dilation, n_axes)
        signed = not (x.bias is None and all(not t.ops and self.network.populations[t.source].role == "hidden"
                                             for t in x.terms))
        if self.max_pool != "spiking" or return_indices or ((any(padding) or ceil_mode) and signed) \
                or len(x.shape) != n_axes + 1:
            raise _refuse(node, "max pooling that its strategy cannot express", what)
        channels, padded = x.shape[0], []
        if ceil_mode:
            extra = [max(0, (pooled_size(n, k, s, p, d, True) - 1) * s + (k - 1) * d + 1 - (n + 2 * p))
                     for n, k, s, p, d in zip(x.shape[1:], kernel, stride, padding, dilation, strict=True)]
            if any(extra):
                padded = [SpatialLinear(*(padding_matrix(n, 0, e) for n, e in zip(x.shape[1:], extra, strict=True)))]
                x = x.apply(padded[0])
        extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))

        def selection(offset: tuple[int, ...]) -> Op:
            weight = np.zeros((channels, 1, *extent))
            weight[(slice(None), 0, *(o * d for o, d in zip(offset, dilation, strict=True)))] = 1.0
            if n_axes == 2:
                return Conv2d(weight, stride, padding, (1, 1), channels)
            return Conv1d(weight, stride[0], padding[0], 1, channels)

        selections = [selection(o) for o in itertools.product(*(range(k) for k in kernel))]
        names: list[str] = []

        def combine(a: Affine, b: Affine) -> Affine:
            difference = self._add(node, a, b.apply(Scale(np.asarray(-1.0))))
            name = self._make_population(node, difference, role="hidden", name=f"{node.name}_max{len(names)}")
            names.append(name)
            return self._add(node, b, Affine([Term(name)], difference.shape))

        out = _max_tree([x.apply(op) for op in selections], combine)
        functions = [compile_chain([*padded, op]) for op in selections]

        def activations(value: torch.Tensor) -> list[torch.Tensor]:
            found: list[torch.Tensor] = []

            def combine_values(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                found.append(torch.relu(a - b))
                return b + found[-1]

            _max_tree([fn(value.float()) for fn in functions], combine_values)
            return found

        source = node.args[0] if node.args else next(iter(node.kwargs.values()))
        self.derived.append((source.name, activations, names))
        self.notes.append(f"max pooling {what} (graph node {node.name!r}) built from {len(names)} ReLU populations "
                          f"(strategy 'spiking': max(a, b) = b + relu(a - b))")
        return out

    # --- functions and methods -----------------------------------------------------------------
    def _visit_function(self, node, fn, args, kwargs):
        if fn in RELU_FUNCTIONS:
            return self._relu(node, args[0])
        if fn in ARITHMETIC and not kwargs:
            return self._arithmetic(node, ARITHMETIC[fn], args[0], args[1])
        if fn is operator.neg:
            return self._arithmetic(node, "mul", args[0], -1.0)
        if fn in CLAMP_FUNCTIONS:
            return self._clamp(node, _function_key(fn), CLAMP_FUNCTIONS[fn], args, kwargs)
        if fn in CLIP_FUNCTIONS:
            names, defaults = CLIP_FUNCTIONS[fn]
            params = defaults | dict(zip(names, args[1:], strict=False)) | {k: kwargs[k] for k in names if k in kwargs}
            low, high = (0.0, 6.0) if fn is F.relu6 else (params["min_val"], params["max_val"])
            return self._clipped(node, _function_key(fn), args[0], low, high)
        if fn in MEAN_FUNCTIONS:
            return self._reduce(node, MEAN_FUNCTIONS[fn], args, kwargs)
        if fn in CAT_FUNCTIONS:
            tensors = args[0] if args else kwargs.get("tensors")
            return self._cat(node, tensors, args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0)))
        if fn in MAX_POOL_FUNCTIONS:
            n_axes, adaptive = MAX_POOL_FUNCTIONS[fn]
            what = f"function {_function_key(fn)}"
            if adaptive:
                output_size = args[1] if len(args) > 1 else kwargs["output_size"]
                return self._adaptive_max_pool(node, args[0], n_axes, output_size,
                                               args[2] if len(args) > 2 else kwargs.get("return_indices", False), what)
            params = dict(zip(("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
                              args[1:], strict=False), **kwargs)
            return self._max_pool(node, args[0], n_axes, params["kernel_size"], params.get("stride"),
                                  params.get("padding", 0), params.get("dilation", 1), params.get("ceil_mode", False),
                                  params.get("return_indices", False), what)
        if fn in SOFTMAX_FUNCTIONS:
            return self._softmax(node, args[0], kwargs.get("dim", args[1] if len(args) > 1 else None), fn.__name__)
        if fn in REARRANGE_FUNCTIONS and isinstance(args[0], Affine):
            what = f"function {_function_key(fn) or fn}"
            return self._rearrange(node, args[0], lambda t, n: fn(t, *_with_batch(args[1:], n),
                                                                 **_with_batch(kwargs, n)), what)
        if fn in PAD_FUNCTIONS:
            names = PAD_FUNCTIONS[fn]
            params = dict(zip(names, args[1:], strict=False)) | kwargs
            return self._pad(node, args[0], params["pad"], params.get("mode"), params.get("value"),
                             f"function {_function_key(fn) or fn}")
        if fn in DROPOUT_FUNCTIONS:
            return args[0]
        if fn is F.avg_pool2d:
            params = dict(zip(("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                               "divisor_override"), args[1:], strict=False), **kwargs)
            return self._avg_pool(node, args[0], params["kernel_size"], params.get("stride"),
                                  params.get("padding", 0), params.get("ceil_mode", False),
                                  params.get("count_include_pad", True), params.get("divisor_override"))
        if fn in (F.adaptive_avg_pool2d, F.adaptive_avg_pool1d):
            return self._adaptive_pool(node, args[0], args[1] if len(args) > 1 else kwargs["output_size"])
        if fn is F.avg_pool1d:
            params = dict(zip(("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"), args[1:],
                              strict=False), **kwargs)
            return self._avg_pool(node, args[0], params["kernel_size"], params.get("stride"),
                                  params.get("padding", 0), params.get("ceil_mode", False),
                                  params.get("count_include_pad", True), None, n_axes=1)
        if fn is getattr and args[1] == "shape":
            return (_BatchSize(), *args[0].shape)
        if fn is getattr and args[1] == "ndim":
            return len(args[0].shape) + 1
        if isinstance(args[0], Affine) and self._returns_its_input(fn, args, kwargs):
            return args[0]  # e.g. torchvision's stochastic_depth in eval mode
        key = _function_key(fn)
        raise _refuse_op(node, key, f"function {key or getattr(fn, '__name__', fn)}", args)

    @staticmethod
    def _returns_its_input(fn, args: list, kwargs: dict) -> bool:
        """Whether ``fn`` returns its first argument itself (no copy, no change) for a probe tensor of that
        argument's shape, the other arguments as traced: a function that is the identity at inference."""
        if _contains([args[1:], kwargs], (Affine, _BatchSize)):
            return False
        probe = torch.zeros((1, *args[0].shape))
        try:
            with torch.no_grad():
                return fn(probe, *args[1:], **kwargs) is probe
        except Exception:  # an op that cannot take the probe is not the identity
            return False

    def _visit_method(self, node, method: str, args, kwargs):
        x = args[0]
        if method in ("relu", "relu_"):
            return self._relu(node, x)
        if method in METHOD_ARITHMETIC and not kwargs:
            return self._arithmetic(node, METHOD_ARITHMETIC[method], x, args[1])
        if method in ("neg", "neg_"):
            return self._arithmetic(node, "mul", x, -1.0)
        if method in CLAMP_METHODS:
            return self._clamp(node, f"Tensor.{method}", CLAMP_METHODS[method], args, kwargs)
        if method in ("softmax", "log_softmax"):
            return self._softmax(node, x, kwargs.get("dim", args[1] if len(args) > 1 else None), method)
        if method in ("mean", "sum"):
            return self._reduce(node, method, args, kwargs)
        if method == "size":
            sizes = (_BatchSize(), *x.shape)
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            return sizes if dim is None else sizes[dim]
        if method == "dim":
            return len(x.shape) + 1
        if method in REARRANGE_METHODS:
            return self._rearrange(node, x, lambda t, n: getattr(t, method)(*_with_batch(args[1:], n),
                                                                            **_with_batch(kwargs, n)),
                                   f"tensor method .{method}()")
        if method in ("contiguous", "clone"):
            return x
        raise _refuse_op(node, f"Tensor.{method}", f"tensor method .{method}()", args)

    def _arithmetic(self, node, kind: str, a, b) -> Affine:
        """``a + b``, ``a - b``, ``a * b`` or ``a / b`` where ``a`` or ``b`` (or both) is traced and the
        other may be a constant (a number or tensor broadcasting to ``(1, *shape)``)."""
        if kind == "sub":
            negated = self._arithmetic(node, "mul", b, -1.0) if isinstance(b, Affine) else -_constant(b)
            return self._arithmetic(node, "add", a, negated)
        if kind == "add" and isinstance(a, Affine) and isinstance(b, Affine):
            return self._add(node, a, b)
        if isinstance(b, Affine) and (kind == "div" or isinstance(a, Affine)):
            raise _refuse(node, "division by an activation" if kind == "div" else "product of two activations")
        x, c = (a, b) if isinstance(a, Affine) else (b, a)
        c = _constant(c)
        full = (1, *x.shape)
        if kind == "add":
            if not _broadcasts(tuple(c.shape), full):
                raise _refuse(node, "constant that does not broadcast to the activation",
                              f"adding a constant of shape {tuple(c.shape)} to an activation of shape {x.shape}")
            return x.shifted(c.expand(full)[0])
        aligned = (1,) * (len(full) - c.ndim) + tuple(c.shape)
        per_channel = _broadcasts(tuple(c.shape), full) and all(n == 1 for n in aligned[:1] + aligned[2:])
        if c.numel() > 1 and not per_channel:
            raise _refuse(node, "constant factor that is not scalar or per-channel",
                          f"a factor of shape {tuple(c.shape)} for an activation of shape {x.shape}")
        factor = c.reshape(-1).numpy() if c.numel() > 1 else c.reshape(()).numpy()
        return x.apply(Scale(1.0 / factor if kind == "div" else factor))

    def _clamp(self, node, name: str, spec: tuple, args: list, kwargs: dict) -> Affine:
        """A clamp or threshold (``spec`` from ``_CLAMP``...) that is a ReLU; others are refused."""
        names, relu_values = spec
        params = dict(zip(names, args[1:], strict=False)) | {k: kwargs[k] for k in names if k in kwargs}
        if all(_matches(params.get(k), v) for k, v in relu_values.items()):
            return self._relu(node, args[0])
        if "max" in names and _matches(params.get("min"), 0) and isinstance(params.get("max"), (int, float)):
            return self._clipped(node, name, args[0], 0, params["max"])
        described = ", ".join(f"{k}={v}" for k, v in params.items())
        raise _refuse(node, "clip other than a ReLU or a clipped ReLU", f"{name}({described})")

    def _clipped(self, node, name: str, x: Affine, low, high) -> Affine:
        """A clipped ReLU min(max(x, 0), a), a > 0 (nn.ReLU6, nn.Hardtanh(0, a), clamp(0, a)): a hidden
        population, as a ReLU. An IF neuron fires at most once per step, so it clips at its threshold,
        which normalization puts at the activation scale lambda of the clipped activation (<= a)."""
        if not (isinstance(low, (int, float)) and low == 0 and isinstance(high, (int, float)) and high > 0):
            raise _refuse(node, "clip other than a ReLU or a clipped ReLU", f"{name}(min={low}, max={high})")
        out = self._relu(node, x)
        self.network.populations[out.terms[0].source].metadata["clip"] = float(high)
        return out

    def _softmax(self, node, x: Affine, dim: int | None, name: str) -> Affine:
        """Drops a softmax / log_softmax over the class axis that is the model's last op (monotonic, so
        the argmax is unchanged); the output population then reads out the logits."""
        ndim = len(x.shape) + 1
        dim = (0 if ndim in (0, 1, 3) else 1) if dim is None else dim  # torch's implicit choice
        if dim % ndim != 1 or [user.op for user in node.users] != ["output"]:
            raise _refuse(node, "softmax that is not the last op over the class axis", f"{name} over dim {dim}")
        self.notes.append(f"dropped the final {name} (graph node {node.name!r}): the output population reads "
                          "out logits, whose argmax is the same")
        return x

    def _reduce(self, node, kind: str, args: list, kwargs: dict) -> Affine:
        """``mean`` / ``sum`` over every spatial axis (average pooling over the whole map, then a flatten
        unless ``keepdim``), or over some spatial axes with ``keepdim=True``; a sum is the mean times the
        window size."""
        x = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis"))
        keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
        ndim = len(x.shape) + 1
        dims, spatial = _dims(dim, ndim), tuple(range(2, ndim))
        what = f"{kind} over dim {dim}{' (keepdim)' if keepdim else ''} of an activation of shape {x.shape}"
        if (not dims or not spatial or len(spatial) > 2 or not set(dims) <= set(spatial)
                or (not keepdim and dims != spatial) or kwargs.get("dtype") not in (None, torch.float32)):
            raise _refuse(node, "mean or sum over axes other than the spatial ones", what)
        kernel = tuple(x.shape[d - 1] if d in dims else 1 for d in spatial)
        out = x.apply(AvgPool2d(kernel, kernel) if len(kernel) == 2 else AvgPool1d(kernel[0], kernel[0]))
        if kind == "sum":
            out = out.apply(Scale(np.asarray(float(np.prod(kernel)))))
        return out if keepdim else out.apply(Flatten())

    def _cat(self, node, tensors, dim) -> Affine:
        """Concatenation along the channel axis: each part goes to its channel slice of the result
        (``ChannelSlice``), and the parts add up; a population made from it receives one projection
        per part."""
        parts = list(tensors)
        if not all(isinstance(p, Affine) for p in parts):
            raise _refuse(node, "parameter or buffer used directly", "concatenation with a constant tensor")
        ndim = len(parts[0].shape) + 1
        shapes = [p.shape for p in parts]
        if not isinstance(dim, int) or dim % ndim != 1 or len({s[1:] for s in shapes}) != 1 \
                or len({len(s) for s in shapes}) != 1:
            raise _refuse(node, "concatenation along an axis other than the channels",
                          f"concatenation of shapes {shapes} along dim {dim}")
        total = sum(s[0] for s in shapes)
        out, offset = None, 0
        for part in parts:
            piece = part.apply(ChannelSlice(offset, total))
            offset += part.shape[0]
            out = piece if out is None else self._add(node, out, piece)
        return out

    def _add(self, node, a: Affine, b: Affine) -> Affine:
        if a.shape != b.shape:
            raise _refuse(node, "residual add of different shapes", f"adding shapes {a.shape} and {b.shape}")
        if a.bias is None and b.bias is None:
            bias = None
        else:
            bias = (a.bias if a.bias is not None else 0) + (b.bias if b.bias is not None else 0)
        return Affine(a.terms + b.terms, a.shape, bias)

    def _relu(self, node, x: Affine) -> Affine:
        name = self._make_population(node, x, role="hidden", name=self._module_path(node))
        self.activation_nodes[name] = node.name
        return Affine([Term(name)], x.shape)

    def _module_path(self, node: torch.fx.Node) -> str | None:
        """The user's name for the population an activation node makes: the module path of the activation module
        (``layer1.0.relu``) or, for a function (``F.relu(self.c2(x))``), of the layer it activates, through its
        normalization (``c2``); None where there is none, where the path is only a Sequential's indices (``3``:
        the graph's own name, ``relu_3``, says as much) or has a private part (``_conv1``: no user's name)."""
        source = node
        if node.op != "call_module":
            source = node.args[0] if node.args else None
            while isinstance(source, torch.fx.Node) and source.op == "call_module" and isinstance(
                    self.modules[source.target], NORMALIZATIONS):
                source = source.args[0]
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module"):
            return None
        path = str(source.target)
        parts = path.split(".")
        # a Sequential's indices say no more than the graph's name; "_..." are names the program's rebuild made
        return None if all(p.isdigit() for p in parts) or any(p.startswith("_") for p in parts) else path

    def _unique(self, name: str) -> str:
        """``name``, or ``name_1``, ``name_2``, ... where a population has it (an activation module called twice);
        "input" and "output" stay the roles' names."""
        taken = set(self.network.populations) | {"input", "output"}
        unique, k = name, 1
        while unique in taken:
            unique, k = f"{name}_{k}", k + 1
        return unique

    def _make_population(self, node, x: Affine, role: str, name: str | None = None) -> str:
        """A population (``name``, else the graph node's name; always "output" for the output) receiving ``x``."""
        if role == "output":
            name = "output"
        else:
            name = (name or node.name).lstrip("_")
            if name[:1].isdigit():
                name = f"relu_{name}"
            name = self._unique(name)
        bias = None if x.bias is None else _compress_bias(x.bias)
        neuron = NeuronSpec(readout="membrane") if role == "output" else NeuronSpec()
        self.network.add_population(Population(name, x.shape, role, neuron=neuron, bias=bias,
                                                metadata={"fx_node": node.name}))
        chains: list[tuple[str, list[Op]]] = []
        for term in x.terms:
            source_shape = self.network.populations[term.source].shape
            ops = fold_scales(term.ops, source_shape)
            assert chain_out_shape(ops, source_shape) == x.shape
            for index, (source, other) in enumerate(chains):
                merged = _merged(other, ops) if source == term.source else None
                if merged is not None:
                    chains[index] = (source, merged)
                    break
            else:
                chains.append((term.source, ops))
        for source, ops in chains:
            self.network.connect(source, name, ops)
        return name


def _compress_bias(bias: torch.Tensor) -> np.ndarray:
    """Per-channel ``[C]`` when constant over the spatial axes, else per neuron."""
    array = bias.numpy()
    if array.ndim > 1:
        flat = array.reshape(array.shape[0], -1)
        if np.all(flat == flat[:, :1]):
            return flat[:, 0].copy()
    return array.copy()


def _max_tree(values: list, combine: Callable) -> object:
    """Reduces ``values`` by ``combine(a, b)`` (a maximum) in a balanced tree: pairs, then pairs of
    pairs; an odd one out moves up a level unchanged."""
    while len(values) > 1:
        paired = [combine(values[i], values[i + 1]) for i in range(0, len(values) - 1, 2)]
        values = paired + values[-1:] if len(values) % 2 else paired
    return values[0]


def _same_op(a: Op, b: Op, arrays: bool = True) -> bool:
    if type(a) is not type(b) or a.params() != b.params():
        return False
    if not arrays:
        return {k: np.shape(v) for k, v in a.arrays().items()} == {k: np.shape(v) for k, v in b.arrays().items()}
    return all(np.array_equal(v, b.arrays()[k]) for k, v in a.arrays().items())


def _merged(a: list[Op], b: list[Op]) -> list[Op] | None:
    """One chain for two chains from the same source that differ only in the weights of one weighted op
    (A W1 B + A W2 B = A (W1 + W2) B), or None."""
    if len(a) != len(b):
        return None
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not _same_op(x, y)]
    if len(differ) != 1:
        return None
    i = differ[0]
    if not a[i].weighted or not _same_op(a[i], b[i], arrays=False):
        return None
    return [*a[:i], dataclasses.replace(a[i], weight=a[i].weight + b[i].weight), *a[i + 1:]]
