"""Fan-in pass: bounds the synapses per neuron for machines that store them per core (SpiNNaker
handles a fan-in of hundreds well and 784:1 badly, ``docs/semantics.md``, "SpiNNaker").

Two steps, because pooling is only free where the model learned with it:
1. ``pool_dense_inputs`` (on the PyTorch model, before conversion): a ``Linear`` whose input is a
   flattened (C, H, W) tensor of more than ``max_fan_in`` values gets ``AvgPool2d(k)`` in front of its
   ``Flatten`` (smallest k that fits), its weights summed over each window (the same output for inputs
   that are constant within a window); the model must then be fine-tuned so the accuracy is measured,
   not assumed (``neurodeploy.jobs.prepare.pooled_model``, ``neurodeploy convert --max-fan-in``).
2. ``materialize_pooling`` (on the IR): the converter folds pooling into the next projection, which
   keeps every pre-pool neuron as a synapse (a 2x2 pool before a 196-input dense layer is still 784:1).
   A projection that starts with non-overlapping pooling and reaches a target fan-in above
   ``max_fan_in`` is split: source -> pool population (fan-in k*k) -> target. A pool neuron is an
   integrate-and-fire neuron with the largest threshold of its window (spikes carry it as amplitude), so
   it fires at the window's mean rate without saturating; it adds one step of latency on machines with
   synaptic delays.
Convolutions keep their fan-in (C_in * k * k); offenders that pooling cannot fix are reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.connectivity import fan_maps
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import AvgPool2d
from neurodeploy.ir.population import NeuronSpec, Population, per_neuron


@dataclass
class FanInChange:
    """One offending layer or projection and what the pass did about it."""

    where: str
    fan_in_before: int
    fan_in_after: int
    action: str

    def as_dict(self) -> dict:
        return asdict(self)


def _input_shapes(model: nn.Sequential, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    shapes = []
    x = torch.zeros((1, *input_shape))
    training = model.training
    model.eval()  # batch norm takes a single item only in eval mode
    with torch.no_grad():
        for module in model:
            shapes.append(tuple(x.shape[1:]))
            x = module(x)
    model.train(training)
    return shapes


def plan_dense_pooling(model: nn.Module, input_shape: tuple[int, ...], max_fan_in: int, max_factor: int = 4
                       ) -> tuple[list[dict], list[FanInChange]]:
    """Which ``Flatten`` -> ``Linear`` pairs of a sequential model get pooling: returns the plan
    (``[{"flatten_index": i, "factor": k}]``, the form model files store) and a change per offender."""
    if max_fan_in < 1:
        raise NeurodeployError(f"max fan-in must be positive, got {max_fan_in}")
    if not isinstance(model, nn.Sequential):
        return [], []
    shapes = _input_shapes(model, input_shape)
    plan, changes = [], []
    for index in range(1, len(model)):
        linear, flatten = model[index], model[index - 1]
        if not isinstance(linear, nn.Linear) or linear.in_features <= max_fan_in:
            continue
        where = f"layer {index} ({linear.in_features}->{linear.out_features} dense)"
        shape = shapes[index - 1]
        if not isinstance(flatten, nn.Flatten) or len(shape) != 3:
            changes.append(FanInChange(where, linear.in_features, linear.in_features,
                                       "kept: its input is not a flattened (C, H, W) tensor, nothing to pool"))
            continue
        c, h, w = shape
        factor = next((k for k in range(2, max_factor + 1)
                       if h % k == 0 and w % k == 0 and c * (h // k) * (w // k) <= max_fan_in), None)
        if factor is None:
            changes.append(FanInChange(where, linear.in_features, linear.in_features,
                                       f"kept: no pooling of at most {max_factor}x{max_factor} dividing {h}x{w} "
                                       f"brings {c}x{h}x{w} under {max_fan_in}"))
            continue
        plan.append({"flatten_index": index - 1, "factor": factor})
        after = c * (h // factor) * (w // factor)
        changes.append(FanInChange(where, linear.in_features, after,
                                   f"avgpool {factor}x{factor} inserted before its flatten ({c}x{h}x{w} -> "
                                   f"{c}x{h // factor}x{w // factor}); weights summed per window, fine-tune"))
    return plan, changes


def apply_dense_pooling(model: nn.Sequential, input_shape: tuple[int, ...], plan: list[dict],
                        init_weights: bool = True) -> nn.Sequential:
    """A new sequential model with the plan's pools inserted and the following ``Linear`` shrunk; with
    ``init_weights`` its weights are the old ones summed over each pooling window."""
    shapes = _input_shapes(model, input_shape)
    factors = {entry["flatten_index"]: int(entry["factor"]) for entry in plan}
    modules: list[nn.Module] = []
    for index, module in enumerate(model):
        if index - 1 in factors:
            k = factors[index - 1]
            c, h, w = shapes[index - 1]
            pooled = nn.Linear(c * (h // k) * (w // k), module.out_features, bias=module.bias is not None)
            if init_weights:
                with torch.no_grad():
                    weight = module.weight.reshape(module.out_features, c, h, w)
                    pooled.weight.copy_(F.avg_pool2d(weight, k).mul(k * k).reshape(module.out_features, -1))
                    if module.bias is not None:
                        pooled.bias.copy_(module.bias)
            modules.append(pooled)
            continue
        if index in factors:
            modules.append(nn.AvgPool2d(factors[index]))
        modules.append(module)
    return nn.Sequential(*modules).train(model.training)


def materialize_pooling(network: Network, max_fan_in: int) -> list[FanInChange]:
    """Splits, in place, every projection that starts with non-overlapping pooling and whose target
    has a fan-in above ``max_fan_in`` (see the module docstring); returns the changes, including
    offenders left as they are."""
    if max_fan_in < 1:
        raise NeurodeployError(f"max fan-in must be positive, got {max_fan_in}")
    _, fan_in = fan_maps(network)
    changes = []
    for projection in list(network.projections):
        before = int(fan_in[projection.target].max())
        if before <= max_fan_in:
            continue
        pool = projection.ops[0] if projection.ops else None
        if not isinstance(pool, AvgPool2d) or pool.overlapping or len(projection.ops) < 2:
            continue
        source = network.populations[projection.source]
        pooled_shape = pool.out_shape(source.shape)
        if source.role == "input":
            changes.append(_pool_on_host(network, projection, pool, before))
            continue
        name = _free_name(network, f"{projection.target}_pool")
        theta = F.max_pool2d(torch.as_tensor(per_neuron(source.neuron.threshold, source.shape))[None],
                             pool.kernel, pool.stride, pool.padding)[0].numpy()
        v_init = source.neuron.v_init if isinstance(source.neuron.v_init, str) else "zero"
        network.add_population(Population(name, pooled_shape, "hidden", NeuronSpec(threshold=theta, v_init=v_init),
                                          metadata={"inserted_by": "fan-in pass"}))
        network.projections.remove(projection)
        network.connect(projection.source, name, [pool])
        network.connect(name, projection.target, projection.ops[1:], projection.delay)  # the delay stays on the edge
        changes.append(FanInChange(f"{projection.source}->{projection.target}", before, 0,
                                   f"pool population {name!r} {pooled_shape} inserted (fan-in "
                                   f"{pool.kernel[0] * pool.kernel[1]})"))
    network.validate()
    _, fan_in = fan_maps(network)
    for change in changes:
        change.fan_in_after = int(fan_in[change.where.split("->")[1]].max())
    for name, fan in fan_in.items():
        if network.populations[name].role != "input" and int(fan.max()) > max_fan_in and not any(
                c.where.endswith(f"->{name}") for c in changes):
            changes.append(FanInChange(name, int(fan.max()), int(fan.max()),
                                       "kept: no leading pooling to split off (convolution or dense fan-in)"))
    return changes


def _free_name(network: Network, name: str) -> str:
    """``name``, or ``name_1``, ``name_2``, ... where a population already has it (a target fed by several
    pooled projections, as an Inception block's concatenation feeds each branch, gets one pool per source)."""
    candidate, index = name, 0
    while candidate in network.populations:
        index += 1
        candidate = f"{name}_{index}"
    return candidate


def _pool_on_host(network: Network, projection, pool: AvgPool2d, before: int) -> FanInChange:
    """Pooling right after the input is done on the host, before encoding: the input population takes
    the pooled shape and ``network.metadata["input_pooling"]`` tells runners to pool items with
    :func:`pool_inputs` (a spiking pool population would cost accuracy under SpiNNaker's hard reset)."""
    if len(network.incoming(projection.target)) != 1 or sum(p.source == projection.source
                                                             for p in network.projections) != 1:
        return FanInChange(f"{projection.source}->{projection.target}", before, before,
                           "kept: the input feeds several projections, so it cannot be pooled on the host")
    source = network.populations[projection.source]
    source.shape = pool.out_shape(source.shape)
    projection.ops = projection.ops[1:]
    network.metadata["input_pooling"] = {"kernel": list(pool.kernel), "stride": list(pool.stride),
                                         "padding": list(pool.padding)}
    return FanInChange(f"{projection.source}->{projection.target}", before, 0,
                       f"input pooled on the host before encoding ({pool.kernel[0]}x{pool.kernel[1]}): input "
                       f"population now {source.shape}")


def pool_inputs(network: Network, images: torch.Tensor) -> torch.Tensor:
    """Items ``[N, *original input shape]`` as the network takes them: pooled when the fan-in pass moved
    the input's pooling to the host (``network.metadata["input_pooling"]``), else unchanged."""
    spec = network.metadata.get("input_pooling")
    if not spec:
        return images
    return F.avg_pool2d(torch.as_tensor(images), spec["kernel"], spec["stride"], spec["padding"])
