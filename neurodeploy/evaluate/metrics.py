"""Anytime metrics of a SimulationResult (``docs/semantics.md``, "Anytime metrics"; Dutson et al., WACV 2023).

With a(t) the accuracy after step t (t = 1..T), a* the ANN accuracy and p(t) the mean number of
synaptic events at step t:

    P_l = sum_t (a* - a~(t)) / a*          (in time steps)
    P_p = sum_t (a* - a~(t)) p(t) / a*     (in synaptic events)

Two forms of a~ are offered. "raw" is the reference implementation's "time/power above curve":
a~ = a, unclipped, so steps above a* count negative. "pareto" uses the Pareto envelope
a~(t) = min(max_{tau <= t} a(tau), a*): the best accuracy reachable by stopping at or before t,
capped at a*, so it is never negative and never rewards overshooting the ANN. Summaries print the
pareto form (lower is better in both).
"""

from __future__ import annotations

import numpy as np

from neurodeploy.errors import ConfigError
from neurodeploy.evaluate.result import SimulationResult, item_chunks

FORMS = ("raw", "pareto")


def pareto_envelope(accuracy: np.ndarray, ann_accuracy: float) -> np.ndarray:
    """a~(t) = min(max_{tau<=t} a(tau), a*), shape ``[T]``."""
    return np.minimum(np.maximum.accumulate(np.asarray(accuracy, np.float64)), ann_accuracy)


def _gap(accuracy: np.ndarray, ann_accuracy: float, form: str) -> np.ndarray:
    if ann_accuracy <= 0:
        raise ConfigError("the ANN accuracy a* must be positive")
    if form == "raw":
        curve = np.asarray(accuracy, np.float64)
    elif form == "pareto":
        curve = pareto_envelope(accuracy, ann_accuracy)
    else:
        raise ConfigError(f"form must be one of {FORMS}, not {form!r}")
    return (ann_accuracy - curve) / ann_accuracy


def pareto_latency(accuracy: np.ndarray, ann_accuracy: float, form: str = "pareto") -> float:
    """P_l in time steps."""
    return float(_gap(accuracy, ann_accuracy, form).sum())


def pareto_power(accuracy: np.ndarray, ann_accuracy: float, events_per_step: np.ndarray,
                 form: str = "pareto") -> float:
    """P_p in synaptic events; ``events_per_step`` is p(t), shape ``[T]``."""
    return float((_gap(accuracy, ann_accuracy, form) * np.asarray(events_per_step, np.float64)).sum())


def events_per_step(result: SimulationResult) -> np.ndarray:
    """p(t): mean synaptic events per item at step t, summed over populations, shape ``[T]``."""
    return result.synaptic_events.sum(axis=2).mean(axis=0).astype(np.float64)


def time_to_accuracy(accuracy: np.ndarray, target: float) -> int | None:
    """First step t (1-based) with a(t) >= target, or None when never reached."""
    hits = np.flatnonzero(np.asarray(accuracy) >= target)
    return int(hits[0]) + 1 if hits.size else None


def events_to_accuracy(accuracy: np.ndarray, events: np.ndarray, target: float) -> float | None:
    """Cumulative mean synaptic events up to the first step reaching ``target``, or None."""
    step = time_to_accuracy(accuracy, target)
    return None if step is None else float(np.asarray(events, np.float64)[:step].sum())


def spiking_population_mask(result: SimulationResult) -> np.ndarray:
    """Bool per population: True for neurons that spike (hidden, or a spiking output)."""
    return np.array([pop["role"] == "hidden" or (pop["role"] == "output" and result.spike_counts[..., i].any())
                     for i, pop in enumerate(result.populations)], dtype=bool)


def _items(result: SimulationResult, index: np.ndarray | None) -> np.ndarray:
    return np.arange(result.n_items) if index is None else np.asarray(index)


def spikes_per_neuron(result: SimulationResult, stop: np.ndarray | None = None,
                      index: np.ndarray | None = None) -> float:
    """Mean spikes per spiking neuron per inference; with ``stop`` ([N], 1-based) only spikes up to
    each item's stop step count; with ``index`` over those items only (``stop`` then has one entry per
    item of ``index``). Spikes per item and step ``[N, T]`` are gathered per item chunk."""
    mask = spiking_population_mask(result)
    neurons = sum(pop["size"] for pop, m in zip(result.populations, mask, strict=True) if m)
    items = _items(result, index)
    parts = [result.spike_counts[items[rows]][:, :, mask].sum(axis=2)
             for rows in item_chunks(len(items), 8 * result.T * result.spike_counts.shape[2])]
    per_step = np.concatenate(parts) if parts else np.zeros((0, result.T))
    if stop is not None:
        per_step = per_step * (np.arange(result.T)[None, :] < np.asarray(stop)[:, None])
    return float(per_step.sum() / max(neurons, 1) / max(len(items), 1))


def item_events(result: SimulationResult, index: np.ndarray | None = None, stop: np.ndarray | None = None
                ) -> np.ndarray:
    """Synaptic events of each item over the run, summed over populations, ``[N]`` (with ``index``:
    those items; with ``stop``, one 1-based step per item, only the steps up to it), per item chunk."""
    items = _items(result, index)
    parts = []
    for rows in item_chunks(len(items), 8 * result.T * result.synaptic_events.shape[2]):
        events = result.synaptic_events[items[rows]].sum(axis=2)
        if stop is not None:
            events = events * (np.arange(result.T)[None, :] < np.asarray(stop)[rows, None])
        parts.append(events.sum(axis=1))
    return np.concatenate(parts) if parts else np.zeros(0)


def combined_sparsity(activation_sparsity: float, weight_sparsity: float) -> float:
    """S_c = 1 - (1 - S_a)(1 - S_w) (Dutson et al., Tables F/G)."""
    return 1.0 - (1.0 - activation_sparsity) * (1.0 - weight_sparsity)


def anytime_metrics(result: SimulationResult, ann_accuracy: float, target_fraction: float = 0.99) -> dict:
    """The anytime summary of one result: accuracy curve, P_l and P_p (both forms), peak accuracy,
    time and events to ``target_fraction * a*``, spikes per neuron, total synaptic events."""
    accuracy = result.accuracy_curve()
    events = events_per_step(result)
    target = target_fraction * ann_accuracy
    reached = time_to_accuracy(accuracy, target)
    metrics = {
        "T": result.T,
        "n_items": result.n_items,
        "ann_accuracy": float(ann_accuracy),
        "snn_accuracy": float(accuracy[-1]),
        "peak_accuracy": float(accuracy.max()),
        "peak_step": int(accuracy.argmax()) + 1,
        "accuracy_curve": [float(a) for a in accuracy],
        "pareto_latency": {form: pareto_latency(accuracy, ann_accuracy, form) for form in FORMS},
        "pareto_power": {form: pareto_power(accuracy, ann_accuracy, events, form) for form in FORMS},
        "printed_form": "pareto",
        "target_accuracy": target,
        "target_fraction": target_fraction,
        "time_to_target": reached,
        "events_to_target": events_to_accuracy(accuracy, events, target),
        "spikes_per_neuron": spikes_per_neuron(result),
        "synaptic_events_per_item": float(events.sum()),
    }
    s_a, s_w = result.metadata.get("activation_sparsity"), result.metadata.get("weight_sparsity")
    if s_a is not None and s_w is not None:
        metrics["sparsity"] = {"activation": s_a, "weight": s_w, "combined": combined_sparsity(s_a, s_w)}
    return metrics
