"""Max pooling strategies: average pooling in its place (optionally fine-tuned), or a spiking maximum.

Rate-coded IF neurons sum their inputs, so a maximum has no single-neuron equivalent. Two ways out:

* ``"avg"``: :func:`replace_max_pooling` rewrites every max pooling (modules and functions, 1-D and
  2-D, adaptive included) as average pooling of the same window, and fine-tunes the model when given
  training data. ``convert(..., max_pool="avg")`` does the rewrite without training (the accuracy of the
  rewritten model is what the SNN approaches: check it).
* ``"spiking"``: ``convert(..., max_pool="spiking")`` builds the maximum itself from ReLU populations,
  max(a, b) = b + relu(a - b) in a balanced tree over the window (see ``FxConverter._max_pool``).
"""

from __future__ import annotations

import copy

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.convert.refusals import refusal
from neurodeploy.data.datasets import Split
from neurodeploy.train.trainer import TrainConfig, train_model

_MODULES = {nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool1d: nn.AvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
            nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d}
_FUNCTIONS = {F.max_pool2d: F.avg_pool2d, F.max_pool1d: F.avg_pool1d, F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
              F.adaptive_max_pool1d: F.adaptive_avg_pool1d}
_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _average_module(node: str, module: nn.Module) -> nn.Module:
    if isinstance(module, (nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d)):
        if module.return_indices:
            raise refusal(f"{type(module).__name__} with return_indices", node,
                          "max pooling that its strategy cannot express")
        return _MODULES[type(module)](module.output_size)
    dilation = module.dilation if isinstance(module.dilation, int) else max(module.dilation)
    if dilation != 1 or module.return_indices:
        raise refusal(f"{type(module).__name__} with dilation or return_indices", node,
                      "max pooling that its strategy cannot express")
    return _MODULES[type(module)](module.kernel_size, module.stride, module.padding, module.ceil_mode)


def average_pooling_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` (a ``torch.fx.GraphModule``) with every max pooling replaced by average pooling
    of the same window, and one line per replacement."""
    from neurodeploy.convert.fx_graph import _Tracer

    graph_module = torch.fx.GraphModule(copy.deepcopy(model), _Tracer().trace(model))
    changes = []
    modules = dict(graph_module.named_modules())
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and type(modules[node.target]) in _MODULES:
            old = modules[node.target]
            new = _average_module(node.name, old)
            parent, _, leaf = node.target.rpartition(".")
            setattr(graph_module.get_submodule(parent) if parent else graph_module, leaf, new)
            changes.append(f"replaced {type(old).__name__} {node.target!r} by {new}")
        elif node.op == "call_function" and node.target in _FUNCTIONS:
            name = getattr(node.target, "__name__", str(node.target))
            if "adaptive" in name:
                params = dict(zip(("output_size", "return_indices"), node.args[1:], strict=False), **node.kwargs)
                if params.get("return_indices"):
                    raise refusal(f"F.{name} with return_indices", node.name,
                                  "max pooling that its strategy cannot express")
                node.args, node.kwargs = (node.args[0], params["output_size"]), {}
            else:
                params = dict(zip(_POOL_ARGS, node.args[1:], strict=False), **node.kwargs)
                dilation = params.get("dilation", 1)
                if any(int(d) != 1 for d in (dilation if isinstance(dilation, (tuple, list)) else (dilation,))) \
                        or params.get("return_indices"):
                    raise refusal(f"F.{name} with dilation or return_indices", node.name,
                                  "max pooling that its strategy cannot express")
                stride = params.get("stride") or params["kernel_size"]
                node.args = (node.args[0], params["kernel_size"], stride, params.get("padding", 0),
                             params.get("ceil_mode", False))
                node.kwargs = {}
            node.target = _FUNCTIONS[node.target]
            changes.append(f"replaced F.{name} (graph node {node.name!r}) by F.{node.target.__name__}")
    graph_module.recompile()
    return graph_module, changes


def replace_max_pooling(model: nn.Module, train: Split | None = None, epochs: int = 3, lr: float = 0.01,
                        seed: int = 0, progress: bool = False) -> nn.Module:
    """Strategy "avg": ``model`` with every max pooling replaced by average pooling of the same window,
    fine-tuned on ``train`` for ``epochs`` (SGD, cosine schedule, best-validation checkpoint, as
    ``neurodeploy train``) when ``train`` is given. Returns the new model in eval mode; the changes are in
    its ``pooling_changes`` attribute."""
    return rewritten(model, average_pooling_model, "pooling_changes", train, epochs, lr, seed, progress)


def rewritten(model: nn.Module, rewrite, changes_attribute: str, train: Split | None, epochs: int, lr: float,
              seed: int, progress: bool) -> nn.Module:
    """The action a refusal names: ``rewrite(model) -> (new model, changes)``, then fine-tuning on ``train`` for
    ``epochs`` when given; the new model in eval mode with its changes in ``changes_attribute``."""
    replaced, changes = rewrite(model)
    if train is not None and epochs > 0:
        train_model(replaced, train, TrainConfig(epochs=epochs, lr=lr, seed=seed), progress=progress)
    setattr(replaced, changes_attribute, changes)
    return replaced.eval()
