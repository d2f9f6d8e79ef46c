"""Activations no IF neuron computes, swapped for ReLU (optionally fine-tuned): the action the converter's
refusal of Hardswish, SiLU, GELU, Sigmoid, ... names.

A rate-coded IF neuron's firing rate is a clipped ReLU of its input current, so smooth or signed
activations (Hardswish, SiLU, GELU, Mish, ELU, Softplus, Sigmoid, Tanh, LeakyReLU, ...) have no spiking
equivalent, and neither has a product of two activations. :func:`replace_activations` rewrites the model:

* a gate, ``x * sigmoid(s)`` or ``x * hardsigmoid(s)`` (the squeeze-excitation blocks of MobileNetV3 and
  EfficientNet), becomes ``x``: the gate's branch is removed;
* every other such activation (module or function) becomes a ReLU;

and fine-tunes the result when given training data (as :func:`neurodeploy.convert.replace_max_pooling`).
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.convert.max_pool import rewritten
from neurodeploy.data.datasets import Split

#: activation modules replaced by nn.ReLU
MODULES = (nn.Hardswish, nn.SiLU, nn.GELU, nn.Mish, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.LeakyReLU, nn.PReLU,
           nn.RReLU, nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink)
#: activation functions and tensor methods replaced by F.relu
FUNCTIONS = {F.hardswish, F.silu, F.gelu, F.mish, F.elu, F.selu, F.celu, F.softplus, F.leaky_relu, F.sigmoid,
             F.tanh, F.hardsigmoid, torch.sigmoid, torch.tanh, F.logsigmoid, F.softsign}
METHODS = {"sigmoid", "tanh", "sigmoid_", "tanh_"}
#: gates: what a product with an activation is removed for
_GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
_GATE_FUNCTIONS = {F.sigmoid, torch.sigmoid, F.hardsigmoid}
_PRODUCTS = {operator.mul, torch.mul, operator.imul, "mul", "mul_", "__mul__"}


def _is_gate(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _GATE_MODULES)
    if node.op == "call_method":
        return node.target in ("sigmoid", "sigmoid_")
    return node.op == "call_function" and node.target in _GATE_FUNCTIONS


def _is_activation(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], MODULES)
    if node.op == "call_method":
        return node.target in METHODS
    return node.op == "call_function" and node.target in FUNCTIONS


def relu_model(model: nn.Module) -> tuple[torch.fx.GraphModule, list[str]]:
    """A copy of ``model`` as a ``torch.fx.GraphModule`` with every gate removed and every other activation
    an IF neuron cannot compute replaced by a ReLU, and one line per change."""
    from neurodeploy.convert.fx_graph import _Tracer

    graph_module = torch.fx.GraphModule(copy.deepcopy(model), _Tracer().trace(model))
    modules = dict(graph_module.named_modules())
    graph, changes = graph_module.graph, []
    for node in list(graph.nodes):
        if node.target in _PRODUCTS and node.op in ("call_function", "call_method") and len(node.args) == 2:
            gates = [a for a in node.args if isinstance(a, torch.fx.Node) and _is_gate(a, modules)]
            if len(gates) == 1:
                kept = next(a for a in node.args if a is not gates[0])
                node.replace_all_uses_with(kept)
                graph.erase_node(node)
                changes.append(f"removed the gate {gates[0].name!r} (graph node {node.name!r} was a product with it)")
    graph.eliminate_dead_code()
    for node in graph.nodes:
        if not _is_activation(node, modules):
            continue
        if node.op == "call_module":
            old = modules[node.target]
            parent, _, leaf = node.target.rpartition(".")
            setattr(graph_module.get_submodule(parent) if parent else graph_module, leaf, nn.ReLU())
            changes.append(f"replaced {type(old).__name__} {node.target!r} by ReLU")
        else:
            name = getattr(node.target, "__name__", node.target)
            node.op, node.target, node.args, node.kwargs = "call_function", F.relu, node.args[:1], {}
            changes.append(f"replaced {name} (graph node {node.name!r}) by F.relu")
    for module in graph_module.modules():
        if getattr(module, "inplace", False):  # an in-place op after a new ReLU would overwrite what its
            module.inplace = False               # backward needs (MobileNetV3: Hardswish, Dropout(inplace))
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module, changes


def replace_activations(model: nn.Module, train: Split | None = None, epochs: int = 3, lr: float = 0.01,
                        seed: int = 0, progress: bool = False) -> nn.Module:
    """``model`` with its squeeze-excitation gates removed and every activation no IF neuron computes
    (Hardswish, SiLU, GELU, Sigmoid, Tanh, LeakyReLU, ...) replaced by a ReLU (:func:`relu_model`),
    fine-tuned on ``train`` for ``epochs`` (SGD, cosine schedule, best-validation checkpoint, as
    ``neurodeploy train``) when ``train`` is given. Returns the new model in eval mode; the changes are in
    its ``activation_changes`` attribute."""
    return rewritten(model, relu_model, "activation_changes", train, epochs, lr, seed, progress)
