"""A projection as an explicit sparse matrix: what machines with per-synapse memories store."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from neurodeploy.ir.network import Network, Projection
from neurodeploy.ir.ops import chain_out_shape
from neurodeploy.ir.population import Population, per_neuron
from neurodeploy.ir.torch_ops import chain_columns, compile_chain


def synapse_matrix(projection: Projection, source_shape: tuple[int, ...], amplitude: np.ndarray | None = None
                   ) -> sp.csc_matrix:
    """The composed linear map of the op chain (pooling, flatten, dense, convolution) as a sparse
    float64 matrix ``[n_target, n_source]`` (C order of both shapes, as ``reshape(-1)``), columns
    multiplied by the source's spike amplitude ``amplitude [n_source]`` (its threshold) when given.
    Built from one-hot inputs in batches of bounded size, so any chain works (in time quadratic in the
    population sizes)."""
    n_source = int(np.prod(source_shape))
    n_target = int(np.prod(chain_out_shape(projection.ops, source_shape)))
    rows, cols, values = [], [], []
    for start, columns in chain_columns(compile_chain(projection.ops, dtype=torch.float64), source_shape, n_target):
        columns = columns.numpy()
        j, i = np.nonzero(columns)
        scale = 1.0 if amplitude is None else amplitude[j + start]
        rows.append(i)
        cols.append(j + start)
        values.append(columns[j, i] * scale)
    matrix = sp.coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(n_target, n_source))
    return matrix.tocsc()


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
