"""IR -> plain arrays a PyNN script can build from (``docs/semantics.md``, "PyNN lowering").

Every projection's op chain (pooling, flatten, dense or convolution) is unrolled into an explicit
list of synapses (pre index, post index, weight) with the source's spike amplitude (its threshold)
folded into the weights. Projections from the input population are not lowered to synapses: with the
analog encoding their current is the same every step, so it becomes a per-item constant "drive"
current of the target neurons (current injection), computed here with the IR's own op chain.
Populations are indexed in C order of their shape, as ``reshape(-1)`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from neurodeploy.errors import BackendError
from neurodeploy.ir.connectivity import fan_maps
from neurodeploy.ir.network import Network, Projection
from neurodeploy.ir.population import initial_membrane, per_neuron
from neurodeploy.ir.torch_ops import compile_chain
from neurodeploy.passes.synapse_matrix import projection_matrix


@dataclass
class SynapseList:
    """Synapses of one projection: ``weight[k]`` from source neuron ``pre[k]`` to target ``post[k]``."""

    source: str
    target: str
    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return int(self.pre.size)


@dataclass
class LoweredPopulation:
    """Per-neuron parameters (flat arrays of ``size``) of one non-input population."""

    name: str
    role: str
    size: int
    threshold: np.ndarray
    bias: np.ndarray
    v_init: np.ndarray
    reset_zero: bool
    spiking: bool
    fan_out: np.ndarray  # synapses leaving each neuron (counts synaptic events)


@dataclass
class LoweredNetwork:
    populations: list[LoweredPopulation]
    synapses: list[SynapseList]
    #: (target population, op chain) of the projections from the input population
    input_projections: list[Projection] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()

    def drive(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per-item constant input current of each first-layer population: ``x [B, *input_shape]`` ->
        ``{population: [B, size]}``."""
        out: dict[str, np.ndarray] = {}
        with torch.no_grad():
            for projection in self.input_projections:
                current = compile_chain(projection.ops, dtype=torch.float64)(torch.as_tensor(x, dtype=torch.float64))
                flat = current.reshape(x.shape[0], -1).numpy()
                out[projection.target] = out.get(projection.target, 0.0) + flat
        return out


def projection_synapses(network: Network, projection: Projection) -> SynapseList:
    """Unrolls the op chain into the non-zero entries of its matrix; weights are multiplied by the
    source's spike amplitude."""
    matrix = projection_matrix(network, projection).tocoo()
    return SynapseList(projection.source, projection.target, matrix.col.astype(np.int64),
                       matrix.row.astype(np.int64), matrix.data)


def lower_network(network: Network, encoding: str = "analog", input_as_synapses: bool = False) -> LoweredNetwork:
    """Lowers a validated IR network. Raises BackendError for what PyNN machines cannot express
    here: QFFS spike caps and negative spikes, leaky neurons, spike readouts, spiking encodings.
    ``input_as_synapses`` unrolls the input projections into synapses from a spike-source
    population (for machines that receive input as spikes) instead of the per-item drive current."""
    network.validate()
    if encoding != "analog":
        raise BackendError(f"the PyNN backends take the analog encoding (current injection), not {encoding!r}")
    populations = []
    fan_out, _ = fan_maps(network)
    for name in network.topological_order():
        pop = network.populations[name]
        if pop.role == "input":
            continue
        neuron = pop.neuron
        unsupported = [what for what, flag in (("spike caps (QFFS)", neuron.spike_cap is not None),
                                               ("negative spikes (QFFS)", neuron.negative_spikes),
                                               ("leaky neurons", neuron.leak_tau is not None),
                                               ("spike-count readouts", pop.role == "output" and
                                                neuron.readout == "spikes")) if flag]
        if unsupported:
            raise BackendError(f"population {name!r} uses {', '.join(unsupported)}, which the exact PyNN "
                               "cell does not implement; use the gpu backend")
        threshold = per_neuron(neuron.threshold, pop.shape).reshape(-1)
        bias = np.zeros(pop.size) if pop.bias is None else per_neuron(pop.bias, pop.shape).reshape(-1)
        populations.append(LoweredPopulation(name, pop.role, pop.size, threshold, bias,
                                             initial_membrane(neuron, pop.shape).reshape(-1).astype(np.float64),
                                             neuron.reset == "zero", pop.role == "hidden",
                                             fan_out[name].reshape(-1).astype(np.float64)))
    synapses, inputs = [], []
    for projection in network.projections:
        if network.populations[projection.source].role == "input" and not input_as_synapses:
            inputs.append(projection)
        else:
            synapses.append(projection_synapses(network, projection))
    return LoweredNetwork(populations, synapses, inputs, network.input.shape)

