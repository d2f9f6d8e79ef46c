"""Expected summed synaptic weight per step of every population, from firing-rate statistics.

SpiNNaker sums the weights of the spikes a neuron receives in one step in a 16-bit buffer per receptor;
the buffer's scale (its "ring-buffer shift") must cover the largest sum that occurs, or sums saturate,
and must not be much larger, or small weights round to zero. sPyNNaker guesses the sum from assumed
Poisson rates; here it comes from the network's own rates on calibration items.

Rates: the rate model of the converted network (``neurodeploy.ir.rate_model``): an input neuron fires at rate
|x| (spiking encodings), a hidden neuron at ``clip((sum of incoming rate x weight + bias) / theta, 0, 1)``
spikes per step. Per target neuron and receptor the summed weight of one step has mean
``sum_j w_j r_j`` and, for independent Bernoulli spikes, variance ``sum_j w_j^2 r_j (1 - r_j)``; the
expected maximum is ``max over items and neurons of mean + sigma * sd`` (sPyNNaker's own default
sigma is 5), never more than the sum of all the weights (every source firing at once).

With k sub-steps (``neurodeploy.targets.spinnaker``, "Sub-stepping") the ring buffer holds one tick's sum: a neuron
fires up to k times per IR step (``clip(current / theta, 0, k)``), so ``1 / k`` of that per tick, and an input neuron
at ``min(|x| / k, 1)`` per tick.
"""

from __future__ import annotations

import numpy as np
import torch

from neurodeploy.ir.network import Network
from neurodeploy.ir.rate_model import RateModel
from neurodeploy.passes.synapse_matrix import projection_matrix, receptor_parts

METADATA_KEY = "max_expected_summed_weight"


def firing_rates(network: Network, x: np.ndarray, encoding: str = "analog", substeps: int = 1
                 ) -> dict[str, np.ndarray]:
    """Spikes per tick ``[B, size]`` of every spiking population (and of the input population for
    spiking encodings) under the rate model (``neurodeploy.ir.rate_model``, float64, up to ``substeps`` spikes per
    step), for items ``x [B, *input_shape]``, with ``substeps`` ticks per IR step (1: spikes per step)."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    rates: dict[str, np.ndarray] = {}
    if encoding != "analog":
        rates[network.input.name] = (x.abs() / substeps).clamp(max=1.0).reshape(len(x), -1).numpy()
    per_step = RateModel(network, torch.float64, max_rate=substeps).forward(x).rates
    rates.update({name: (rate / substeps).reshape(len(x), -1).numpy() for name, rate in per_step.items()})
    return rates


def _receptor_sums(network: Network, rates: dict[str, np.ndarray]) -> dict[str, list[list]]:
    """Per target population and receptor: ``[mean [B, n], variance [B, n], bound [n]]`` of the weight
    summed in one step when the sources in ``rates`` fire independently at those rates (projections
    from other sources do not count)."""
    sums: dict[str, list[list]] = {}
    for projection in network.projections:
        if projection.source not in rates:
            continue
        matrix = projection_matrix(network, projection).tocsr()
        r = rates[projection.source]
        entry = sums.setdefault(projection.target, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        for receptor, part in enumerate(receptor_parts(matrix)):
            entry[receptor][0] = entry[receptor][0] + np.asarray(part @ r.T).T
            entry[receptor][1] = entry[receptor][1] + np.asarray(part.multiply(part) @ (r * (1 - r)).T).T
            entry[receptor][2] = entry[receptor][2] + np.asarray(part.sum(axis=1)).ravel()
    return sums


def expected_summed_weights(network: Network, x: np.ndarray, encoding: str = "analog", sigma: float = 5.0,
                            substeps: int = 1) -> dict[str, list[float]]:
    """``{population: [excitatory, inhibitory]}``: the expected maximum summed weight per tick (``substeps`` ticks
    per IR step) of each receptor (magnitudes; 0 where a receptor gets no spikes). Projections from an analog
    input are current injection, not synapses, and do not count."""
    sums = _receptor_sums(network, firing_rates(network, x, encoding, substeps))
    result = {}
    for name, pop in network.populations.items():
        if pop.role == "input":
            continue
        summed = []
        for mean, variance, bound in sums.get(name, [[0.0, 0.0, 0.0]] * 2):
            expected = np.max(mean + sigma * np.sqrt(variance), initial=0.0)
            summed.append(float(min(expected, np.max(bound, initial=0.0))))
        result[name] = summed
    return result


def annotate_summed_weights(network: Network, x: np.ndarray, encoding: str = "analog", sigma: float = 5.0,
                            substeps: int = 1) -> Network:
    """Stores :func:`expected_summed_weights` in each population's metadata (in place), with how it
    was measured; the spinnaker backend and the reference simulator's spinnaker profile read it."""
    ticks = f", per tick of 1/{substeps} step" if substeps > 1 else ""
    for name, summed in expected_summed_weights(network, x, encoding, sigma, substeps).items():
        network.populations[name].metadata[METADATA_KEY] = summed
        network.populations[name].metadata[METADATA_KEY + "_from"] = (
            f"rate model on {len(x)} calibration items, mean + {sigma:g} sd{ticks}")
    return network


def summed_weights_or_bound(network: Network, encoding: str = "analog") -> dict[str, list[float]]:
    """The annotated summed weights, or, for populations without them, the bound that never saturates
    (every source spiking in the same step)."""
    missing = [n for n, p in network.populations.items() if p.role != "input" and METADATA_KEY not in p.metadata]
    bound = _worst_case(network, encoding) if missing else {}
    return {name: list(pop.metadata.get(METADATA_KEY, bound.get(name, [0.0, 0.0])))
            for name, pop in network.populations.items() if pop.role != "input"}


def _worst_case(network: Network, encoding: str) -> dict[str, list[float]]:
    """Every spiking source firing in the same step (rate 1)."""
    firing = {name: np.ones((1, pop.size)) for name, pop in network.populations.items()
              if pop.role == "hidden" or (pop.role == "input" and encoding != "analog")}
    return {name: [float(np.max(bound, initial=0.0)) for _, _, bound in receptors]
            for name, receptors in _receptor_sums(network, firing).items()}
