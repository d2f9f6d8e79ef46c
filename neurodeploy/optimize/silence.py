"""Which neurons to silence first: phase 2's search space holds, per hidden population, the fraction of its
channels silenced (threshold raised until it never fires, :data:`SILENT_THRESHOLD`), taken in the order
:func:`silence_order` gives; the search chooses the fractions, and each point is measured like any other
(simulated on the optimization items, the accuracy floor by the paired rule of
:mod:`neurodeploy.optimize.budget`).

The order comes from the rate model of the converted network (``neurodeploy.ir.rate_model``): a hidden
neuron fires ``clip(current / theta, 0, 1)`` spikes per step and passes ``rate * theta`` on; the output
population's current is the readout. Each channel is silenced alone (its rate set to 0) and two things are
counted on the items: how many items' predicted class (argmax of the readout) changes, and the synaptic events
per item per step the channel's spikes cause (its rate summed over its positions, times its synapses per
neuron: its fan-out, :func:`neurodeploy.ir.connectivity.fan_maps`). Channels that change no prediction come
first, the busiest of them first: silencing them saves the most events for the least accuracy. Silencing
several at once can change predictions that silencing each alone did not, which is why the fractions are
searched by simulation rather than read off this order.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from neurodeploy.ir.connectivity import fan_maps
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import Conv2d, Dense
from neurodeploy.ir.population import per_neuron
from neurodeploy.ir.rate_model import RateModel

#: the threshold of a silenced channel (float32-safe, and finite so that v_init = u * theta stays a number):
#: no current of a converted network reaches it
SILENT_THRESHOLD = 1e30
#: items the order is measured on (the first of the optimization items): each channel costs one forward pass
#: of the rate model from its population on
ORDER_ITEMS = 256


def channel_effects(network: Network, images: torch.Tensor, populations: tuple[str, ...]
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per population of ``populations``: ``(changed [C] int: items whose predicted class changes when that
    channel alone is silenced, events [C]: synaptic events per item per step its spikes cause)`` on
    ``images [N, *input_shape]`` under the rate model."""
    model = RateModel(network)
    fan_out, _ = fan_maps(network)  # synapses per neuron, as the simulators count a spike's events
    base = model.forward(images)
    predicted = base.readout.argmax(1)
    effects = []
    for name in populations:
        channels = network.populations[name].shape[0]
        rate = base.rates[name].reshape(len(images), channels, -1).sum(2).mean(0).numpy().astype(np.float64)
        events = rate * fan_out[name].reshape(channels, -1).mean(1)
        changed = np.zeros(channels, np.int64)
        for c in range(channels):
            silenced = model.forward(images, base, name, c).readout
            changed[c] = int((silenced.argmax(1) != predicted).sum())
        effects.append((changed, events))
    return effects


def silence_order(network: Network, images: torch.Tensor, populations: tuple[str, ...],
                  max_items: int = ORDER_ITEMS) -> tuple[tuple[int, ...], ...]:
    """Per population: its channels in the order they are silenced (fewest changed predictions first, then
    the most events saved, then the channel index), measured on the first ``max_items`` of ``images``."""
    order = []
    for changed, events in channel_effects(network, images[:max_items], populations):
        order.append(tuple(sorted(range(len(changed)), key=lambda c: (changed[c], -events[c], c))))
    return tuple(order)


def disconnect_silenced(network: Network, silenced: dict[str, np.ndarray], thresholds: dict[str, np.ndarray]
                        ) -> Network:
    """The form of a network with silenced channels that every backend can map: ``network`` has them at
    :data:`SILENT_THRESHOLD` (how the search simulates them); here each silenced channel gets its threshold
    back from ``thresholds`` (name -> ``[C]``, the scaled ones) and instead receives nothing: its incoming
    weights (the last op of every projection into it, a dense or convolution op) and its bias are zeroed, so
    its membrane stays at its initial value below threshold and it never fires, as at SILENT_THRESHOLD; the
    spikes and events of every other neuron are the same. A SILENT_THRESHOLD spike amplitude would scale
    these channels' outgoing weights by 1e30 on the PyNN machines (``docs/semantics.md``). A population whose
    incoming chain ends in another op keeps SILENT_THRESHOLD. Returns a copy; ``network`` is not changed."""
    out = copy.copy(network)
    out.populations = dict(network.populations)
    out.projections = list(network.projections)
    for name, channels in silenced.items():
        if len(channels) == 0:
            continue
        incoming = [i for i, p in enumerate(out.projections) if p.target == name]
        if not all(isinstance(out.projections[i].ops[-1] if out.projections[i].ops else None, (Dense, Conv2d))
                   for i in incoming):
            continue
        for i in incoming:
            projection = copy.copy(out.projections[i])
            last = projection.ops[-1]
            weight = np.array(last.weight, copy=True)
            weight[channels] = 0.0
            projection.ops = [*projection.ops[:-1], dataclasses.replace(last, weight=weight)]
            out.projections[i] = projection
        population = copy.copy(out.populations[name])
        neuron = copy.copy(population.neuron)
        threshold = np.array(neuron.threshold, np.float32, copy=True)
        threshold[channels] = np.asarray(thresholds[name], np.float32)[channels]
        neuron.threshold = threshold
        if not isinstance(neuron.v_init, str) and np.ndim(neuron.v_init) == 1:
            v_init = np.array(neuron.v_init, np.float32, copy=True)
            v_init[channels] = (v_init[channels] / SILENT_THRESHOLD) * threshold[channels]
            neuron.v_init = v_init
        population.neuron = neuron
        if population.bias is not None:
            bias = np.array(population.bias, copy=True)
            if bias.ndim == 0 or bias.shape[0] != population.shape[0]:
                bias = per_neuron(bias, population.shape).astype(bias.dtype)
            bias[channels] = 0.0
            population.bias = bias
        out.populations[name] = population
    return out
