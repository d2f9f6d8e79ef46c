"""torch.fx walk: a PyTorch module becomes an (unnormalized) IR network.

Every traced value is an affine expression of spiking populations: a list of terms (source
population + op chain) plus a bias field. Linear layers, convolutions, pooling, flattening and
batch norm extend the op chains; ``+`` joins two expressions (residual networks); a ReLU turns an
expression into a new hidden population whose incoming projections are the terms. The model output
becomes the non-spiking output population.
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
from neurodeploy.errors import UnsupportedOperationError
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import AvgPool2d, Conv2d, Dense, Flatten, Op, Scale, chain_out_shape
from neurodeploy.ir.population import NeuronSpec, Population
from neurodeploy.ir.torch_ops import compile_op
from neurodeploy.train.quantized import QuantReLU

SUPPORTED = (
    "nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d (plain averages), nn.BatchNorm1d/2d, "
    "ReLU (nn.ReLU, F.relu, torch.relu, in-place), flatten/view/reshape to (batch, -1), Dropout, "
    "nn.Identity and residual '+'"
)

_ADVICE = {
    nn.MaxPool2d: "max pooling has no rate-coded IF equivalent: replace it with nn.AvgPool2d and retrain",
    nn.Sigmoid: "IF neurons approximate ReLU only: replace the activation with nn.ReLU and retrain",
    nn.Tanh: "IF neurons approximate ReLU only: replace the activation with nn.ReLU and retrain",
    nn.GELU: "IF neurons approximate ReLU only: replace the activation with nn.ReLU and retrain",
    nn.LeakyReLU: "negative slopes need signed spikes: replace it with nn.ReLU and retrain",
    nn.MultiheadAttention: "attention multiplies two activations, which rate-coded IF neurons cannot do",
}
_FUNCTION_ADVICE = {
    F.max_pool2d: _ADVICE[nn.MaxPool2d],
    torch.sigmoid: _ADVICE[nn.Sigmoid],
    torch.tanh: _ADVICE[nn.Tanh],
    F.gelu: _ADVICE[nn.GELU],
    torch.cat: "concatenation is not supported yet: use a residual '+' or separate models",
    torch.matmul: "products of two activations cannot be computed by rate-coded IF neurons",
    operator.mul: "products are not supported: fold constant scales into a layer's weights",
}

RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
FLATTEN_FUNCTIONS = {torch.flatten}
ADD_FUNCTIONS = {operator.add, torch.add, operator.iadd}
DROPOUT_FUNCTIONS = {F.dropout, F.dropout2d, F.dropout1d}


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

    def add_bias(self, per_channel: torch.Tensor) -> Affine:
        field_ = per_channel.to(torch.float64).reshape((-1,) + (1,) * (len(self.shape) - 1)).expand(self.shape)
        self.bias = field_.clone() if self.bias is None else self.bias + field_
        return self


class _BatchSize:
    """Stands for ``x.size(0)`` / ``x.shape[0]`` in traced reshapes."""


def _refuse(node: torch.fx.Node, what: str, advice: str | None = None) -> UnsupportedOperationError:
    advice = advice or f"supported operations are: {SUPPORTED}"
    return UnsupportedOperationError(f"cannot convert {what} (graph node {node.name!r}): {advice}")


def _as_int_pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _Tracer(torch.fx.Tracer):
    """Keeps quantized activations as single graph nodes (their forward has data-dependent code)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, QuantReLU) or super().is_leaf_module(m, module_qualified_name)


