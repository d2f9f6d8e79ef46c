"""The rate model of a converted network (``docs/semantics.md``, "Neuron model", "Rate model"): what every
population does on average per step, without simulating steps.

A hidden neuron of current ``c`` (its incoming signals through each projection's op chain, plus its bias) fires
``clip(c / theta, 0, k)`` spikes per step (k = 1 for the IR's neuron; a cell that fires up to k times a step, as
SpiNNaker's with k sub-steps, takes k) and passes ``rate * theta`` on; the input population passes its values on;
the output population's current is the readout. Feedback projections (from a population not computed before
their target) are left out: an estimate for recurrent networks.

Two users: the ring-buffer sizing (``neurodeploy.passes.ring_buffers.firing_rates``: float64, k sub-steps) and
the order in which phase 2 silences channels (``neurodeploy.optimize.silence``: float32, each channel silenced
alone, recomputed from its population on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurodeploy.ir.network import Network
from neurodeploy.ir.population import per_neuron
from neurodeploy.ir.torch_ops import compile_chain


@dataclass
class Rates:
    """The rate model on a batch of B items.

    readout: the output population's current ``[B, n_classes]``.
    rates: spikes per step ``[B, *shape]`` of every hidden population.
    signals: what each population passes on, ``[B, *shape]``: ``rate * theta`` (hidden), the items (input).
    """

    readout: torch.Tensor
    rates: dict[str, torch.Tensor]
    signals: dict[str, torch.Tensor]


class RateModel:
    """The rate model of ``network`` (module docstring) in ``dtype`` on the CPU; ``max_rate``: k, the most spikes a
    neuron fires per step."""

    def __init__(self, network: Network, dtype: torch.dtype = torch.float32, max_rate: float = 1.0):
        self.network = network
        self.dtype = dtype
        self.max_rate = float(max_rate)
        self.order = network.topological_order()
        self.chains = [(p.source, p.target, compile_chain(p.ops, dtype=dtype)) for p in network.projections]
        self.thetas = {name: torch.as_tensor(per_neuron(pop.neuron.threshold, pop.shape), dtype=dtype)
                       for name, pop in network.populations.items() if pop.role == "hidden"}

    @torch.no_grad()
    def forward(self, x: torch.Tensor, base: Rates | None = None, silence: str | None = None,
                channel: int | None = None) -> Rates:
        """The rate model on items ``x [B, *input_shape]``. With ``base`` (a previous call on the same items),
        ``silence`` (a hidden population) and ``channel``: that channel's rate set to 0, every population before
        ``silence`` taken from ``base`` (not computed again)."""
        x = x.to(self.dtype)
        rates: dict[str, torch.Tensor] = {}
        signals: dict[str, torch.Tensor] = {}
        readout = None
        reuse = base is not None and silence is not None and channel is not None
        last = self.order.index(silence) if reuse else -1
        for index, name in enumerate(self.order):
            if index < last:
                signals[name] = base.signals[name]
                if name in base.rates:
                    rates[name] = base.rates[name]
                continue
            if index == last:
                rates[name], signals[name] = base.rates[name].clone(), base.signals[name].clone()
                rates[name][:, channel] = 0.0
                signals[name][:, channel] = 0.0
                continue
            pop = self.network.populations[name]
            if pop.role == "input":
                signals[name] = x
                continue
            current = torch.zeros((x.shape[0], *pop.shape), dtype=self.dtype)
            for source, target, chain in self.chains:
                if target == name and source in signals:  # feedback left out (module docstring)
                    current = current + chain(signals[source])
            if pop.bias is not None:
                current = current + torch.as_tensor(per_neuron(pop.bias, pop.shape), dtype=self.dtype)
            if pop.role != "hidden":
                readout = current.reshape(x.shape[0], -1)
                continue
            theta = self.thetas[name]
            rates[name] = (current / theta).clamp(0.0, self.max_rate)
            signals[name] = rates[name] * theta
        return Rates(readout, rates, signals)
