"""torch.export programs -> an ``nn.Module``-level ``torch.fx`` graph the converter walks as any traced model.

A program written by ``torch.export.save`` is read with ``torch.export.load`` (a JSON graph and tensor
files: no code is unpickled or run). Its ATen graph is rebuilt node by node: ``aten.linear`` becomes an
``nn.Linear`` holding the program's weights, ``aten.conv1d`` / ``aten.conv2d`` an ``nn.Conv1d`` /
``nn.Conv2d``, the inference forms of ``aten.batch_norm`` an ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``,
``aten.relu`` ``torch.relu``, pooling, flatten / view / reshape, arithmetic, mean, cat and softmax their
``torch`` functions; dropout, clone and contiguous are removed. In-place ATen ops (``relu_``,
``hardtanh_``, ``add_``, ...) mean their out-of-place ops: a program is a pure function of its input, and
``torch.export`` keeps the in-place spelling of ``nn.ReLU6(inplace=True)``. Any other ATen op is kept as
it is: the converter handles ATen rearrangements (``transpose``, ``slice``, ``chunk``, ...) itself and its
refusal table names the rest (``docs/converter.md``). The rebuilt module computes what the
program computes, for any batch size (reshapes specialised to the example's batch are written as
``(-1, ...)``).

Each module is placed at the path of the user's module it came from (the node's ``nn_module_stack``: ``conv``,
``layer1.0.conv1``), and an ``aten.relu`` of an ``nn.ReLU`` becomes that module, so the converter names
populations as it does for the model's class (``docs/own-model.md``, "Population names"); where the path is
unknown or taken by another kind of module, a name of its own starting with ``_`` (which no population takes).
"""

from __future__ import annotations

import operator
from pathlib import Path

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.errors import ModelFormatError, UnsupportedOperationError

aten = torch.ops.aten

#: ATen op -> plain torch function with the same arguments
_SAME_ARGS = {
    aten.relu.default: torch.relu,
    aten.flatten.using_ints: torch.flatten,
    aten.add.Tensor: operator.add, aten.sub.Tensor: operator.sub, aten.mul.Tensor: operator.mul,
    aten.div.Tensor: operator.truediv,
    aten.mean.dim: torch.mean, aten.sum.dim_IntList: torch.sum,
    aten.cat.default: torch.cat,
    aten.clamp.default: torch.clamp, aten.clamp_min.default: torch.clamp_min,
    aten.hardtanh.default: F.hardtanh,
    aten.softmax.int: F.softmax, aten._softmax.default: F.softmax, aten.log_softmax.int: F.log_softmax,
    aten._log_softmax.default: F.log_softmax,
    aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d, aten.adaptive_avg_pool1d.default: F.adaptive_avg_pool1d,
    aten.max_pool2d.default: F.max_pool2d, aten.max_pool1d.default: F.max_pool1d,
    aten.sigmoid.default: torch.sigmoid, aten.tanh.default: torch.tanh, aten.hardswish.default: F.hardswish,
    aten.hardsigmoid.default: F.hardsigmoid, aten.silu.default: F.silu, aten.gelu.default: F.gelu,
    aten.elu.default: F.elu, aten.leaky_relu.default: F.leaky_relu, aten.mish.default: F.mish,
}
#: ops that return their input (at inference)
_PASS_THROUGH = {aten.dropout.default, aten.clone.default, aten.contiguous.default, aten.alias.default,
                 aten.detach.default, aten.feature_dropout.default}
_RESHAPES = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}


def load_exported(path: str | Path) -> torch.export.ExportedProgram:
    """Reads a ``torch.export.save`` archive (no code runs); one line naming the file when it cannot."""
    try:
        return torch.export.load(str(path))
    except Exception as err:  # torch raises many types for corrupt or foreign archives
        detail = next((line.strip() for line in str(err).splitlines() if line.strip()), "")[:200]
        raise ModelFormatError(f"{path}: not a readable torch.export program ({type(err).__name__}: "
                               f"{detail})") from None


def example_input_shape(program: torch.export.ExportedProgram) -> tuple[int, ...]:
    """The shape of one item (no batch axis) of the program's single user input."""
    user = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    if len(user) != 1:
        raise UnsupportedOperationError(f"the exported program takes {len(user)} inputs; the converter needs a "
                                        "model of one input tensor [batch, *item]")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user[0])
    value = node.meta.get("val")
    if value is None or value.ndim < 2:
        raise UnsupportedOperationError("the exported program's input has no batch axis: export it with an example "
                                        "input of shape [batch, *item]")
    return tuple(int(s) for s in value.shape[1:])


