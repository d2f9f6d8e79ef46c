"""The network IR: populations (nodes) joined by projections (edges) in a directed graph.

A population with several incoming projections sums their currents, which is how residual networks
are carried. The graph is a ``networkx.MultiDiGraph`` so two projections may join the same pair. It may
hold cycles (recurrent networks) when every cycle passes through a projection with a delay of at least
one step (``docs/semantics.md``, "The IR"); converted networks are acyclic with no delays.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from neurodeploy.errors import IRValidationError
from neurodeploy.ir.ops import OP_TYPES, Op, chain_out_shape
from neurodeploy.ir.population import READOUTS, RESET_TIMINGS, RESETS, ROLES, VINIT_NAMES, Population

#: neurons one population may hold
MAX_NEURONS = 1 << 28
#: what a network may use beyond the non-leaky IF neurons and one-step pipelines of converted networks, by the
#: names backends refuse them with (:meth:`Network.beyond`): the names of ``NeuronSpec.dynamics``, "spike-count
#: readouts", "delays" (a projection of more than one step) and "recurrence" (cycles through delayed projections)
BEYOND_IF = ("leak", "per-neuron leak_tau", "v_leak", "v_reset", "tau_syn", "next-step reset", "spike-count readouts",
             "delays", "recurrence")


@dataclass
class Projection:
    """Synapses from ``source`` to ``target``: the chain ``ops`` maps source spikes (amplitude =
    the source threshold) of shape ``[B, *source.shape]`` to target current ``[B, *target.shape]``.

    delay: synaptic delay in whole steps (a spike of step t arrives at step t + delay). It is the
    projection's own delay; machines with a minimum delay (one step on PyNN machines: the gpu ``pynn``
    profile, NEURON, SpiNNaker) apply ``max(delay, minimum)``.
    """

    source: str
    target: str
    ops: list[Op]
    delay: int = 0

    @property
    def label(self) -> str:
        return f"{self.source}->{self.target}"


@dataclass
class Network:
    """A spiking network: populations in insertion order, projections, and free-form metadata
    (JSON-serializable: conversion settings, source model, ANN statistics)."""

    populations: dict[str, Population] = field(default_factory=dict)
    projections: list[Projection] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def add_population(self, population: Population) -> Population:
        if population.name in self.populations:
            raise IRValidationError(f"population {population.name!r} already exists")
        self.populations[population.name] = population
        return population

    def connect(self, source: str, target: str, ops: list[Op], delay: int = 0) -> Projection:
        projection = Projection(source, target, list(ops), delay)
        self.projections.append(projection)
        return projection

    @property
    def graph(self) -> nx.MultiDiGraph:
        graph = nx.MultiDiGraph()
        graph.add_nodes_from(self.populations)
        for index, projection in enumerate(self.projections):
            graph.add_edge(projection.source, projection.target, key=index)
        return graph

    def feedback(self) -> list[bool]:
        """For every projection (in order): whether it closes a cycle, i.e. has a delay of at least one
        step and joins two populations of one strongly connected component (a self-projection included).
        Without them the graph is acyclic (in a valid network every cycle holds such a projection)."""
        component = {}
        for k, members in enumerate(nx.strongly_connected_components(self.graph)):
            component.update(dict.fromkeys(members, k))
        return [p.delay >= 1 and component.get(p.source) == component.get(p.target) for p in self.projections]

    def topological_order(self) -> list[str]:
        """Population names, sources before targets (ties in insertion order), over the graph without
        its feedback projections (:meth:`feedback`)."""
        order = {name: i for i, name in enumerate(self.populations)}
        return list(nx.lexicographical_topological_sort(self._forward_graph(), key=order.__getitem__))

    def _forward_graph(self) -> nx.MultiDiGraph:
        graph = nx.MultiDiGraph()
        graph.add_nodes_from(self.populations)
        for index, (projection, back) in enumerate(zip(self.projections, self.feedback(), strict=True)):
            if not back:
                graph.add_edge(projection.source, projection.target, key=index)
        return graph

    def depths(self) -> dict[str, int]:
        """Projections on the longest path from the input to each population (the input has 0), feedback
        projections left out; with one step of delay per projection, the steps a spike needs to get there."""
        return self._longest_paths(lambda projection: 1)

    def pipeline_delay(self, minimum: int = 0) -> int:
        """Steps of the longest input -> output path (feedback projections left out) when each projection
        delays by ``max(delay, minimum)`` steps: how much later than the zero-delay semantics a machine with
        a minimum delay of ``minimum`` steps answers (``minimum`` times the depth for converted networks)."""
        return self._longest_paths(lambda projection: max(projection.delay, minimum))[self.output.name]

    def _longest_paths(self, length) -> dict[str, int]:
        steps = {name: 0 for name in self.populations}
        forward = [p for p, back in zip(self.projections, self.feedback(), strict=True) if not back]
        for name in self.topological_order():
            for projection in forward:
                if projection.target == name:
                    steps[name] = max(steps[name], steps[projection.source] + length(projection))
        return steps

    def beyond(self, carries=()) -> list[tuple[str, list[str]]]:
        """``(where, [what])`` for every part that uses something of :data:`BEYOND_IF` not in ``carries``:
        populations by name (in topological order), then "projections"."""
        found = []
        for name in self.topological_order():
            pop = self.populations[name]
            if pop.role == "input":
                continue
            used = pop.neuron.dynamics() + (["spike-count readouts"] if pop.role == "output" and
                                            pop.neuron.readout == "spikes" else [])
            missing = [what for what in used if what not in carries]
            if missing:
                found.append((f"population {name!r}", missing))
        kinds = [what for what, flag in (("delays", any(p.delay > 1 for p in self.projections)),
                                         ("recurrence", any(self.feedback()))) if flag and what not in carries]
        if kinds:
            found.append(("projections", kinds))
        return found

    def incoming(self, name: str) -> list[Projection]:
        return [p for p in self.projections if p.target == name]

    @property
    def input(self) -> Population:
        return next(p for p in self.populations.values() if p.role == "input")

    @property
    def output(self) -> Population:
        return next(p for p in self.populations.values() if p.role == "output")

    def validate(self, values: bool = True) -> Network:
        """Checks the structure, shapes and values; raises IRValidationError naming the culprit. With
        ``values=False`` array contents are not looked at (shapes and dtypes only), so arrays may be
        placeholders that allocate nothing (``np.broadcast_to``)."""
        if not isinstance(self.metadata, dict):
            raise IRValidationError(f"network metadata must be a dict, got {type(self.metadata).__name__}")
        for name, population in self.populations.items():
            if not isinstance(population.name, str) or not population.name or population.name != name:
                raise IRValidationError(f"population {name!r}: name must be a non-empty string equal to its key")
            if population.role not in ROLES:
                raise IRValidationError(f"population {name!r}: role {population.role!r} is not one of {ROLES}")
        roles = [p.role for p in self.populations.values()]
        for role in ("input", "output"):
            if roles.count(role) != 1:
                raise IRValidationError(f"a network needs exactly one {role} population, found {roles.count(role)}")
        for projection in self.projections:
            for end in (projection.source, projection.target):
                if not isinstance(end, str) or end not in self.populations:
                    raise IRValidationError(f"projection {projection.label}: unknown population {end!r}")
            if self.populations[projection.target].role == "input":
                raise IRValidationError(f"projection {projection.label}: the input population cannot be a target")
            source = self.populations[projection.source]
            if source.role == "output" and (source.neuron is None or source.neuron.readout == "membrane"):
                raise IRValidationError(f"projection {projection.label}: a membrane readout never spikes")
        for projection in self.projections:
            if not _is_whole(projection.delay, 0):
                raise IRValidationError(f"projection {projection.label}: delay must be a whole number of steps >= 0, "
                                        f"got {projection.delay!r:.40}")
        instantaneous = nx.MultiDiGraph()
        instantaneous.add_nodes_from(self.populations)
        instantaneous.add_edges_from((p.source, p.target) for p in self.projections if p.delay == 0)
        if not nx.is_directed_acyclic_graph(instantaneous):
            cycle = [edge[:2] for edge in nx.find_cycle(instantaneous)]
            raise IRValidationError(f"the network has a cycle without delay: {cycle} (every cycle needs a "
                                    "projection with a delay of at least one step)")
        for population in self.populations.values():
            _validate_population(population, self.incoming(population.name), values)
        for projection in self.projections:
            _validate_projection(projection, self.populations, values)
        return self


def _check_finite(where: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise IRValidationError(f"{where} contains NaN or infinite values")


def _numeric_array(where: str, value) -> np.ndarray:
    """``value`` (a number or an array of numbers) as an array; bools, strings and objects are refused."""
    if isinstance(value, bool | np.bool_ | str | bytes):
        raise IRValidationError(f"{where} must be a number or an array of numbers, got {value!r:.40}")
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise IRValidationError(f"{where} must hold numbers, not {array.dtype}")
    return array


def _is_whole(value, minimum: int) -> bool:
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
            and int(value) >= minimum)


def _validate_population(population: Population, incoming: list[Projection], values: bool = True) -> None:
    where = f"population {population.name!r}"
    if not population.shape or any(dim < 1 for dim in population.shape):
        raise IRValidationError(f"{where}: shape {population.shape} needs at least one dimension, each at least 1")
    if population.size > MAX_NEURONS:
        raise IRValidationError(f"{where}: {population.size:,} neurons, more than the {MAX_NEURONS:,} allowed")
    if not isinstance(population.metadata, dict):
        raise IRValidationError(f"{where}: metadata must be a dict")
    if population.role == "input":
        if population.neuron is not None or population.bias is not None:
            raise IRValidationError(f"{where}: the input population takes no neuron spec or bias")
        return
    if not incoming:
        raise IRValidationError(f"{where} has no incoming projection")
    neuron = population.neuron
    if neuron is None:
        raise IRValidationError(f"{where}: {population.role} population needs a neuron spec")
    if population.bias is not None:
        bias = _numeric_array(f"{where} bias", population.bias)
        if bias.shape not in (population.shape, population.shape[:1]):
            raise IRValidationError(
                f"{where}: bias shape {bias.shape} is neither per neuron {population.shape} "
                f"nor per channel {population.shape[:1]}"
            )
        if values:
            _check_finite(f"{where} bias", bias)
    threshold = _numeric_array(f"{where} threshold", neuron.threshold)
    if threshold.shape not in ((), population.shape[:1], population.shape):
        raise IRValidationError(f"{where}: threshold shape {threshold.shape} fits neither scalar, channel nor neuron")
    if values:
        _check_finite(f"{where} threshold", threshold)
        if np.any(threshold <= 0):
            raise IRValidationError(f"{where}: thresholds must be positive (min {threshold.min()})")
    if neuron.reset not in RESETS:
        raise IRValidationError(f"{where}: reset must be 'subtract' or 'zero', not {neuron.reset!r}")
    if isinstance(neuron.v_init, str):
        if neuron.v_init not in VINIT_NAMES:
            raise IRValidationError(f"{where}: v_init {neuron.v_init!r} is not one of {VINIT_NAMES}")
    else:
        v_init = _numeric_array(f"{where} v_init", neuron.v_init)
        if v_init.shape not in ((), population.shape[:1], population.shape):
            raise IRValidationError(f"{where}: v_init shape {v_init.shape} fits neither scalar, channel nor neuron "
                                    f"{population.shape}")
        if values:
            _check_finite(f"{where} v_init", v_init)
    if not _is_whole(neuron.v_init_seed, 0):
        raise IRValidationError(f"{where}: v_init_seed must be a whole number >= 0, got {neuron.v_init_seed!r}")
    for key in ("leak_tau", "tau_syn"):
        value = getattr(neuron, key)
        if value is None:
            continue
        tau = _per_neuron_field(where, key, value, population.shape)
        if values and (not np.all(np.isfinite(tau)) or np.any(tau <= 0)):
            raise IRValidationError(f"{where}: {key} must be positive and finite (steps) or None, got "
                                    f"{value!r:.40}")
    for key in ("v_leak", "v_reset"):
        value = _per_neuron_field(where, key, getattr(neuron, key), population.shape)
        if values:
            _check_finite(f"{where} {key}", value)
    if neuron.reset_timing not in RESET_TIMINGS:
        raise IRValidationError(f"{where}: reset_timing must be one of {RESET_TIMINGS}, not "
                                f"{neuron.reset_timing!r:.40}")
    if neuron.reset_timing == "next_step" and neuron.reset != "subtract":
        raise IRValidationError(f"{where}: reset_timing 'next_step' applies to reset 'subtract' only")
    if values and neuron.reset == "subtract" and np.any(np.asarray(neuron.v_reset) != 0):
        raise IRValidationError(f"{where}: v_reset applies to reset 'zero' (hard reset) only; reset 'subtract' "
                                "subtracts the threshold")
    if (neuron.spike_cap is not None or neuron.negative_spikes) and neuron.reset_timing != "immediate":
        raise IRValidationError(f"{where}: QFFS spike caps and negative spikes reset immediately")
    if neuron.spike_cap is not None and not _is_whole(neuron.spike_cap, 1):
        raise IRValidationError(f"{where}: spike_cap must be a positive whole number or None, got "
                                f"{neuron.spike_cap!r:.40}")
    if not isinstance(neuron.negative_spikes, bool | np.bool_):
        raise IRValidationError(f"{where}: negative_spikes must be true or false, got {neuron.negative_spikes!r:.40}")
    if neuron.readout not in READOUTS:
        raise IRValidationError(f"{where}: readout must be 'membrane' or 'spikes', not {neuron.readout!r:.40}")


def _per_neuron_field(where: str, key: str, value, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` checked to be a number or an array of numbers that is scalar, per channel or per neuron."""
    array = _numeric_array(f"{where} {key}", value)
    if array.shape not in ((), shape[:1], shape):
        raise IRValidationError(f"{where}: {key} shape {array.shape} fits neither scalar, channel nor neuron {shape}")
    return array


def _validate_projection(projection: Projection, populations: dict[str, Population], values: bool = True) -> None:
    source, target = populations[projection.source], populations[projection.target]
    where = f"projection {projection.label}"
    for index, op in enumerate(projection.ops):
        if not isinstance(op, Op) or type(op) not in OP_TYPES.values():
            raise IRValidationError(f"{where}: op {index} is not an IR op ({type(op).__name__})")
        for key, array in op.arrays().items():
            _numeric_array(f"{where} op {index} ({op.kind}) {key}", array)
    try:
        shape = chain_out_shape(projection.ops, source.shape)
    except IRValidationError as err:
        raise IRValidationError(f"{where}: {err}") from err
    if shape != target.shape:
        raise IRValidationError(f"{where}: ops produce shape {shape} but {target.name!r} has shape {target.shape}")
    if values:
        for index, op in enumerate(projection.ops):
            for key, array in op.arrays().items():
                _check_finite(f"{where} op {index} ({op.kind}) {key}", np.asarray(array))
