"""PNG plots of one or several evaluated runs (``(label, summary, arrays)`` from ``summary.summarize``) and
of a backend comparison.

Figures are made with matplotlib's object API (``Figure``), not pyplot, so plotting neither changes the
caller's matplotlib backend nor keeps figures alive. Every figure gives run i the same colour, line
style and marker (:func:`run_style`); markers are staggered between runs so that curves lying on top of
each other stay visible. Axes say their units: steps (1 step = 1 ms), ms, synaptic events, J.

``plot_reports`` writes:

* ``accuracy_vs_time.png``: a(t) over the whole run and zoomed on the accuracies where the runs differ,
  with the ANN accuracy a*; the shaded area between the Pareto envelope and a* is a* x P_l.
* ``accuracy_vs_events.png``: a(t) against the cumulative synaptic events per inference (log), with the
  Loihi energy estimate of those events on the top axis.
* ``dc_pareto_front.png``: Dynamic Confidence operating points on the validation part (at most
  ``SCATTER_POINTS`` of them, spread evenly over the sweep), the Pareto front with some thresholds c
  written next to it, the chosen point (star, its c written beside it) and, for the "stable" rule, the
  first point below the full-T accuracy, where the rule stops (x); the zoom's title names the rule. Log
  latency axis when the latencies span more than a decade.
* ``stop_time_histogram.png``: fractions of test-part items stopping at each step (DC) and first correct
  (oracle); items never correct, and items wrong at their DC exit, as separate bars.
* ``mean_confidence.png``: mean confidence C_t and the chosen threshold.
* ``population_activity.png``: spikes per neuron in each step, population by step, for the first items (a
  heat map of counts: results keep spike counts per population and step, not spike times per neuron).
* ``firing_rate.png``: mean firing rate (Hz) per population over time.
* ``energy.png``: the energy estimates per inference (``energy``), log scale.

Runs whose accuracy curves are identical are named so in the legend (one line hides the other).

``plot_comparison`` writes ``prediction_agreement.png`` (fraction of items with the reference's
prediction at each step, axis at most 1) and ``spike_count_scatter.png`` (spikes per item and population, each backend
against the reference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from neurodeploy.evaluate.energy import LABELS as ENERGY_LABELS
from neurodeploy.evaluate.energy import LOIHI_SYNAPTIC_OP_J, format_joules
from neurodeploy.evaluate.metrics import pareto_envelope
from neurodeploy.safe_io import atomic_write

COLORS = colormaps["tab10"].colors
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
STEP_UNIT = "time step t (1 step = 1 ms)"
#: sweep points drawn as the Dynamic Confidence cloud: a sweep has up to one point per item and step
#: (millions for long runs), which a figure need not hold; the front and the chosen point are drawn exactly
SCATTER_POINTS = 20_000


def run_style(index: int, n_runs: int, n_points: int) -> dict:
    """Line keywords of run ``index`` of ``n_runs``: its colour, line style and marker; earlier runs are
    drawn wider and below, and markers are staggered so coincident curves stay apart."""
    every = max(1, n_points // 8)
    return {"color": COLORS[index % len(COLORS)], "linestyle": LINESTYLES[index % len(LINESTYLES)],
            "marker": MARKERS[index % len(MARKERS)], "markevery": ((index * every) // max(n_runs, 1), every),
            "linewidth": max(1.0, 2.6 - 0.6 * index), "markersize": 5, "zorder": 2 + index}


def _color(index: int):
    return COLORS[index % len(COLORS)]


def _ann_lines(ax, runs) -> None:
    runs = [run for run in runs if run[1]["ann_accuracy"] is not None]  # a* absent: no line
    values = [summary["ann_accuracy"] for _, summary, _ in runs]
    if not values:
        return
    if len(set(values)) == 1:
        ax.axhline(values[0], color="k", linestyle=":", linewidth=1.2, label=f"ANN a* = {values[0]:.4f}", zorder=1)
        return
    for i, (label, summary, _) in enumerate(runs):
        ax.axhline(summary["ann_accuracy"], color=_color(i), linestyle=":", linewidth=1.2,
                   label=f"ANN of {label}: {summary['ann_accuracy']:.4f}", zorder=1)


def focus_range(curves: list[np.ndarray], references: list[float]) -> tuple[float, float, int]:
    """(low, high, first step) of the accuracy range where the runs differ: from the first step at which
    every curve has reached 90 % of the lowest reference (half the steps when one never does) to the
    end, covering every curve there and the references, with a margin."""
    level = 0.9 * min(references)
    starts = []
    for curve in curves:
        hits = np.flatnonzero(np.asarray(curve) >= level)
        starts.append(int(hits[0]) if hits.size else len(curve) // 2)
    start = max(starts)
    tails = [np.asarray(c)[min(start, len(c) - 1):] for c in curves]
    low = min(min(float(t.min()) for t in tails), min(references))
    high = max(max(float(t.max()) for t in tails), max(references))
    pad = max(0.08 * (high - low), 0.003)
    return max(0.0, low - pad), min(1.0 + pad, high + pad), start + 1


def identical_to(runs) -> dict[int, int]:
    """Run index -> the first earlier run whose accuracy curve is identical (same T, same values)."""
    curves = [np.asarray(arrays["accuracy"]) for _, _, arrays in runs]
    same = {}
    for i, curve in enumerate(curves):
        for j in range(i):
            if j not in same and curves[j].shape == curve.shape and np.array_equal(curves[j], curve):
                same[i] = j
                break
    return same


def _accuracy_panels(fig, runs, x_of, xlabel: str, log_x: bool = False):
    """Two panels of a(t) against x: the whole range and the zoom where the runs differ."""
    full, zoom = fig.subplots(1, 2)
    curves = [arrays["accuracy"] for _, _, arrays in runs]
    same = identical_to(runs)
    # a log axis needs a positive value: a network without a single spike has none (linear axis instead)
    log_x = log_x and any((x_of(arrays)[0] > 0).any() for _, _, arrays in runs)
    low, high, start = focus_range(curves, [s["peak_accuracy"] if s["ann_accuracy"] is None else s["ann_accuracy"]
                                            for _, s, _ in runs])
    for ax in (full, zoom):
        for i, (label, summary, arrays) in enumerate(runs):
            x, accuracy = x_of(arrays)
            keep = x > 0 if log_x else np.ones_like(x, dtype=bool)
            style = run_style(i, len(runs), int(keep.sum()))
            name = f"{label}: a(T) {summary['snn_accuracy']:.4f}, peak {summary['peak_accuracy']:.4f}"
            if i in same:
                name += f" (curve identical to {runs[same[i]][0]})"
            ax.plot(x[keep], accuracy[keep], label=name if ax is full else None, **style)
            if ax is full and not log_x and summary["ann_accuracy"] is not None:
                envelope = pareto_envelope(accuracy, summary["ann_accuracy"])
                ax.fill_between(x, envelope, summary["ann_accuracy"], color=style["color"], alpha=0.08, linewidth=0)
        _ann_lines(ax, runs)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy a(t) (fraction of items)")
        ax.grid(alpha=0.3)
        if log_x:
            ax.set_xscale("log")
    full.set_ylim(0.0, 1.02)
    full.set_title("whole run" + ("" if log_x else " (shaded: a* - Pareto envelope, area a* x P_l)"), fontsize=9)
    zoom.set_ylim(low, high)
    if not log_x:
        zoom.set_xlim(start - 0.5, max(len(c) for c in curves) + 0.5)
    else:
        xs = [x_of(arrays)[0] for _, _, arrays in runs]
        firsts = [x[min(start - 1, len(x) - 1)] for x in xs]
        if min(firsts) > 0:
            zoom.set_xlim(min(firsts) / 1.2, max(float(x[-1]) for x in xs) * 1.2)
    pairs = "; ".join(f"{runs[i][0]} = {runs[j][0]}" for i, j in same.items())
    same_text = f"; identical curves: {pairs}" if pairs else ""
    zoom.set_title(f"zoom where the runs differ (from step {start}){same_text}", fontsize=9)
    full.legend(fontsize=7, loc="lower right")
    return full, zoom


def accuracy_vs_time(runs) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    _accuracy_panels(fig, runs, lambda a: (np.arange(1, len(a["accuracy"]) + 1, dtype=float), a["accuracy"]),
                     STEP_UNIT)
    fig.suptitle("accuracy over time")
    return fig


def accuracy_vs_events(runs) -> Figure:
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    if not any(np.asarray(arrays["events_per_step"]).sum() > 0 for _, _, arrays in runs):
        # a log axis of events needs some: a network whose spikes reach no synapse has none to plot
        fig.text(0.5, 0.5, "no synaptic events in these runs (no spike reached a synapse): nothing to plot "
                 "against events", ha="center", va="center")
        return fig
    panels = _accuracy_panels(fig, runs, lambda a: (np.cumsum(a["events_per_step"]), a["accuracy"]),
                              "cumulative synaptic events per inference (events)", log_x=True)
    for ax in panels:
        top = ax.secondary_xaxis("top", functions=(lambda e: e * LOIHI_SYNAPTIC_OP_J,
                                                   lambda j: j / LOIHI_SYNAPTIC_OP_J))
        top.set_xlabel("estimated energy on Loihi (J, 23.6 pJ per event)", fontsize=8)
        top.xaxis.set_minor_formatter(NullFormatter())
    fig.suptitle("accuracy against synaptic events")
    return fig


def _confidence_text(log_odds: float, digits: int = 4) -> str:
    c = float(1.0 / (1.0 + np.exp(-log_odds)))
    return f"c={c:.{digits}f}" if c < 1.0 - 10.0 ** -digits else f"c=1-{1.0 - c:.{digits - 4}e}"


def _distinct_confidence_texts(log_odds: float, other: float) -> tuple[str, str]:
    """The texts of two thresholds with as many digits as it takes (up to 10) for them to differ: the point where
    the accuracy drops lies next to the chosen one, often within 1e-4 of its c."""
    for digits in range(4, 11):
        texts = _confidence_text(log_odds, digits), _confidence_text(other, digits)
        if texts[0] != texts[1]:
            return texts
    return texts


def _dc_zoom_range(runs) -> tuple[float, float]:
    """Accuracies near the full-T accuracy, where the threshold is picked: from the lowest full-T
    accuracy minus twice the largest gain over it (at least 2 points) to the best front point."""
    fulls = [float(arrays["sweep"].accuracy[0]) for _, _, arrays in runs]
    best = max(float(arrays["sweep"].accuracy[arrays["front"]].max()) for _, _, arrays in runs)
    low = min(fulls) - max(2.0 * (best - min(fulls)), 0.02)
    return max(0.0, low), best + max(0.15 * (best - low), 0.003)


def _thinned(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` indices spread evenly over ``0 .. n - 1``, the first and last included."""
    return np.arange(n) if n <= limit else np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


