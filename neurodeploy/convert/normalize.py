"""Data-based normalization (``docs/semantics.md``, "Conversion"): scale every hidden population so that its ANN
activation scale lambda maps to firing at threshold 1.

For a projection from ``src`` to ``dst``: W <- W * lambda_src / lambda_dst (per channel:
W_ij * lambda_src_j / lambda_dst_i), and the target bias b <- b / lambda_dst. The input and the
output population have lambda = 1, so the output membrane O(t) approximates t * ANN logits.
"""

from __future__ import annotations

import numpy as np

from neurodeploy.convert.fold import fold_scales
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import Scale


def channel_lambdas(scales: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-channel lambda (``[C]``) from per-group scales (``[1]`` layer or ``[C]`` neuron).

    A group that never activates on the calibration data (scale 0) gets lambda 1: its incoming
    weights then stay as trained instead of dividing by zero.
    """
    scales = np.asarray(scales, np.float64)
    lam = np.full(shape[0], scales[0]) if scales.size == 1 else scales.copy()
    lam[~(lam > 0)] = 1.0
    return lam


def apply_normalization(network: Network, lambdas: dict[str, np.ndarray]) -> Network:
    """Rescales projections and biases in place; ``lambdas`` maps hidden population -> ``[C]``."""
    def lam(name: str) -> np.ndarray | None:
        return lambdas.get(name)

    for projection in network.projections:
        source = network.populations[projection.source]
        head, tail = lam(projection.source), lam(projection.target)
        ops = list(projection.ops)
        if head is not None:
            ops.insert(0, Scale(head))
        if tail is not None:
            ops.append(Scale(1.0 / tail))
        projection.ops = fold_scales(ops, source.shape)
    for name, population in network.populations.items():
        factor = lam(name)
        if factor is not None and population.bias is not None:
            bias = population.bias
            view = factor.reshape((-1,) + (1,) * (bias.ndim - 1))
            population.bias = bias / view
    return network
