"""torch.fx walk: a PyTorch module becomes an (unnormalized) IR network.

Every traced value is an affine expression of spiking populations: a list of terms (source
population + op chain) plus a bias field. Linear layers, convolutions, pooling, flattening, batch norm
and constant factors extend the op chains; ``+`` and ``-`` join two expressions (residual networks) and
constant shifts add to the bias field (a shift before a zero-padded convolution becomes a bias map that
is smaller at the borders, so input normalization folds exactly); a ReLU turns an expression into a new
hidden population whose incoming projections are the terms. The model output becomes the non-spiking
output population; a softmax right before it is dropped and said once in ``notes``. Values that depend
on no population (buffers, constants reshaped in ``forward``) are computed directly. A refused op raises
its advice from :data:`neurodeploy.convert.refusals.REFUSALS`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.convert.fold import fold_scales
from neurodeploy.convert.refusals import REFUSALS, refusal, unlisted
from neurodeploy.errors import UnsupportedOperationError
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import AvgPool2d, Conv2d, Dense, Flatten, Op, Scale, chain_out_shape
from neurodeploy.ir.population import NeuronSpec, Population
from neurodeploy.ir.torch_ops import compile_op
from neurodeploy.train.quantized import QuantReLU

RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
FLATTEN_FUNCTIONS = {torch.flatten}
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


def _as_int_pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _Tracer(torch.fx.Tracer):
    """Keeps quantized activations and ``Normalize`` modules as single graph nodes (their forward has
    data-dependent code or checks that tracing cannot pass)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, QuantReLU) or _is_normalize(m) or super().is_leaf_module(m, module_qualified_name)


