"""Everything the command line shows: the listener that renders job events as lines and rich tables."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from neurodeploy.jobs.events import Event

# Pipes and log files get a wide console so tables are not squeezed; terminals use their own width.
console = Console(width=None if sys.stdout.isatty() else 160)


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


def summary_table(summary: dict, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    for name, value in summary_rows(summary):
        table.add_row(name, value)
    if summary.get("prediction"):
        table.caption = summary["prediction"]
    return table


def comparison_table(summaries: list[dict], labels: list[str]) -> Table:
    table = Table(title="comparison")
    table.add_column("metric", style="bold")
    for label in labels:
        table.add_column(label)
    rows = [summary_rows(s) for s in summaries]
    for i, (name, _) in enumerate(rows[0]):
        table.add_row(name, *(r[i][1] for r in rows))
    return table


def agreement_table(report: dict) -> Table:
    table = Table(title=f"agreement with {report['reference']} ({report['n_items']} items, T={report['T']})")
    for column in ("backend", "predictions equal (mean / min over steps)", "spike counts equal per population",
                   "neurons with equal counts", "max |readout diff|", "wall per item", "build"):
        table.add_column(column)
    for spec, entry in report["backends"].items():
        agreement = entry["agreement_with_reference"]
        counts = ", ".join(f"{name} {v['equal_fraction']:.4%}" for name, v in agreement["spike_counts"].items())
        neurons = agreement.get("neuron_counts", {}).get("all")
        predictions = f"{agreement['prediction_agreement_mean']:.4f} / {agreement['prediction_agreement_min']:.4f}"
        table.add_row(spec, predictions, counts, "n/a" if neurons is None else f"{neurons['equal_fraction']:.4%}",
                      f"{agreement['max_readout_difference']:.3g}",
                      f"{entry['wall_time_per_item_s'] * 1e3:.2f} ms", f"{entry['build_s']:.2f} s")
    return table


def fan_in_table(pass_report: dict) -> Table | str:
    limit, changes = pass_report["max_fan_in"], pass_report["changes"]
    if not changes:
        return f"fan-in pass: every fan-in is at most {limit}, nothing changed"
    table = Table(title=f"fan-in pass (max fan-in {limit})")
    for column in ("where", "fan-in before", "after", "action"):
        table.add_column(column)
    for change in changes:
        table.add_row(change["where"], str(change["fan_in_before"]), str(change["fan_in_after"]), change["action"])
    return table


def mapping_table(report: dict) -> Table:
    table = Table(title=f"mapping on the {report['target']} ({report['config']})")
    table.add_column("population")
    table.add_column("cores")
    table.add_column("max fan-in")
    for name, cores in report["cores_per_population"].items():
        table.add_row(name, str(cores), str(report["max_fan_in"].get(name, "")))
    table.caption = (f"{report['cores']} cores on {report['chips']} chips, {report['n_synapses']} synapses, "
                     f"{report['neurons_per_core']} neurons per core; sPyNNaker reports in {report['reports']}")
    return table


def sparsity_table(report: dict) -> Table:
    table = Table(title="sparsity fine-tuning (validation part of the training split)")
    for column in ("", "accuracy", "S_a", "S_w", "S_c"):
        table.add_column(column)
    for when in ("before", "after"):
        r = report[when]
        table.add_row(when, f"{r['accuracy']:.4f}", f"{r['activation_sparsity']:.4f}", f"{r['weight_sparsity']:.4f}",
                      f"{r['combined_sparsity']:.4f}")
    return table


def render(event: Event) -> None:
    """The CLI's listener for job events (``neurodeploy.jobs.events``)."""
    if event.kind == "fan_in":
        console.print(fan_in_table(event.data))
    elif event.kind == "mapping":
        console.print(mapping_table(event.data))
    elif event.kind == "summary":
        console.print(summary_table(event.data, event.message))
    elif event.kind == "comparison":
        labels, summaries = zip(*event.data["summaries"], strict=True)
        console.print(comparison_table(list(summaries), list(labels)))
        console.print(agreement_table(event.data["report"]))
    else:
        console.print(escape(event.message), highlight=False)


def print_error(message: str) -> None:
    """A user's error: one line."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