RULE_TEXT = {
    "stable": "rule stable: the lowest latency reached before the accuracy first drops below the full-T accuracy "
              "(x); front points left of the star come after that drop",
    "fastest": "rule fastest: the lowest latency whose accuracy reaches the full-T accuracy",
}


def _stable_stop(sweep, tolerance: float) -> int | None:
    """Index of the first sweep point below the full-T accuracy minus ``tolerance`` (where the "stable"
    rule of ``neurodeploy.evaluate.dynamic_confidence.choose_threshold`` stops), or None."""
    below = np.flatnonzero(sweep.accuracy < sweep.accuracy[0] - tolerance - 1e-12)
    return int(below[0]) if below.size else None


def _dc_front_panel(ax, runs, zoom: bool = False) -> None:
    low, high = _dc_zoom_range(runs) if zoom else (0.0, 1.0)
    for i, (label, summary, arrays) in enumerate(runs):
        sweep, front, chosen = arrays["sweep"], arrays["front"], arrays["chosen"]
        color = _color(i)
        shown_points = _thinned(len(sweep.thresholds), SCATTER_POINTS)
        ax.scatter(sweep.mean_latency[shown_points], sweep.accuracy[shown_points], s=3, alpha=0.15, color=color,
                   linewidths=0, label=None if zoom else f"{label}: every threshold's operating point")
        style = run_style(i, len(runs), len(front))
        style.update(markevery=1, markersize=3)
        ax.plot(sweep.mean_latency[front], sweep.accuracy[front], label=None if zoom else f"{label} front", **style)
        dc = summary["dynamic_confidence"]
        chosen_text = _confidence_text(sweep.thresholds[chosen])
        ax.plot(sweep.mean_latency[chosen], sweep.accuracy[chosen], "*", markersize=15, color=color,
                markeredgecolor="k", zorder=10,
                label=None if zoom else f"{label} chosen ({dc.get('pick_rule', 'stable')} rule): {chosen_text}, "
                                        f"{sweep.mean_latency[chosen]:.1f} steps")
        # above the star: the x of the first drop lies just below it
        ax.annotate(chosen_text, (sweep.mean_latency[chosen], sweep.accuracy[chosen]), xytext=(9, 6),
                    textcoords="offset points", ha="left", va="bottom", fontsize=7.5, fontweight="bold", color=color,
                    zorder=11)
        stop = _stable_stop(sweep, float(dc.get("tolerance", 0.0))) if dc.get("pick_rule", "stable") == "stable" \
            else None
        if stop is not None:
            dropped, kept = _distinct_confidence_texts(sweep.thresholds[stop], sweep.thresholds[chosen])
            ax.plot(sweep.mean_latency[stop], sweep.accuracy[stop], "x", markersize=9, markeredgewidth=2, color=color,
                    zorder=10, label=None if zoom else f"{label}: first drop below full-T accuracy at {dropped} "
                                                       f"(accuracy {sweep.accuracy[stop]:.4f}; chosen {kept})")
        ax.axhline(sweep.accuracy[0], color=color, linewidth=0.8, linestyle=":", zorder=1,
                   label=None if zoom else f"{label}: full-T accuracy {sweep.accuracy[0]:.4f}")
        inside = front[(sweep.accuracy[front] >= low) & (sweep.accuracy[front] <= high)]
        # no front label next to the star: the star's own c is written above it
        near = np.abs(np.log(np.maximum(sweep.mean_latency[inside], 1e-9) /
                             max(float(sweep.mean_latency[chosen]), 1e-9))) < 0.25
        inside = inside[~near]
        shown = inside[np.unique(np.linspace(0, len(inside) - 1, min(len(inside), 6)).round().astype(int))] \
            if len(inside) else inside
        for k, index in enumerate(shown):
            ax.annotate(_confidence_text(sweep.thresholds[index]), (sweep.mean_latency[index], sweep.accuracy[index]),
                        xytext=(4, -10 - 8 * (i % 2) if k % 2 else 4 + 8 * (i % 2)), textcoords="offset points",
                        fontsize=6.5, color=color)
    values = np.concatenate([arrays["sweep"].mean_latency for _, _, arrays in runs])
    if values.min() > 0 and values.max() / values.min() >= 10:  # latencies span a decade or more
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if zoom:
        ax.set_ylim(low, high)
        entering = [arrays["sweep"].mean_latency[arrays["front"]][arrays["sweep"].accuracy[arrays["front"]] >= low]
                    for _, _, arrays in runs]
        first = min((float(e.min()) for e in entering if e.size), default=float(values.min()))
        ax.set_xlim(first / 1.15 if ax.get_xscale() == "log" else first - 1, float(values.max()) * 1.1)
        rules = {summary["dynamic_confidence"].get("pick_rule", "stable") for _, summary, _ in runs}
        rule = RULE_TEXT.get(rules.pop(), "") if len(rules) == 1 else "rules differ between runs"
        ax.set_title("zoom near the full-T accuracy; " + rule, fontsize=8, wrap=True)
    else:
        accuracies = np.concatenate([arrays["sweep"].accuracy[arrays["front"]] for _, _, arrays in runs])
        ax.set_ylim(max(0.0, accuracies.min() - 0.03), min(1.04, accuracies.max() + 0.035))  # room for the star's c
        ax.set_title("Dynamic Confidence: each threshold c's mean latency and accuracy (star: chosen)", fontsize=9)
    ax.set(xlabel="mean latency (steps of 1 ms)", ylabel="accuracy on the validation part (fraction)")
    ax.grid(alpha=0.3, which="both")


