"""The network IR: populations (nodes) joined by projections (edges) in a directed acyclic graph.

A population with several incoming projections sums their currents, which is how residual networks
are carried. The graph is a ``networkx.MultiDiGraph`` so two projections may join the same pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from neurodeploy.errors import IRValidationError
from neurodeploy.ir.ops import Op, chain_out_shape
from neurodeploy.ir.population import VINIT_NAMES, Population


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

    def validate(self) -> Network:
        """Checks the structure, shapes and values; raises IRValidationError naming the culprit."""
        roles = [p.role for p in self.populations.values()]
        for role in ("input", "output"):
            if roles.count(role) != 1:
                raise IRValidationError(f"a network needs exactly one {role} population, found {roles.count(role)}")
        for projection in self.projections:
            for end in (projection.source, projection.target):
                if end not in self.populations:
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
            _validate_population(population, self.incoming(population.name))
        for projection in self.projections:
            _validate_projection(projection, self.populations)
        return self


def _check_finite(where: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise IRValidationError(f"{where} contains NaN or infinite values")


def _validate_population(population: Population, incoming: list[Projection]) -> None:
    where = f"population {population.name!r}"
    if population.size < 1:
        raise IRValidationError(f"{where}: empty shape {population.shape}")
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
        bias = np.asarray(population.bias)
        if bias.shape not in (population.shape, population.shape[:1]):
            raise IRValidationError(
                f"{where}: bias shape {bias.shape} is neither per neuron {population.shape} "
                f"nor per channel {population.shape[:1]}"
            )
        _check_finite(f"{where} bias", bias)
    threshold = np.asarray(neuron.threshold, dtype=np.float64)
    if threshold.shape not in ((), population.shape[:1], population.shape):
        raise IRValidationError(f"{where}: threshold shape {threshold.shape} fits neither scalar, channel nor neuron")
    _check_finite(f"{where} threshold", threshold)
    if np.any(threshold <= 0):
        raise IRValidationError(f"{where}: thresholds must be positive (min {threshold.min()})")
    if neuron.reset not in ("subtract", "zero"):
        raise IRValidationError(f"{where}: reset must be 'subtract' or 'zero', not {neuron.reset!r}")
    if isinstance(neuron.v_init, str):
        if neuron.v_init not in VINIT_NAMES:
            raise IRValidationError(f"{where}: v_init {neuron.v_init!r} is not one of {VINIT_NAMES}")
    else:
        v_init = np.asarray(neuron.v_init, dtype=np.float64)
        try:
            np.broadcast_to(v_init, population.shape)
        except ValueError as err:
            raise IRValidationError(f"{where}: v_init shape {v_init.shape} does not fit {population.shape}") from err
        _check_finite(f"{where} v_init", v_init)
    if neuron.leak_tau is not None and not neuron.leak_tau > 0:
        raise IRValidationError(f"{where}: leak_tau must be positive or None")
    if neuron.spike_cap is not None and neuron.spike_cap < 1:
        raise IRValidationError(f"{where}: spike_cap must be a positive integer or None")
    if neuron.readout not in ("membrane", "spikes"):
        raise IRValidationError(f"{where}: readout must be 'membrane' or 'spikes'")


def _validate_projection(projection: Projection, populations: dict[str, Population]) -> None:
    source, target = populations[projection.source], populations[projection.target]
    where = f"projection {projection.label}"
    try:
        shape = chain_out_shape(projection.ops, source.shape)
    except IRValidationError as err:
        raise IRValidationError(f"{where}: {err}") from err
    if shape != target.shape:
        raise IRValidationError(f"{where}: ops produce shape {shape} but {target.name!r} has shape {target.shape}")
    for index, op in enumerate(projection.ops):
        for key, array in op.arrays().items():
            _check_finite(f"{where} op {index} ({op.kind}) {key}", np.asarray(array))
