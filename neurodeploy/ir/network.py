"""The network IR: populations (nodes) joined by projections (edges) in a directed acyclic graph.

A population with several incoming projections sums their currents, which is how residual networks
are carried. The graph is a ``networkx.MultiDiGraph`` so two projections may join the same pair.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from neurodeploy.errors import IRValidationError
from neurodeploy.ir.ops import OP_TYPES, Op, chain_out_shape
from neurodeploy.ir.population import READOUTS, RESETS, ROLES, VINIT_NAMES, Population

#: neurons one population may hold
MAX_NEURONS = 1 << 28


@dataclass
class Projection:
    """Synapses from ``source`` to ``target``: the chain ``ops`` maps source spikes (amplitude =
    the source threshold) of shape ``[B, *source.shape]`` to target current ``[B, *target.shape]``."""

    source: str
    target: str
    ops: list[Op]

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

    def connect(self, source: str, target: str, ops: list[Op]) -> Projection:
        projection = Projection(source, target, list(ops))
        self.projections.append(projection)
        return projection

    @property
    def graph(self) -> nx.MultiDiGraph:
        graph = nx.MultiDiGraph()
        graph.add_nodes_from(self.populations)
        for index, projection in enumerate(self.projections):
            graph.add_edge(projection.source, projection.target, key=index)
        return graph

    def topological_order(self) -> list[str]:
        """Population names, sources before targets (ties in insertion order)."""
        order = {name: i for i, name in enumerate(self.populations)}
        return list(nx.lexicographical_topological_sort(self.graph, key=order.__getitem__))

    def depths(self) -> dict[str, int]:
        """Projections on the longest path from the input to each population (the input has 0);
        with one step of delay per projection, the steps a spike needs to get there."""
        depth = {name: 0 for name in self.populations}
        for name in self.topological_order():
            for projection in self.incoming(name):
                depth[name] = max(depth[name], depth[projection.source] + 1)
        return depth

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
        if not nx.is_directed_acyclic_graph(self.graph):
            cycle = nx.find_cycle(self.graph)
            raise IRValidationError(f"the network has a cycle: {cycle}")
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
    if neuron.leak_tau is not None and (isinstance(neuron.leak_tau, bool | np.bool_) or not isinstance(
            neuron.leak_tau, numbers.Real) or not math.isfinite(neuron.leak_tau) or not neuron.leak_tau > 0):
        raise IRValidationError(f"{where}: leak_tau must be a positive finite number or None, got "
                                f"{neuron.leak_tau!r:.40}")
    if neuron.spike_cap is not None and not _is_whole(neuron.spike_cap, 1):
        raise IRValidationError(f"{where}: spike_cap must be a positive whole number or None, got "
                                f"{neuron.spike_cap!r:.40}")
    if not isinstance(neuron.negative_spikes, bool | np.bool_):
        raise IRValidationError(f"{where}: negative_spikes must be true or false, got {neuron.negative_spikes!r:.40}")
    if neuron.readout not in READOUTS:
        raise IRValidationError(f"{where}: readout must be 'membrane' or 'spikes', not {neuron.readout!r:.40}")


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
