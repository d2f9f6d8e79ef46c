"""A projection as an explicit sparse matrix: what machines with per-synapse memories store."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from neurodeploy.ir.network import Network, Projection
from neurodeploy.ir.op_matrix import chain_matrix
from neurodeploy.ir.population import Population, per_neuron


def synapse_matrix(projection: Projection, source_shape: tuple[int, ...], amplitude: np.ndarray | None = None
                   ) -> sp.csc_matrix:
    """The composed linear map of the op chain (pooling, flatten, dense, convolution) as a sparse
    float64 matrix ``[n_target, n_source]`` (C order of both shapes, as ``reshape(-1)``), columns
    multiplied by the source's spike amplitude ``amplitude [n_source]`` (its threshold) when given; entries
    that are exactly 0 are left out. Each op's own matrix is built from its parameters
    (``neurodeploy.ir.op_matrix``, time and memory linear in its synapses) and the chain's is their sparse product
    (:func:`~neurodeploy.ir.op_matrix.chain_matrix`): the same matrix as the chain applied to one-hot inputs in
    float64 (quadratic in the population sizes, minutes on a ResNet), to the last bit where every entry is one
    product of weights (a chain with one weighted op and no overlapping pooling), else to rounding (the order of a
    sum's terms)."""
    matrix = chain_matrix(projection.ops, source_shape)
    if amplitude is not None:
        matrix = matrix @ sp.diags(np.asarray(amplitude, np.float64))
    matrix = sp.csc_matrix(matrix)
    matrix.eliminate_zeros()
    matrix.sum_duplicates()
    return matrix


def spike_amplitude(population: Population) -> np.ndarray | None:
    """Per-neuron amplitude ``[size]`` of the spikes ``population`` sends (its threshold), or None for
    the input population, whose spikes are unit spikes."""
    if population.role == "input":
        return None
    return per_neuron(population.neuron.threshold, population.shape).reshape(-1)


def projection_matrix(network: Network, projection: Projection) -> sp.csc_matrix:
    """:func:`synapse_matrix` of one of ``network``'s projections, its source's spike amplitude folded in."""
    source = network.populations[projection.source]
    return synapse_matrix(projection, source.shape, spike_amplitude(source))


def receptor_parts(matrix: sp.spmatrix) -> tuple[sp.spmatrix, sp.spmatrix]:
    """(excitatory, inhibitory) synapses of a signed matrix, both as non-negative magnitudes."""
    return matrix.maximum(0), -matrix.minimum(0)