def _tensors(program: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    """Graph input name -> tensor of every parameter, buffer and lifted constant."""
    found = {}
    for spec in program.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            continue
        target = spec.target
        if target in program.state_dict:
            found[spec.arg.name] = program.state_dict[target]
        elif target in program.constants:
            found[spec.arg.name] = program.constants[target]
    return {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in found.items()}


def _out_of_place(target):
    """The out-of-place op of an in-place ATen op (``aten.hardtanh_.default`` -> ``aten.hardtanh.default``),
    else ``target``."""
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.name.startswith("aten::"):
        return target
    name = schema.name.split("::", 1)[1]
    if not name.endswith("_") or name.startswith("_"):
        return target
    packet = getattr(aten, name[:-1], None)
    return getattr(packet, schema.overload_name or "default", target) if packet is not None else target


def _defaults(args: tuple, defaults: tuple) -> list:
    return list(args) + list(defaults[len(args):])


def _innermost(node: torch.fx.Node) -> tuple[str, str]:
    """(path, type name) of the innermost user module a node of an exported program ran in (("", "") if unknown)."""
    stack = node.meta.get("nn_module_stack") or {}
    path, kind = list(stack.values())[-1] if stack else ("", "")
    return str(path), str(kind)


def _user_path(node: torch.fx.Node) -> str | None:
    """The path of the user's module a node ran in, where it is one (not the model itself, no ``_`` part)."""
    path = _innermost(node)[0]
    parts = path.split(".")
    return path if path and all(p and not p.startswith("_") and p.isidentifier() or p.isdigit() for p in parts) \
        else None


def _place(root: nn.Module, module: nn.Module, path: str | None) -> str | None:
    """Puts ``module`` at ``path`` in ``root`` (containers made on the way) and returns the path; the same module
    already there (type and tensors: a module called twice) is used as it is. None where ``path`` is None or
    holds something else."""
    if path is None:
        return None
    *parents, leaf = path.split(".")
    container = root
    for part in parents:
        child = container._modules.get(part)
        if child is None:
            child = nn.Module()
            container.add_module(part, child)
        elif type(child) is not nn.Module:  # a leaf module sits where a container is needed
            return None
        container = child
    present = container._modules.get(leaf)
    if present is None:
        container.add_module(leaf, module)
        return path
    same = type(present) is type(module) and not present._modules and all(
        torch.equal(a, b) for a, b in zip(present.state_dict().values(), module.state_dict().values(), strict=True))
    return path if same else None  # another op's weights under the same module: a name of its own


def module_from_exported(program: torch.export.ExportedProgram) -> torch.fx.GraphModule:
    """The program as a GraphModule of ``nn`` modules and ``torch`` functions (see the module docstring)."""
    example_input_shape(program)
    tensors = _tensors(program)
    root, graph = nn.Module(), torch.fx.Graph()
    env: dict[str, object] = {}
    counts: dict[str, int] = {}

    def name_for(kind: str) -> str:
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    def value(arg):
        if isinstance(arg, torch.fx.Node):
            if arg.name in env:
                return env[arg.name]
            if arg.name in tensors:  # a parameter or buffer used as a tensor: a get_attr of a buffer
                attr = name_for("constant")
                root.register_buffer(attr, tensors[arg.name])
                env[arg.name] = graph.get_attr(attr)
                return env[arg.name]
            raise UnsupportedOperationError(f"exported graph node {arg.name!r} has no value")
        if isinstance(arg, (list, tuple)):
            return type(arg)(value(a) for a in arg)
        return arg

    def tensor(arg, what: str, node) -> torch.Tensor | None:
        if arg is None:
            return None
        if isinstance(arg, torch.fx.Node) and arg.name in tensors:
            return tensors[arg.name]
        raise UnsupportedOperationError(f"cannot convert graph node {node.name!r} ({node.target}): its {what} is "
                                        "computed in the graph, not a stored parameter")

    def module_call(kind: str, module: nn.Module, x, node: torch.fx.Node) -> torch.fx.Node:
        attr = _place(root, module, _user_path(node)) or f"_{name_for(kind)}"
        if attr.startswith("_"):
            root.add_module(attr, module)
        return graph.call_module(attr, (value(x),))

    for node in program.graph.nodes:
        if node.op == "placeholder":
            if node.name not in tensors:
                env[node.name] = graph.placeholder(node.name)
            continue
        if node.op == "output":
            outputs = node.args[0]
            if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
                outputs = outputs[0]
            graph.output(value(outputs))
            continue
        if node.op == "get_attr":  # submodules of higher-order ops: kept, the converter refuses what it meets
            env[node.name] = graph.get_attr(node.target)
            continue
        target, args, kwargs = _out_of_place(node.target), node.args, node.kwargs
        meta = node.meta.get("val")
        if target in _PASS_THROUGH:
            env[node.name] = value(args[0])
        elif target is aten.linear.default:
            weight, bias = tensor(args[1], "weight", node), tensor(args[2] if len(args) > 2 else None, "bias", node)
            module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            module.weight.data.copy_(weight)
            if bias is not None:
                module.bias.data.copy_(bias)
            env[node.name] = module_call("linear", module, args[0], node)
        elif target in (aten.conv2d.default, aten.conv1d.default, aten.conv2d.padding, aten.conv1d.padding):
            one_d = target in (aten.conv1d.default, aten.conv1d.padding)
            x, w, b, stride, padding, dilation, groups = _defaults(args, (None, None, None, 1, 0, 1, 1))
            weight, bias = tensor(w, "weight", node), tensor(b, "bias", node)
            cls = nn.Conv1d if one_d else nn.Conv2d
            module = cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=stride,
                         padding=padding, dilation=dilation, groups=groups, bias=bias is not None)
            module.weight.data.copy_(weight)
            if bias is not None:
                module.bias.data.copy_(bias)
            env[node.name] = module_call("conv", module, x, node)
        elif target in (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default):
            if target is aten.batch_norm.default:
                x, w, b, mean, var, training, _, eps, _ = _defaults(args, (None,) * 5 + (False, 0.1, 1e-5, False))
            else:
                x, w, b, mean, var, _, eps = args
                training = False
            if training:
                raise UnsupportedOperationError(f"cannot convert graph node {node.name!r}: batch norm in training "
                                                "mode; export the model after model.eval()")
            channels = tensor(mean, "running mean", node).shape[0]
            ndim = len(node.args[0].meta["val"].shape)
            module = (nn.BatchNorm1d if ndim <= 3 else nn.BatchNorm2d)(channels, eps=eps, affine=w is not None)
            module.running_mean.copy_(tensor(mean, "running mean", node))
            module.running_var.copy_(tensor(var, "running variance", node))
            if w is not None:
                module.weight.data.copy_(tensor(w, "weight", node))
                module.bias.data.copy_(tensor(b, "bias", node))
            module.eval()
            out = module_call("batchnorm", module, x, node)
            env[node.name] = (out,) if target is not aten.batch_norm.default else out
        elif target is operator.getitem and isinstance(env.get(node.args[0].name), tuple):
            env[node.name] = env[node.args[0].name][args[1]]
        elif target is aten.avg_pool2d.default or target is aten.avg_pool1d.default:
            x, kernel, stride, padding, ceil, include, *rest = _defaults(args, (None, None, [], 0, False, True, None))
            params = {"kernel_size": kernel, "stride": stride or None, "padding": padding, "ceil_mode": ceil,
                      "count_include_pad": include}
            fn = F.avg_pool2d if target is aten.avg_pool2d.default else F.avg_pool1d
            if fn is F.avg_pool2d:
                params["divisor_override"] = rest[0] if rest else None
            env[node.name] = graph.call_function(fn, (value(x),), params)
        elif target in _RESHAPES and meta is not None:
            shape = (-1, *(int(s) for s in meta.shape[1:]))
            env[node.name] = graph.call_method("reshape", (value(args[0]), shape))
        elif target is aten.relu.default and _innermost(node)[1].endswith(".ReLU"):  # an nn.ReLU: that module
            env[node.name] = module_call("relu", nn.ReLU(), args[0], node)
        elif target in (aten._softmax.default, aten._log_softmax.default):
            env[node.name] = graph.call_function(_SAME_ARGS[target], (value(args[0]), args[1]))
        elif target in _SAME_ARGS:
            env[node.name] = graph.call_function(_SAME_ARGS[target], value(args),
                                                 {k: value(v) for k, v in kwargs.items()})
        else:  # kept as the ATen op: the converter refuses it by name
            env[node.name] = graph.call_function(target, value(args), {k: value(v) for k, v in kwargs.items()})
    module = torch.fx.GraphModule(root, graph, class_name="ExportedProgram")
    return module.eval()