class FxConverter:
    """Builds the IR of ``module`` for inputs of shape ``input_shape`` (no batch axis).

    ``quantizers`` maps each population made from a ``QuantReLU`` to that module (for QCFS/QFFS)."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...]):
        try:
            graph = _Tracer().trace(module)
            self.graph_module = torch.fx.GraphModule(module, graph)
        except Exception as err:  # fx raises many types on untraceable code
            raise UnsupportedOperationError(
                f"torch.fx could not trace {type(module).__name__}: {err}. The converter needs a model "
                "without data-dependent control flow."
            ) from None
        self.modules = dict(self.graph_module.named_modules())
        self.input_shape = tuple(input_shape)
        self.network = Network()
        #: population name -> fx node whose output holds that population's ANN activation
        self.activation_nodes: dict[str, str] = {}
        self.quantizers: dict[str, QuantReLU] = {}

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
                raise _refuse(node, "a second model input", "models must take a single input tensor")
            self.network.add_population(Population("input", self.input_shape, "input"))
            return Affine([Term("input")], self.input_shape)
        if node.op == "output":
            result = args[0]
            if not isinstance(result, Affine):
                raise _refuse(node, "a model output that is not a single tensor", "return one tensor of logits")
            self._make_population(node, result, role="output")
            return None
        if node.op == "call_module":
            return self._visit_module(node, self.modules[node.target], args)
        if node.op == "call_function":
            return self._visit_function(node, node.target, args, kwargs)
        if node.op == "call_method":
            return self._visit_method(node, node.target, args, kwargs)
        raise _refuse(node, f"{node.op} {node.target!r}",
                      "parameters used directly in forward() are not supported: wrap them in nn.Linear/nn.Conv2d")

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
            if module.start_dim != 1 or module.end_dim != -1:
                raise _refuse(node, f"nn.Flatten(start_dim={module.start_dim}, end_dim={module.end_dim})",
                              "only flattening everything after the batch axis is supported")
            return x.apply(Flatten())
        advice = next((a for t, a in _ADVICE.items() if isinstance(module, t)), None)
        raise _refuse(node, f"module {node.target!r} of type {kind}", advice)

    def _conv(self, node, module: nn.Conv2d, x: Affine) -> Affine:
        if module.padding_mode != "zeros":
            raise _refuse(node, f"nn.Conv2d with padding_mode={module.padding_mode!r}", "use zero padding")
        padding = module.padding
        if padding == "same":
            total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
            if any(t % 2 for t in total):
                raise _refuse(node, "asymmetric 'same' padding", "use an odd kernel or explicit padding")
            padding = tuple(t // 2 for t in total)
        elif padding == "valid":
            padding = (0, 0)
        op = Conv2d(module.weight.detach().double().numpy(), module.stride, padding, module.dilation, module.groups)
        out = x.apply(op)
        return out.add_bias(module.bias.detach()) if module.bias is not None else out

    def _batch_norm(self, node, module, x: Affine) -> Affine:
        if module.running_mean is None:
            raise _refuse(node, "batch norm without running statistics", "use track_running_stats=True")
        std = torch.sqrt(module.running_var.double() + module.eps)
        gamma = module.weight.detach().double() if module.affine else torch.ones_like(std)
        beta = module.bias.detach().double() if module.affine else torch.zeros_like(std)
        factor = gamma / std
        out = x.apply(Scale(factor.numpy()))
        return out.add_bias(beta - module.running_mean.double() * factor)

    def _avg_pool(self, node, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
        if ceil_mode or divisor_override is not None:
            raise _refuse(node, "average pooling with ceil_mode or divisor_override", "use the defaults")
        padding = _as_int_pair(padding)
        if not count_include_pad and padding != (0, 0):
            raise _refuse(node, "padded average pooling with count_include_pad=False",
                          "use count_include_pad=True or no padding")
        kernel = _as_int_pair(kernel)
        return x.apply(AvgPool2d(kernel, _as_int_pair(stride) if stride else kernel, padding))

    def _adaptive_pool(self, node, x: Affine, output_size) -> Affine:
        out = _as_int_pair(output_size)
        out = tuple(x.shape[1 + i] if o is None else o for i, o in enumerate(out))
        if len(x.shape) != 3 or x.shape[1] % out[0] or x.shape[2] % out[1]:
            raise _refuse(node, f"adaptive average pooling from {x.shape[1:]} to {out}",
                          "only output sizes that divide the input (plain averages) are supported")
        kernel = (x.shape[1] // out[0], x.shape[2] // out[1])
        return x.apply(AvgPool2d(kernel, kernel))

    # --- functions and methods -----------------------------------------------------------------
    def _visit_function(self, node, fn, args, kwargs):
        if fn in RELU_FUNCTIONS:
            return self._relu(node, args[0])
        if fn in ADD_FUNCTIONS:
            return self._add(node, args[0], args[1])
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
            return _BatchSize() if isinstance(args[0], Affine) else args[0].shape
        if fn is operator.getitem and isinstance(args[0], (_BatchSize, torch.Size)):
            return _BatchSize()
        name = getattr(fn, "__name__", str(fn))
        raise _refuse(node, f"function {name}", _FUNCTION_ADVICE.get(fn))

    def _visit_method(self, node, method: str, args, kwargs):
        x = args[0]
        if method in ("relu", "relu_"):
            return self._relu(node, x)
        if method in ("add", "add_", "__add__"):
            return self._add(node, x, args[1])
        if method == "size":
            return _BatchSize()
        if method == "flatten":
            return self._flatten(node, x, *args[1:], **kwargs)
        if method in ("view", "reshape"):
            shape = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
            return self._reshape(node, x, shape)
        if method in ("contiguous", "clone"):
            return x
        raise _refuse(node, f"tensor method .{method}()")

    def _flatten(self, node, x: Affine, start_dim: int = 1, end_dim: int = -1) -> Affine:
        if start_dim != 1 or end_dim != -1:
            raise _refuse(node, f"flatten(start_dim={start_dim}, end_dim={end_dim})",
                          "only flattening everything after the batch axis is supported")
        return x.apply(Flatten())

    def _reshape(self, node, x: Affine, shape) -> Affine:
        numel = int(np.prod(x.shape))
        dims = list(shape)
        flat_ok = len(dims) == 2 and (
            (isinstance(dims[0], _BatchSize) or dims[0] == -1) and dims[1] in (-1, numel)
            or isinstance(dims[0], _BatchSize) and dims[1] == numel
        )
        if not flat_ok:
            raise _refuse(node, f"reshape to {dims}", "only reshapes that flatten to (batch, -1) are supported")
        return x.apply(Flatten())

    def _add(self, node, a, b) -> Affine:
        if not (isinstance(a, Affine) and isinstance(b, Affine)):
            raise _refuse(node, "adding a constant", "fold constants into a layer's bias")
        if a.shape != b.shape:
            raise _refuse(node, f"adding shapes {a.shape} and {b.shape}", "residual adds need equal shapes")
        if a.bias is None and b.bias is None:
            bias = None
        else:
            bias = (a.bias if a.bias is not None else 0) + (b.bias if b.bias is not None else 0)
        return Affine(a.terms + b.terms, a.shape, bias)

    def _relu(self, node, x) -> Affine:
        if not isinstance(x, Affine):
            raise _refuse(node, "ReLU of a non-tensor value")
        name = self._make_population(node, x, role="hidden")
        self.activation_nodes[name] = node.name
        return Affine([Term(name)], x.shape)

    def _make_population(self, node, x: Affine, role: str) -> str:
        name = "output" if role == "output" else node.name.lstrip("_")
        if name[:1].isdigit():
            name = f"relu_{name}"
        if not x.terms:
            raise _refuse(node, "a layer with no input", "every layer must depend on the model input")
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
