"""Agreement between results of the same network and items on different backends (or profiles).

All functions take a reference result and another result over the same items and steps.
"""

from __future__ import annotations

import numpy as np

from neurodeploy.errors import ResultFormatError
from neurodeploy.evaluate.result import SimulationResult


def _check_same_run(reference: SimulationResult, other: SimulationResult) -> None:
    if reference.readout.shape != other.readout.shape or not np.array_equal(reference.labels, other.labels):
        raise ResultFormatError("results cover different items, steps or classes and cannot be compared")
    if [p["name"] for p in reference.populations] != [p["name"] for p in other.populations]:
        raise ResultFormatError("results come from networks with different populations")


def prediction_agreement(reference: SimulationResult, other: SimulationResult) -> np.ndarray:
    """Fraction of items with the same prediction at each step, ``[T]``."""
    _check_same_run(reference, other)
    return (reference.predictions() == other.predictions()).mean(axis=0)


def spike_count_agreement(reference: SimulationResult, other: SimulationResult) -> dict[str, dict]:
    """Per population: the fraction of (item, step) spike counts that are equal, and the ratio of
    total spikes (other / reference)."""
    _check_same_run(reference, other)
    out = {}
    for index, pop in enumerate(reference.populations):
        a, b = reference.spike_counts[..., index], other.spike_counts[..., index]
        total = float(a.sum())
        out[pop["name"]] = {"equal_fraction": float((a == b).mean()),
                            "total_ratio": float(b.sum() / total) if total else (1.0 if not b.any() else float("inf"))}
    return out


def neuron_count_agreement(reference: SimulationResult, other: SimulationResult) -> dict[str, dict]:
    """Per population: the fraction of (item, neuron) pairs whose spike counts over the run are equal,
    and the largest difference; ``"all"`` pools every non-input neuron. Needs both results'
    ``neuron_counts``."""
    _check_same_run(reference, other)
    a, b = reference.population_neuron_counts(), other.population_neuron_counts()
    out = {}
    for pop in reference.populations:
        if pop["role"] == "input":
            continue
        name = pop["name"]
        out[name] = {"equal_fraction": float((a[name] == b[name]).mean()),
                     "max_difference": float(np.abs(a[name] - b[name]).max(initial=0.0))}
    pooled = [(a[n] == b[n]).ravel() for n in out]
    out["all"] = {"equal_fraction": float(np.concatenate(pooled).mean()) if pooled else 1.0,
                  "max_difference": max((v["max_difference"] for v in out.values()), default=0.0)}
    return out


def comparison_summary(reference: SimulationResult, other: SimulationResult) -> dict:
    agreement = prediction_agreement(reference, other)
    neurons = ({"neuron_counts": neuron_count_agreement(reference, other)}
               if reference.neuron_counts is not None and other.neuron_counts is not None else {})
    return {
        "prediction_agreement_mean": float(agreement.mean()),
        "prediction_agreement_min": float(agreement.min()),
        "prediction_agreement_at_T": float(agreement[-1]),
        "prediction_agreement_curve": [float(a) for a in agreement],
        "spike_counts": spike_count_agreement(reference, other),
        "max_readout_difference": float(np.abs(reference.readout - other.readout).max()),
        **neurons,
    }
