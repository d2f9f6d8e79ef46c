"""The shared evaluator's summary of a result (summary.json), its per-step curves (curves.csv) and
strict JSON files; no plotting or terminal code here (plots: ``plots``; tables: ``neurodeploy.cli.render``).

summary.json (stable interface; accuracies are fractions in [0, 1], latencies in steps):
    backend, T, n_items, ann_accuracy, snn_accuracy (at T), peak_accuracy, peak_step,
    accuracy_curve [T], time_to_target, events_to_target, target_accuracy, spikes_per_neuron,
    synaptic_events_per_item, pareto_latency {raw, pareto}, pareto_power {raw, pareto}, printed_form,
    dynamic_confidence {alpha, threshold, mean_latency, accuracy, full_T_accuracy, step_saving, ...},
    oracle {accuracy, mean_latency, mean_latency_never_correct_at_1}, wall_time_s, metadata.
JSON files are strict: a value that is not a finite number (NaN, infinity) is written as null.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from neurodeploy.evaluate.dynamic_confidence import evaluate_dynamic_confidence
from neurodeploy.evaluate.metrics import anytime_metrics, events_per_step
from neurodeploy.evaluate.result import SimulationResult


def summarize(result: SimulationResult, ann_accuracy: float, dc_alpha: str | float = "T",
              dc_tolerance: float = 0.0, dc_validation_fraction: float = 0.5, seed: int = 0,
              target_fraction: float = 0.99, dc_rule: str = "stable") -> tuple[dict, dict]:
    """Returns ``(summary, plot_arrays)`` for one result."""
    summary = {"backend": result.metadata.get("backend", "unknown")}
    summary.update(anytime_metrics(result, ann_accuracy, target_fraction))
    dc = evaluate_dynamic_confidence(result, dc_alpha, dc_tolerance, dc_validation_fraction, seed, dc_rule)
    summary["dynamic_confidence"] = dc["dynamic_confidence"]
    summary["oracle"] = dc["oracle"]
    summary["wall_time_s"] = float(result.metadata.get("timings", {}).get("run_s", float("nan")))
    summary["metadata"] = result.metadata
    arrays = dict(dc["arrays"], events_per_step=events_per_step(result), accuracy=result.accuracy_curve())
    return summary, arrays


def _plain(value):
    """JSON types only: numpy scalars and arrays become numbers and lists, non-finite floats None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json(path: str | Path, data: dict) -> Path:
    """Writes ``data`` as strict JSON, atomically (a temporary file renamed over ``path``), so a reader
    never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_plain(data), indent=1, allow_nan=False))
    os.replace(tmp, path)
    return path


def write_curves_csv(path: Path, arrays: dict) -> Path:
    """One row per step: accuracy, events per step, cumulative events, mean confidence."""
    accuracy, events = arrays["accuracy"], arrays["events_per_step"]
    cumulative = np.cumsum(events)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "accuracy", "events_per_step", "cumulative_events", "mean_confidence"])
        for t in range(len(accuracy)):
            writer.writerow([t + 1, f"{accuracy[t]:.6f}", f"{events[t]:.3f}", f"{cumulative[t]:.3f}",
                             f"{arrays['mean_confidence'][t]:.6f}"])
    return path