def dc_pareto_front(runs) -> Figure:
    fig = Figure(figsize=(12, 5.2), layout="constrained")
    whole, zoom = fig.subplots(1, 2)
    _dc_front_panel(whole, runs)
    _dc_front_panel(zoom, runs, zoom=True)
    legend = fig.legend(*whole.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
    for handle in legend.legend_handles:  # the cloud's faint dots, legible in the legend
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([18])
            handle.set_alpha(0.8)
    return fig


def _stop_panels(hist_ax, apart_ax, runs) -> None:
    T = max(len(arrays["accuracy"]) for _, _, arrays in runs)
    bins = np.arange(0.5, T + 1.5) if T <= 60 else np.linspace(0.5, T + 0.5, 51)
    width = 0.8 / len(runs)
    for i, (label, _, arrays) in enumerate(runs):
        color, style = _color(i), LINESTYLES[i % len(LINESTYLES)]
        stops, oracle, never = arrays["stop_times"], arrays["oracle_stop_times"], arrays["never_correct"]
        n = max(len(stops), 1)
        hist_ax.hist(stops, bins=bins, weights=np.full(len(stops), 1.0 / n), histtype="step", color=color,
                     linestyle=style, linewidth=2.0, label=f"{label}: DC stop step")
        hist_ax.hist(oracle[~never], bins=bins, weights=np.full(int((~never).sum()), 1.0 / n), histtype="stepfilled",
                     color=color, alpha=0.18, label=f"{label}: first correct step (oracle)")
        wrong = ~arrays["dc_correct"]
        apart_ax.bar([0 + i * width, 1 + i * width], [never.mean(), wrong.mean()], width=width, color=color,
                     alpha=0.8, label=label)
    hist_ax.set(xlabel="stop step (steps of 1 ms)", ylabel="fraction of test-part items")
    hist_ax.set_title("when items stop (DC) and are first correct (oracle)", fontsize=9)
    hist_ax.legend(fontsize=7)
    hist_ax.grid(alpha=0.3)
    apart_ax.set_xticks([0.4 - width / 2, 1.4 - width / 2], ["never\ncorrect", "wrong at\nDC exit"], fontsize=8)
    apart_ax.set_ylabel("fraction of test-part items")
    apart_ax.set_title("shown apart", fontsize=9)
    apart_ax.grid(alpha=0.3, axis="y")


def stop_time_histogram(runs) -> Figure:
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    hist_ax, apart_ax = fig.subplots(1, 2, width_ratios=(4, 1))
    _stop_panels(hist_ax, apart_ax, runs)
    return fig


def mean_confidence(runs) -> Figure:
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, summary, arrays) in enumerate(runs):
        values = arrays["mean_confidence"]
        ax.plot(np.arange(1, len(values) + 1), values, label=label, **run_style(i, len(runs), len(values)))
        threshold = summary["dynamic_confidence"]["threshold"]
        ax.axhline(threshold, color=_color(i), linestyle=":", linewidth=1.0,
                   label=f"{label}: threshold c = {threshold:.4g}")
    ax.set(xlabel=STEP_UNIT, ylabel="mean confidence C_t (test part, fraction)",
           title="confidence over time (dotted: chosen thresholds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _shown_populations(arrays) -> list[int]:
    """Indices of the populations that spike (the input only when its spikes were counted)."""
    spikes = np.asarray(arrays["spikes_per_step"])
    return [p for p in range(spikes.shape[1]) if spikes[:, p].any()]


def population_activity(runs) -> Figure:
    n_items = max(len(arrays["item_spikes"]) for _, _, arrays in runs)
    fig = Figure(figsize=(4.2 * n_items + 1.2, 1.2 + 1.6 * len(runs)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(runs), n_items, squeeze=False))
    peak = max(float((np.asarray(arrays["item_spikes"])[..., _shown_populations(arrays)]
                      / np.array([arrays["populations"][p]["size"] for p in _shown_populations(arrays)])).max(
                          initial=0.0)) if _shown_populations(arrays) else 0.0 for _, _, arrays in runs)
    image = None
    for r, (label, _, arrays) in enumerate(runs):
        shown = _shown_populations(arrays)
        for k in range(n_items):
            ax = axes[r, k]
            if k >= len(arrays["item_spikes"]) or not shown:
                ax.set_axis_off()
                continue
            sizes = np.array([arrays["populations"][p]["size"] for p in shown], np.float64)
            rates = np.asarray(arrays["item_spikes"][k], np.float64)[:, shown] / sizes
            T = rates.shape[0]
            image = ax.imshow(rates.T, aspect="auto", interpolation="nearest", cmap="magma", vmin=0.0,
                              vmax=max(peak, 1e-9), extent=(0.5, T + 0.5, len(shown) - 0.5, -0.5))
            ax.set_yticks(range(len(shown)), [f"{arrays['populations'][p]['name']} ({int(s)})"
                                              for p, s in zip(shown, sizes, strict=True)], fontsize=7)
            item_label = arrays.get("item_labels")
            detail = "" if item_label is None else (f" (label {int(item_label[k])}, predicted "
                                                    f"{int(arrays['item_predictions'][k])} at T)")
            ax.set_title(f"{label}: item {k}{detail}", fontsize=8, color=_color(r))
            ax.set_xlabel(STEP_UNIT, fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, label="spikes per neuron per step", shrink=0.9)
    fig.suptitle("population activity: spikes per neuron in each step, per population (a heat map of counts; "
                 "single neurons' spike times are not recorded)", fontsize=9)
    return fig


def firing_rate(runs) -> Figure:
    names = []
    for _, _, arrays in runs:
        for p in _shown_populations(arrays):
            name = arrays["populations"][p]["name"]
            if name not in names:
                names.append(name)
    names = names[:8] or ["(no spikes)"]
    columns = min(len(names), 4)
    rows = -(-len(names) // columns)
    fig = Figure(figsize=(3.6 * columns, 3.0 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    for ax, name in zip(axes, names, strict=False):
        for i, (label, _, arrays) in enumerate(runs):
            index = next((p for p, pop in enumerate(arrays["populations"]) if pop["name"] == name), None)
            if index is None:
                continue
            dt = float(arrays.get("dt_ms", 1.0))
            rate = np.asarray(arrays["spikes_per_step"])[:, index] / arrays["populations"][index]["size"] / dt * 1e3
            ax.plot(np.arange(1, len(rate) + 1) * dt, rate, label=label, **run_style(i, len(runs), len(rate)))
        size = next((pop["size"] for _, _, a in runs for pop in a["populations"] if pop["name"] == name), "?")
        ax.set_title(f"{name} ({size} neurons)", fontsize=9)
        ax.set(xlabel="time (ms)", ylabel="firing rate (Hz, mean over items)")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    axes[0].legend(fontsize=7)
    fig.suptitle("firing rate per population")
    return fig


def energy(runs) -> Figure | None:
    platforms = []
    for _, summary, _ in runs:
        for name in (summary.get("energy") or {}).get("platforms", {}):
            if name not in platforms:
                platforms.append(name)
    if not platforms:
        return None
    fig = Figure(figsize=(8, 1.2 + 0.55 * len(platforms) * max(1, len(runs)) ** 0.5), layout="constrained")
    ax = fig.add_subplot()
    height = 0.8 / len(runs)
    for i, (label, summary, _) in enumerate(runs):
        entries = (summary.get("energy") or {}).get("platforms", {})
        names = [name for name in platforms if name in entries]
        ys = [platforms.index(name) + i * height for name in names]
        values = [entries[name]["joules"] for name in names]
        ax.barh(ys, values, height=height, color=_color(i), label=label)
        for y, name, value in zip(ys, names, values, strict=True):
            ax.annotate(format_joules(value), (value, y), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=7)
            if "packets_joules" in entries[name]:
                ax.annotate(f"spike packets {format_joules(entries[name]['packets_joules'])} + chip and core power "
                            f"{format_joules(entries[name]['static_joules'])}", (0, y),
                            xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                            va="center", fontsize=6.5, color="white")
    ax.set_yticks([k + 0.4 - height / 2 for k in range(len(platforms))],
                  [ENERGY_LABELS.get(name, name) for name in platforms], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("estimated energy per inference (J; formulas and sources in summary.json, energy)")
    ax.set_title("energy per inference: estimates from counted operations", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    smallest = min(entry["joules"] for _, summary, _ in runs
                   for entry in (summary.get("energy") or {}).get("platforms", {}).values() if entry["joules"] > 0)
    largest = max(entry["joules"] for _, summary, _ in runs
                  for entry in (summary.get("energy") or {}).get("platforms", {}).values())
    ax.set_xlim(smallest / 3, largest * 20)
    if len(runs) > 1:  # one run needs no legend: the title says what the bars are
        ax.legend(fontsize=7, loc="lower right")
    return fig


FIGURES = {
    "accuracy_vs_time.png": accuracy_vs_time, "accuracy_vs_events.png": accuracy_vs_events,
    "dc_pareto_front.png": dc_pareto_front, "stop_time_histogram.png": stop_time_histogram,
    "mean_confidence.png": mean_confidence, "population_activity.png": population_activity,
    "firing_rate.png": firing_rate, "energy.png": energy,
}


def save_figure(fig: Figure, path: Path) -> Path:
    """``fig`` as a PNG at 120 dpi, written atomically (a temporary file renamed over ``path``)."""
    with atomic_write(path) as handle:
        fig.savefig(handle, dpi=120, format="png")
    return path


def plot_reports(folder: Path, runs: list[tuple[str, dict, dict]]) -> list[Path]:
    """Writes the PNG plots for one or several runs ``(label, summary, arrays)`` into ``folder`` (see the
    module docstring); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in FIGURES.items():
        fig = make(runs)
        if fig is not None:
            save_figure(fig, folder / name)
            paths.append(folder / name)
    return paths


def overview_figure(runs: list[tuple[str, dict, dict]]) -> Figure:
    """One figure with accuracy over time, accuracy against synaptic events, the Dynamic Confidence front
    and the stop steps (what ``Summary.plot`` shows in a notebook)."""
    fig = Figure(figsize=(12, 8), layout="constrained")
    (time_ax, events_ax), (front_ax, stop_ax) = fig.subplots(2, 2)
    for i, (label, _, arrays) in enumerate(runs):
        accuracy = arrays["accuracy"]
        steps = np.arange(1, len(accuracy) + 1)
        style = run_style(i, len(runs), len(accuracy))
        time_ax.plot(steps, accuracy, label=label, **style)
        events = np.cumsum(arrays["events_per_step"])
        keep = events > 0
        events_ax.plot(events[keep], accuracy[keep], label=label, **run_style(i, len(runs), int(keep.sum())))
    for ax in (time_ax, events_ax):
        _ann_lines(ax, runs)
        ax.set_ylabel("accuracy a(t) (fraction of items)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    time_ax.set_xlabel(STEP_UNIT)
    events_ax.set_xlabel("cumulative synaptic events per inference (events)")
    events_ax.set_xscale("log")
    _dc_front_panel(front_ax, runs)
    front_ax.legend(fontsize=7, loc="lower right")
    stop_ax.set_title("stop steps", fontsize=9)
    for i, (label, _, arrays) in enumerate(runs):
        stops, never = arrays["stop_times"], arrays["never_correct"]
        T = len(arrays["accuracy"])
        bins = np.arange(0.5, T + 1.5) if T <= 60 else np.linspace(0.5, T + 0.5, 51)
        stop_ax.hist(stops, bins=bins, weights=np.full(len(stops), 1.0 / max(len(stops), 1)), histtype="step",
                     color=_color(i), linestyle=LINESTYLES[i % len(LINESTYLES)], linewidth=2.0,
                     label=f"{label}: DC stop ({never.mean():.1%} never correct)")
    stop_ax.set(xlabel="stop step (steps of 1 ms)", ylabel="fraction of test-part items")
    stop_ax.legend(fontsize=7)
    stop_ax.grid(alpha=0.3)
    return fig


def prediction_agreement_figure(specs: list[str], results: list) -> Figure:
    """Fraction of items with the reference's (``results[0]``) prediction at each step, per backend; the
    axis ends at 1 (a fraction), with a thin margin so a line at 1 stays visible."""
    from neurodeploy.evaluate.compare import prediction_agreement

    reference = results[0]
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    lowest = 1.0
    for i, (spec, result) in enumerate(zip(specs, results, strict=True)):
        if i == 0:
            continue
        agreement = prediction_agreement(reference, result)
        lowest = min(lowest, float(agreement.min()))
        ax.plot(np.arange(1, len(agreement) + 1), agreement, label=f"{spec} (mean {agreement.mean():.4f})",
                **run_style(i, len(specs), len(agreement)))
    bottom = max(0.0, lowest - max(0.1 * (1.0 - lowest), 0.002))
    ax.set_ylim(bottom, 1.0 + 0.03 * (1.0 - bottom))  # a thin margin keeps a line at 1 visible
    ax.set_yticks([tick for tick in ax.get_yticks() if bottom <= tick <= 1.0])  # a fraction: no tick above 1
    ax.set(xlabel=STEP_UNIT, ylabel="fraction of items with the reference's prediction",
           title=f"prediction agreement with {specs[0]} per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_comparison(folder: Path, specs: list[str], results: list) -> list[Path]:
    """Writes ``prediction_agreement.png`` and ``spike_count_scatter.png`` for results of the same items
    on several backends; ``specs[0]`` / ``results[0]`` is the reference. Colours follow the order of
    ``specs``, as in :func:`plot_reports`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reference, paths = results[0], []

    fig = prediction_agreement_figure(specs, results)
    save_figure(fig, folder / "prediction_agreement.png")
    paths.append(folder / "prediction_agreement.png")

    shown = [p for p, pop in enumerate(reference.populations)
             if pop["role"] != "input" and any(r.spike_counts[..., p].any() for r in results)]
    if shown:
        columns = min(len(shown), 4)
        rows = -(-len(shown) // columns)
        fig = Figure(figsize=(3.6 * columns, 3.4 * rows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
        for ax, p in zip(axes, shown, strict=False):
            x = reference.spike_counts[..., p].sum(axis=1)
            for i, (spec, result) in enumerate(zip(specs, results, strict=True)):
                if i == 0:
                    continue
                y = result.spike_counts[..., p].sum(axis=1)
                ratio = float(y.sum() / x.sum()) if x.sum() else float("nan")
                ax.scatter(x, y, s=14, color=_color(i), marker=MARKERS[i % len(MARKERS)], alpha=0.7,
                           label=f"{spec}: {np.mean(x == y):.0%} of items equal, total x{ratio:.3f}")
            totals = np.concatenate([r.spike_counts[..., p].sum(axis=1) for r in results])
            low, high = float(totals.min()), max(float(totals.max()), 1.0)
            pad = 0.04 * max(high - low, 1.0)
            ax.plot([low - pad, high + pad], [low - pad, high + pad], color="k", linewidth=0.8, linestyle=":",
                    zorder=0)
            ax.set_xlim(low - pad, high + pad)
            ax.set_ylim(low - pad, high + pad)
            pop = reference.populations[p]
            ax.set_title(f"{pop['name']} ({pop['size']} neurons)", fontsize=9)
            ax.set(xlabel=f"spikes per item, {specs[0]} (spikes)", ylabel="spikes per item, other backend (spikes)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in axes[len(shown):]:
            ax.set_axis_off()
        fig.suptitle(f"spike counts per item and population against {specs[0]} (dotted: equal)", fontsize=10)
        save_figure(fig, folder / "spike_count_scatter.png")
        paths.append(folder / "spike_count_scatter.png")
    return paths
