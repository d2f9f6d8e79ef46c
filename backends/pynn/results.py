"""The result of a batch a PyNN machine simulated in parts (worker processes, MPI ranks): the runner's dicts
(``PyNNRunner.run_items``) joined in item order into one :class:`SimulationResult`."""

from __future__ import annotations

import numpy as np
import torch

from neurodeploy.evaluate.result import SimulationResult


def joined_result(parts: list[dict], labels: torch.Tensor, neuron_counts: bool,
                  recorded: bool = False) -> SimulationResult:
    """``parts`` (consecutive items each, in order) as one result for ``labels [B]``; the input population
    first among the populations (its spikes, zeros with current injection, as the reference simulator counts
    them); every neuron's spike count ``[B, M]`` when ``neuron_counts``; the recorded spike trains
    (``recorded [B, T, R]``) when ``recorded``."""
    def joined(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])

    spikes = np.concatenate([joined("input_spikes")[..., None], joined("spikes")], axis=2)
    events = np.concatenate([joined("input_events")[..., None], joined("events")], axis=2)
    neurons = np.concatenate([joined("input_neurons"), joined("neurons")], axis=1) if neuron_counts else None
    return SimulationResult(joined("readout"), labels.numpy().astype(np.int64), spikes, events,
                            neuron_counts=neurons, recorded_spikes=joined("recorded") if recorded else None)