class FxConverter:
    """Builds the IR of ``module`` for inputs of shape ``input_shape`` (no batch axis).

    ``quantizers`` maps each population made from a ``QuantReLU`` to that module (for QCFS/QFFS);
    ``notes`` lists what the conversion changed without changing predictions (a dropped softmax)."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...]):
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
        if not _contains([args, kwargs], Affine):
            if not _contains([args, kwargs], _BatchSize):
                return self._evaluate(node, args, kwargs)
            if node.target is operator.getitem:
                return _BatchSize()  # x.shape[0]
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
        if isinstance(module, nn.Conv2d):
            return self._conv(node, module, x)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self._batch_norm(node, module, x)
        if isinstance(module, nn.AvgPool2d):
            return self._avg_pool(node, x, module.kernel_size, module.stride, module.padding,
                                  module.ceil_mode, module.count_include_pad, module.divisor_override)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return self._adaptive_pool(node, x, module.output_size)
        if isinstance(module, nn.Flatten):
            return self._flatten(node, x, module.start_dim, module.end_dim)
        key = next((k for k in (f"nn.{c.__name__}" for c in type(module).__mro__) if k in REFUSALS), None)
        raise _refuse_op(node, key, f"module {node.target!r} of type {kind}", args)

    def _conv(self, node, module: nn.Conv2d, x: Affine) -> Affine:
        if module.padding_mode != "zeros":
            raise _refuse(node, "nn.Conv2d padding_mode other than 'zeros'",
                          f"nn.Conv2d with padding_mode={module.padding_mode!r}")
        padding = module.padding
        if padding == "same":
            total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
            if any(t % 2 for t in total):
                raise _refuse(node, "asymmetric 'same' padding")
            padding = tuple(t // 2 for t in total)
        elif padding == "valid":
            padding = (0, 0)
        op = Conv2d(module.weight.detach().double().numpy(), module.stride, padding, module.dilation, module.groups)
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

    def _avg_pool(self, node, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
        if ceil_mode or divisor_override is not None:
            raise _refuse(node, "average pooling with ceil_mode or divisor_override")
        padding = _as_int_pair(padding)
        if not count_include_pad and padding != (0, 0):
            raise _refuse(node, "padded average pooling with count_include_pad=False")
        kernel = _as_int_pair(kernel)
        return x.apply(AvgPool2d(kernel, _as_int_pair(stride) if stride else kernel, padding))

    def _adaptive_pool(self, node, x: Affine, output_size) -> Affine:
        out = _as_int_pair(output_size)
        out = tuple(x.shape[1 + i] if o is None else o for i, o in enumerate(out))
        if len(x.shape) != 3 or x.shape[1] % out[0] or x.shape[2] % out[1]:
            raise _refuse(node, "adaptive average pooling to a size that does not divide the input",
                          f"adaptive average pooling from {x.shape[1:]} to {out}")
        kernel = (x.shape[1] // out[0], x.shape[2] // out[1])
        return x.apply(AvgPool2d(kernel, kernel))

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
        if fn in SOFTMAX_FUNCTIONS:
            return self._softmax(node, args[0], kwargs.get("dim", args[1] if len(args) > 1 else None), fn.__name__)
        if fn in FLATTEN_FUNCTIONS:
            return self._flatten(node, args[0], *args[1:], **kwargs)
        if fn in DROPOUT_FUNCTIONS:
            return args[0]
        if fn is F.avg_pool2d:
            params = dict(zip(("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                               "divisor_override"), args[1:], strict=False), **kwargs)
            return self._avg_pool(node, args[0], params["kernel_size"], params.get("stride"),
                                  params.get("padding", 0), params.get("ceil_mode", False),
                                  params.get("count_include_pad", True), params.get("divisor_override"))
        if fn is F.adaptive_avg_pool2d:
            return self._adaptive_pool(node, args[0], args[1] if len(args) > 1 else kwargs["output_size"])
        if fn is getattr and args[1] == "shape":
            return _BatchSize()
        key = _function_key(fn)
        raise _refuse_op(node, key, f"function {key or getattr(fn, '__name__', fn)}", args)

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
        if method == "size":
            return _BatchSize()
        if method == "flatten":
            return self._flatten(node, x, *args[1:], **kwargs)
        if method in ("view", "reshape"):
            shape = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
            return self._reshape(node, x, shape)
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
        described = ", ".join(f"{k}={v}" for k, v in params.items())
        raise _refuse(node, "clamp or threshold other than a ReLU", f"{name}({described})")

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

    def _flatten(self, node, x: Affine, start_dim: int = 1, end_dim: int = -1) -> Affine:
        if start_dim != 1 or end_dim != -1:
            raise _refuse(node, "flatten of other axes", f"flatten(start_dim={start_dim}, end_dim={end_dim})")
        return x.apply(Flatten())

    def _reshape(self, node, x: Affine, shape) -> Affine:
        numel = int(np.prod(x.shape))
        dims = list(shape)
        flat_ok = len(dims) == 2 and (
            (isinstance(dims[0], _BatchSize) or dims[0] == -1) and dims[1] in (-1, numel)
            or isinstance(dims[0], _BatchSize) and dims[1] == numel
        )
        if not flat_ok:
            raise _refuse(node, "reshape other than (batch, -1)", f"reshape to {dims}")
        return x.apply(Flatten())

    def _add(self, node, a: Affine, b: Affine) -> Affine:
        if a.shape != b.shape:
            raise _refuse(node, "residual add of different shapes", f"adding shapes {a.shape} and {b.shape}")
        if a.bias is None and b.bias is None:
            bias = None
        else:
            bias = (a.bias if a.bias is not None else 0) + (b.bias if b.bias is not None else 0)
        return Affine(a.terms + b.terms, a.shape, bias)

    def _relu(self, node, x: Affine) -> Affine:
        name = self._make_population(node, x, role="hidden")
        self.activation_nodes[name] = node.name
        return Affine([Term(name)], x.shape)

    def _make_population(self, node, x: Affine, role: str) -> str:
        name = "output" if role == "output" else node.name.lstrip("_")
        if name[:1].isdigit():
            name = f"relu_{name}"
        bias = None if x.bias is None else _compress_bias(x.bias)
        neuron = NeuronSpec(readout="membrane") if role == "output" else NeuronSpec()
        self.network.add_population(Population(name, x.shape, role, neuron=neuron, bias=bias,
                                                metadata={"fx_node": node.name}))
        for term in x.terms:
            source_shape = self.network.populations[term.source].shape
            ops = fold_scales(term.ops, source_shape)
            assert chain_out_shape(ops, source_shape) == x.shape
            self.network.connect(term.source, name, ops)
        return name


def _compress_bias(bias: torch.Tensor) -> np.ndarray:
    """Per-channel ``[C]`` when constant over the spatial axes, else per neuron."""
    array = bias.numpy()
    if array.ndim > 1:
        flat = array.reshape(array.shape[0], -1)
        if np.all(flat == flat[:, :1]):
            return flat[:, 0].copy()
    return array.copy()
