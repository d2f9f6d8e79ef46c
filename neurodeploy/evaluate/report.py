"""Reports of the shared evaluator: summary dict (summary.json), terminal table, CSV and PNG plots.

summary.json (stable interface; accuracies are fractions in [0, 1], latencies in steps):
    backend, T, n_items, ann_accuracy, snn_accuracy (at T), peak_accuracy, peak_step,
    accuracy_curve [T], time_to_target, events_to_target, target_accuracy, spikes_per_neuron,
    synaptic_events_per_item, pareto_latency {raw, pareto}, pareto_power {raw, pareto}, printed_form,
    dynamic_confidence {alpha, threshold, mean_latency, accuracy, full_T_accuracy, step_saving, ...},
    oracle {accuracy, mean_latency, mean_latency_never_correct_at_1}, wall_time_s, metadata.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from neurodeploy.evaluate.dynamic_confidence import evaluate_dynamic_confidence  # noqa: E402
from neurodeploy.evaluate.metrics import anytime_metrics, events_per_step, pareto_envelope  # noqa: E402
from neurodeploy.evaluate.result import SimulationResult  # noqa: E402


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


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "not reached"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    dc, bound = summary["dynamic_confidence"], summary["oracle"]
    return [
        ("ANN accuracy (a*)", _fmt(summary["ann_accuracy"])),
        (f"SNN accuracy at T={summary['T']}", _fmt(summary["snn_accuracy"])),
        ("peak accuracy (step)", f"{_fmt(summary['peak_accuracy'])} ({summary['peak_step']})"),
        (f"first step >= {summary['target_fraction']:.0%} of a*", _fmt(summary["time_to_target"])),
        ("synaptic events to that step", _fmt(summary["events_to_target"])),
        ("Pareto latency P_l (pareto / raw)",
         f"{_fmt(summary['pareto_latency']['pareto'])} / {_fmt(summary['pareto_latency']['raw'])}"),
        ("Pareto power P_p (pareto / raw)",
         f"{_fmt(summary['pareto_power']['pareto'])} / {_fmt(summary['pareto_power']['raw'])}"),
        ("spikes per neuron per inference", _fmt(summary["spikes_per_neuron"])),
        ("synaptic events per inference", _fmt(summary["synaptic_events_per_item"])),
        ("DC threshold / alpha", f"{_fmt(dc['threshold'])} / {_fmt(dc['alpha'], 3)}"),
        (f"DC on test part (n={dc['n_test']})",
         f"latency {dc['mean_latency']:.2f} steps, accuracy {dc['accuracy']:.4f} "
         f"(full T {dc['full_T_accuracy']:.4f}), saving {dc['step_saving']:.1%} steps, "
         f"{dc['event_saving']:.1%} events"),
        ("oracle bound (test part)", f"accuracy {bound['accuracy']:.4f}, latency {bound['mean_latency']:.2f} steps"),
        ("wall time", f"{summary['wall_time_s']:.2f} s"),
    ] + _early_exit_rows(summary.get("early_exit"))


def _early_exit_rows(early: dict | None) -> list[tuple[str, str]]:
    if not early:
        return []
    return [(f"early exit in the simulator (n={early['n_items']}, c={early['threshold']:.4f})",
             f"latency {early['mean_latency']:.2f} steps, accuracy {early['accuracy']:.4f} (full T "
             f"{early['full_T_accuracy']:.4f}); saving {early['step_saving']:.1%} steps, {early['wall_saving']:.1%} "
             f"wall time ({early['wall_time_s']:.2f} s vs {early['full_T_wall_time_s']:.2f} s)")]


def print_summary(summary: dict, title: str, console: Console | None = None) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    for name, value in summary_rows(summary):
        table.add_row(name, value)
    (console or Console()).print(table)


def print_comparison(summaries: list[dict], labels: list[str], console: Console | None = None) -> None:
    table = Table(title="comparison")
    table.add_column("metric", style="bold")
    for label in labels:
        table.add_column(label)
    rows = [summary_rows(s) for s in summaries]
    for i, (name, _) in enumerate(rows[0]):
        table.add_row(name, *(r[i][1] for r in rows))
    (console or Console()).print(table)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_summary(path: Path, summary: dict) -> Path:
    path.write_text(json.dumps(summary, indent=1, default=_json_default))
    return path


def write_curves_csv(path: Path, arrays: dict) -> Path:
    """One row per step: accuracy, Pareto envelope, mean events, cumulative events, mean confidence."""
    accuracy, events = arrays["accuracy"], arrays["events_per_step"]
    cumulative = np.cumsum(events)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "accuracy", "events_per_step", "cumulative_events", "mean_confidence"])
        for t in range(len(accuracy)):
            writer.writerow([t + 1, f"{accuracy[t]:.6f}", f"{events[t]:.3f}", f"{cumulative[t]:.3f}",
                             f"{arrays['mean_confidence'][t]:.6f}"])
    return path


def plot_reports(folder: Path, runs: list[tuple[str, dict, dict]]) -> list[Path]:
    """Writes the PNG plots for one or several runs ``(label, summary, arrays)`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
        paths.append(folder / name)

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, summary, arrays in runs:
        steps = np.arange(1, len(arrays["accuracy"]) + 1)
        line = ax.plot(steps, arrays["accuracy"], label=label)[0]
        ax.plot(steps, pareto_envelope(arrays["accuracy"], summary["ann_accuracy"]), "--",
                color=line.get_color(), alpha=0.5)
        ax.axhline(summary["ann_accuracy"], color=line.get_color(), linestyle=":", alpha=0.7)
    ax.set(xlabel="time step t", ylabel="accuracy a(t)", title="accuracy over time (dashed: Pareto envelope, "
           "dotted: ANN)")
    ax.title.set_fontsize(9)
    ax.legend()
    save(fig, "accuracy_vs_time.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, _, arrays in runs:
        ax.plot(np.cumsum(arrays["events_per_step"]), arrays["accuracy"], label=label)
    ax.set(xlabel="cumulative synaptic events per inference", ylabel="accuracy", xscale="log",
           title="accuracy vs synaptic events")
    ax.legend()
    save(fig, "accuracy_vs_events.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, _, arrays in runs:
        sweep, front, chosen = arrays["sweep"], arrays["front"], arrays["chosen"]
        points = ax.scatter(sweep.mean_latency, sweep.accuracy, s=4, alpha=0.3)
        ax.plot(sweep.mean_latency[front], sweep.accuracy[front], "-", color=points.get_facecolor()[0],
                label=f"{label} front")
        ax.plot(sweep.mean_latency[chosen], sweep.accuracy[chosen], "*", markersize=14,
                color=points.get_facecolor()[0], markeredgecolor="k")
    ax.set(xlabel="mean latency (steps)", ylabel="accuracy (validation part)",
           title="Dynamic Confidence thresholds (star: chosen)")
    ax.legend()
    save(fig, "dc_pareto_front.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    T = max(len(arrays["accuracy"]) for _, _, arrays in runs)
    bins = np.linspace(0.5, T + 0.5, min(T, 50) + 1)
    for label, _, arrays in runs:
        ax.hist(arrays["stop_times"], bins=bins, alpha=0.6, label=f"{label} DC")
        ax.hist(arrays["oracle_stop_times"], bins=bins, histtype="step", label=f"{label} oracle")
    ax.set(xlabel="stop step", ylabel="items (test part)", title="latency histogram")
    ax.legend()
    save(fig, "stop_time_histogram.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, summary, arrays in runs:
        line = ax.plot(np.arange(1, len(arrays["mean_confidence"]) + 1), arrays["mean_confidence"], label=label)[0]
        ax.axhline(summary["dynamic_confidence"]["threshold"], color=line.get_color(), linestyle=":")
    ax.set(xlabel="time step t", ylabel="mean confidence C_t", title="confidence over time (dotted: threshold)")
    ax.legend()
    save(fig, "mean_confidence.png")
    return paths
