"""Synapse counts of projections: fan-out per source neuron and fan-in per target neuron.

A synapse of source j is a target i that j reaches through at least one path of non-zero weights of
the projection's op chain (docs/semantics.md, "Synaptic operations"): the non-zero entries of the
composed map of the chain's supports (every weight replaced by 1 when non-zero, pooling by a sum),
which are the non-zero entries of the composed linear map A (target x source) save entries that paths
of opposite signs cancel exactly. :func:`neurodeploy.ir.reach.reach_counts` counts them from the ops'
non-zero patterns in memory and time that grow with the maps and kernels; chains it does not cover
(two ops that mix channels) are counted from path counts when every path is unique, else from the
composed support map as a sparse matrix (:func:`matrix_fan`, from each op's matrix: linear in the synapses).
"""

from __future__ import annotations

import numpy as np
import torch

from neurodeploy.ir.network import Network, Projection
from neurodeploy.ir.op_matrix import chain_matrix
from neurodeploy.ir.ops import chain_out_shape
from neurodeploy.ir.reach import reach_counts
from neurodeploy.ir.torch_ops import compile_chain


def _paths_are_unique(projection: Projection) -> bool:
    weighted = sum(op.weighted for op in projection.ops)
    overlapping = any(getattr(op, "overlapping", False) for op in projection.ops)  # 1-D and 2-D pooling
    return weighted <= 1 and not overlapping


def projection_fan(projection: Projection, source_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(fan_out, fan_in)``: int64 arrays shaped like the source and target populations."""
    target_shape = chain_out_shape(projection.ops, source_shape)
    counted = reach_counts(projection.ops, source_shape)
    if counted is not None:
        return counted[0].reshape(source_shape), counted[1].reshape(target_shape)
    if _paths_are_unique(projection):
        chain = compile_chain(projection.ops, support=True, dtype=torch.float64)
        x = torch.ones((1, *source_shape), dtype=torch.float64, requires_grad=True)
        y = chain(x)
        y.sum().backward()
        fan_out = x.grad[0].round().long().numpy()
        fan_in = y.detach()[0].round().long().numpy()
        return fan_out, fan_in
    return matrix_fan(projection, source_shape)


def matrix_fan(projection: Projection, source_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(fan_out, fan_in)`` from the non-zero entries of the composed support map
    (:func:`neurodeploy.ir.op_matrix.chain_matrix` with ``support``: non-negative, its entries count paths and no two
    cancel), in time and memory that grow with the ops' synapses, not with ``n_source x n_target``."""
    matrix = chain_matrix(projection.ops, source_shape, support=True)
    matrix.sum_duplicates()
    n_source = int(np.prod(source_shape))
    fan_in = np.diff(matrix.indptr).astype(np.int64)
    fan_out = np.bincount(matrix.indices, minlength=n_source).astype(np.int64)
    return fan_out.reshape(source_shape), fan_in.reshape(chain_out_shape(projection.ops, source_shape))


def fan_maps(network: Network) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Total fan-out per neuron of every population and fan-in per neuron of every target population
    (summed over projections)."""
    fan_out = {name: np.zeros(pop.shape, np.int64) for name, pop in network.populations.items()}
    fan_in = {name: np.zeros(pop.shape, np.int64) for name, pop in network.populations.items()}
    for projection in network.projections:
        out, inn = projection_fan(projection, network.populations[projection.source].shape)
        fan_out[projection.source] += out
        fan_in[projection.target] += inn
    return fan_out, fan_in


def size(network: Network) -> tuple[int, int]:
    """(neurons, synapses) of ``network``: neurons of the non-input populations and every unrolled
    synapse (a convolution counts one synapse per kernel weight and output neuron it reaches)."""
    _, fan_in = fan_maps(network)
    neurons = sum(pop.size for pop in network.populations.values() if pop.role != "input")
    return neurons, int(sum(int(counts.sum()) for counts in fan_in.values()))


def network_summary(network: Network) -> list[dict]:
    """One row per population: name, role, shape, neurons, incoming synapses, max fan-in, max fan-out."""
    fan_out, fan_in = fan_maps(network)
    rows = []
    for name, pop in network.populations.items():
        rows.append({
            "population": name,
            "role": pop.role,
            "shape": list(pop.shape),
            "neurons": pop.size,
            "synapses_in": int(fan_in[name].sum()),
            "max_fan_in": int(fan_in[name].max()),
            "max_fan_out": int(fan_out[name].max()),
        })
    return rows
