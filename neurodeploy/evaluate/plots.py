"""PNG plots of one or several evaluated runs (``(label, summary, arrays)`` from ``summary.summarize``).

Figures are made with matplotlib's object API (``Figure``), not pyplot, so plotting neither changes the
caller's matplotlib backend nor keeps figures alive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from neurodeploy.evaluate.metrics import pareto_envelope


def _axes(figsize=(6, 4)):
    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def plot_reports(folder: Path, runs: list[tuple[str, dict, dict]]) -> list[Path]:
    """Writes the PNG plots for one or several runs ``(label, summary, arrays)`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        paths.append(folder / name)

    fig, ax = _axes()
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

    fig, ax = _axes()
    for label, _, arrays in runs:
        ax.plot(np.cumsum(arrays["events_per_step"]), arrays["accuracy"], label=label)
    ax.set(xlabel="cumulative synaptic events per inference", ylabel="accuracy", xscale="log",
           title="accuracy vs synaptic events")
    ax.legend()
    save(fig, "accuracy_vs_events.png")

    fig, ax = _axes()
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

    fig, ax = _axes()
    T = max(len(arrays["accuracy"]) for _, _, arrays in runs)
    bins = np.linspace(0.5, T + 0.5, min(T, 50) + 1)
    for label, _, arrays in runs:
        ax.hist(arrays["stop_times"], bins=bins, alpha=0.6, label=f"{label} DC")
        ax.hist(arrays["oracle_stop_times"], bins=bins, histtype="step", label=f"{label} oracle")
    ax.set(xlabel="stop step", ylabel="items (test part)", title="latency histogram")
    ax.legend()
    save(fig, "stop_time_histogram.png")

    fig, ax = _axes()
    for label, summary, arrays in runs:
        line = ax.plot(np.arange(1, len(arrays["mean_confidence"]) + 1), arrays["mean_confidence"], label=label)[0]
        ax.axhline(summary["dynamic_confidence"]["threshold"], color=line.get_color(), linestyle=":")
    ax.set(xlabel="time step t", ylabel="mean confidence C_t", title="confidence over time (dotted: threshold)")
    ax.legend()
    save(fig, "mean_confidence.png")
    return paths
