"""Calibrated initial membranes: one v0 / theta per hidden population, chosen on calibration items.

QCFS's initial membrane theta / 2 makes an IF neuron's count after T steps of a constant current the
rounded rate, the best choice for a layer whose input is already constant. In a deep network it is not:
while the layers below settle, their first spikes arrive early (a neuron with v0 = theta / 2 fires at
t = 2 for any rate >= 1/4), each layer's first steps overshoot, and the summed readout keeps that
burst (``docs/semantics.md``, "Calibrated initial membrane"). A lower v0 in a deep layer holds its
first spikes back until its input has settled. :func:`calibrate_initial_membrane` chooses one fraction
v0 / theta per hidden population by coordinate search on calibration items (training data, never test
data): it starts from theta / 2 everywhere and, population by population in topological order, keeps
the fraction whose prediction at T agrees most often with the ANN's (ties broken by the mean squared
error between the readout rate O(T) / T and the ANN's logits; a change is kept only when it is
strictly better, so theta / 2 stays where nothing beats it).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from neurodeploy.ir.network import Network
from neurodeploy.ir.population import NeuronSpec

#: the fractions v0 / theta tried for each population
FRACTIONS = (0.0, 0.125, 0.25, 0.375, 0.5)


def _with_fractions(network: Network, fractions: dict[str, float]) -> None:
    for name, fraction in fractions.items():
        neuron: NeuronSpec = network.populations[name].neuron
        neuron.v_init = (np.float32(fraction) * np.asarray(neuron.threshold, np.float32)).astype(np.float32)


def calibrate_initial_membrane(network: Network, images: torch.Tensor, logits: np.ndarray, T: int,
                               fractions: tuple[float, ...] = FRACTIONS, batch_size: int = 500,
                               progress: bool = False) -> dict:
    """Sets every hidden population's ``v_init`` to a calibrated fraction of its threshold (an array of
    the threshold's shape) and returns the choice.

    images: calibration items ``[N, *input_shape]`` (training data); logits: the ANN's outputs for them,
    ``[N, classes]``; T: the steps the network will run. Simulates with the reference simulator (ideal
    profile, analog input), 1 + (fractions other than 1/2) x populations runs of N items and T steps (a
    progress bar with ``progress``). Returns ``{"fractions": {population: v0 / theta}, "T",
    "items", "agreement": at T with them, "agreement_before": with theta / 2 everywhere}``.
    """
    from neurodeploy.backends import RunOptions, get_backend

    backend = get_backend("gpu")
    reference = logits.argmax(1)
    labels = torch.as_tensor(reference, dtype=torch.long)
    names = [name for name in network.topological_order() if network.populations[name].role == "hidden"]
    others = [f for f in fractions if f != 0.5]  # each population is visited while it is still at 1/2
    bar = tqdm(total=1 + len(others) * len(names), desc="calibrating initial membranes", unit="sim",
               disable=not progress, leave=False)

    def score(choice: dict[str, float]) -> tuple[float, float]:
        _with_fractions(network, choice)
        result = backend.run(network, images, labels, RunOptions(T=T, batch_size=batch_size, progress=False))
        readout = result.readout[:, -1].astype(np.float64)
        bar.update()
        return float((readout.argmax(1) == reference).mean()), -float(((readout / T - logits) ** 2).mean())

    choice = {name: 0.5 for name in names}
    best = before = score(choice)
    for name in names:
        for fraction in others:
            candidate = {**choice, name: float(fraction)}
            value = score(candidate)
            if value > best:
                best, choice = value, candidate
    bar.close()
    _with_fractions(network, choice)
    return {"fractions": choice, "T": int(T), "items": int(len(images)), "agreement": best[0],
            "agreement_before": before[0]}
