"""Everything the command line shows: the listener that renders job events as lines and rich tables,
and how much it shows (:func:`configure`: -q, default, -v)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from neurodeploy.jobs.events import Event

# Pipes and log files get a wide console so tables are not squeezed; terminals use their own width.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

#: -1 quiet, 0 default, 1 verbose, 2 debug (set by :func:`configure`)
verbosity = 0
#: worker processes of the backends read the log level from here (``neurodeploy.backends.processes``)
LOG_LEVEL_VARIABLE = "NEURODEPLOY_LOG_LEVEL"

__all__ = ["comparison_table", "configure", "console", "optimization_table", "render", "sparsity_table", "summary_rows",
           "summary_table"]


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """(metric, value) rows of a summary (``neurodeploy.evaluate.summary.summary_rows``)."""
    from neurodeploy.evaluate.summary import summary_rows as rows

    return rows(summary)


def _energy_caption(summary: dict) -> str:
    from neurodeploy.evaluate.summary import energy_caption

    return energy_caption(summary)


def configure(args) -> None:
    """Applies -q / -v of the parsed arguments. Quiet: only the summary table and errors (no stage lines,
    no progress bars, Python warnings and log records below ERROR hidden, here and in worker processes).
    Default: stage lines, progress bars, warnings; log records of WARNING and above. Verbose (-v): log
    records of INFO and above from neurodeploy and the simulator libraries (-vv: DEBUG), here and in
    worker processes, and the simulators' run.log printed when a job ends."""
    global verbosity
    verbosity = -1 if getattr(args, "quiet", False) else min(int(getattr(args, "verbose", 0) or 0), 2)
    if verbosity == 0:
        os.environ.pop(LOG_LEVEL_VARIABLE, None)
        return
    if verbosity < 0:
        if hasattr(args, "no_progress"):
            args.no_progress = True
        warnings.simplefilter("ignore")
        os.environ["PYTHONWARNINGS"] = "ignore"
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}[verbosity]
    if verbosity > 0:
        from rich.logging import RichHandler

        logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[RichHandler(console=errors)])
    logging.getLogger().setLevel(level)
    os.environ[LOG_LEVEL_VARIABLE] = logging.getLevelName(level)


def summary_table(summary: dict, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    for name, value in summary_rows(summary):
        table.add_row(escape(name), escape(value))
    caption = [summary["prediction"]] if summary.get("prediction") else []
    table.caption = "\n".join(caption + [_energy_caption(summary)]).strip() or None
    table.caption_justify = "left"
    return table


def comparison_table(summaries: list[dict], labels: list[str]) -> Table:
    table = Table(title="comparison")
    table.add_column("metric", style="bold")
    for label in labels:
        table.add_column(label)
    rows = [summary_rows(s) for s in summaries]
    for i, (name, _) in enumerate(rows[0]):
        table.add_row(name, *(r[i][1] if i < len(r) else "" for r in rows))
    table.caption = _energy_caption(summaries[0]) or None
    table.caption_justify = "left"
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


def diagnosis_table(report: dict, title: str) -> Table:
    """Per population: spike-count agreement of the prediction and of each factor alone with the reference, and
    the factor that loses most; then the accuracies; the caption names the cause and the fan-in pass's cost."""
    factors = [f for f in report["accuracy"] if f not in ("reference", "board")]
    table = Table(title=escape(f"{title}\nspike-count agreement with {report['reference']} ({report['n_items']} "
                               f"items, T={report['T']}, {report['encoding']} input): 1 - sum|n - n_ref| / sum n_ref"))
    for column in ("population", "prediction", "drop here", *factors, "worst factor"):
        table.add_column(column)
    for row in report["populations"]:
        table.add_row(escape(row["population"]), f"{row['agreement']:.3f}", f"{row['drop']:+.3f}",
                      *(f"{row['factors'][f]:.3f}" if f in row["factors"] else "" for f in factors),
                      str(row["factor"]))
    accuracy = report["accuracy"]
    table.add_row("accuracy", f"{accuracy['board']:.4f}", f"ref {accuracy['reference']:.4f}",
                  *(f"{accuracy[f]:.4f}" for f in factors), "", style="bold")
    lines = []
    if report.get("cause"):
        c = report["cause"]
        lines.append(f"loses most: population {c['population']} (agreement drops by {c['drop']:.3f} there), "
                     f"factor {c['factor']}")
    if report.get("fan_in"):
        f = report["fan_in"]
        lines.append(f"fan-in pass: reference accuracy {f['reference_accuracy_without']:.4f} without it, "
                     f"{f['reference_accuracy_with']:.4f} with it ({-f['loss_pp']:+.2f} pp)")
    table.caption = escape("\n".join(lines)) or None
    table.caption_justify = "left"
    return table


def brief(value, items: int = 6):
    """``value`` for display: a list or tuple of more than ``items`` entries becomes
    "[N values: first, second, third, ...]", inside dicts and lists too."""
    if isinstance(value, dict):
        return {key: brief(entry, items) for key, entry in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > items:
            return f"[{len(value)} values: {', '.join(str(brief(v, items)) for v in value[:3])}, ...]"
        return [brief(v, items) for v in value]
    return value


def metadata_table(metadata: dict) -> Table:
    """An IR's metadata, one key per row, long lists shortened (:func:`brief`)."""
    table = Table(title="metadata", show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key, value in metadata.items():
        table.add_row(key, escape(str(brief(value))))
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


def fan_in_line(pass_report: dict) -> str:
    """The fan-in pass in one line (the table with -v)."""
    changes = pass_report["changes"]
    where = "; ".join(f"{c['where']} {c['fan_in_before']} -> {c['fan_in_after']}" for c in changes)
    return f"fan-in pass (max fan-in {pass_report['max_fan_in']}): " + (where or "nothing to change")


def mapping_line(report: dict) -> str:
    """A mapping in one line (the table with -v); with sub-steps, the board time they cost."""
    factor = report.get("time_scale_factor") or 1
    ticks = (f"; {report.get('machine_time_step_us')} us ticks, time_scale_factor {factor}: {factor} T ms of "
             "board time per item" if factor > 1 else "")
    return (f"mapped on the {report['target']}: {report.get('neuron_cores', '?')} neuron cores, "
            f"{report.get('system_cores', '?')} system cores, {report['chips']} chips, {report['n_synapses']} "
            f"synapses{ticks} (mapping.json; -v for the table)")


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


def _pp(change: float) -> str:
    return f"{100 * change:+.2f} pp"


def _interval(paired: dict | None) -> str:
    """A paired comparison's interval of the accuracy change, in pp (``neurodeploy.optimize.budget``)."""
    if paired is None:
        return ""
    return f"[{100 * paired['lower']:+.2f}, {100 * paired['upper']:+.2f}]"


def sparsity_table(report: dict) -> Table:
    """Phase 1 before and after on the validation part of the training split: accuracy, its change against
    the original with the paired interval, S_a, S_w, S_c and the strengths; under an accuracy budget
    (``neurodeploy.train.sparsity.budgeted_sparsity``) also the budget, how the strengths were found, and
    with -v every candidate the search measured, each with its interval."""
    items = report.get("validation_items")
    table = Table(title="sparsity fine-tuning (validation part of the training split"
                        + (f", {items} items)" if items else ")"))
    confidence = report.get("confidence")
    interval = f"{100 * confidence:g} % interval" if confidence else "interval"
    for column in ("", "lambda_a", "lambda_w", "prune below", "accuracy", "change", interval, "S_a", "S_w", "S_c"):
        table.add_column(column)
    before, config = report["before"], report["config"]

    def row(label: str, r: dict, strengths: tuple[str, str, str], change: str) -> None:
        table.add_row(label, *strengths, f"{r['accuracy']:.4f}", change, _interval(r.get("paired")),
                      f"{r['activation_sparsity']:.4f}", f"{r['weight_sparsity']:.4f}", f"{r['combined_sparsity']:.4f}")

    row("before", before, ("", "", ""), "")
    if verbosity > 0:
        for trial in report.get("trials", []):
            row("candidate" + (" (loaded)" if trial.get("cached") else ""), trial,
                (f"{trial['lambda_a']:.4g}", f"{trial['lambda_w']:.4g}", f"{trial['prune_threshold']:g}"),
                _pp(trial["accuracy"] - before["accuracy"]) + ("" if trial["within_budget"] else " (out)"))
    after = {**report["after"], "paired": report.get("paired")}
    row("after", after, (f"{config['lambda_a']:.4g}", f"{config['lambda_w']:.4g}", f"{config['prune_threshold']:g}"),
        _pp(after["accuracy"] - before["accuracy"]))
    if "budget" in report:
        searched = report["searched"]
        loaded = report.get("fine_tunings_loaded", 0)
        how = [f"penalty chosen over {report.get('fine_tunings', 0)} fine-tunings"
               + (f" ({loaded} loaded from an interrupted run)" if loaded else "")
               if searched["penalty"] else "penalty given",
               "pruning threshold chosen" if searched["prune_threshold"] else "pruning threshold given"]
        verdict = "within the budget" if report["within_budget"] else "OUTSIDE the budget (the given strengths)"
        table.caption = (f"accuracy budget {100 * report['budget']:g} pp: a candidate is outside only when its whole "
                         f"interval lies below -{100 * report['budget']:g} pp; {', '.join(how)}; the sparsest "
                         f"candidate {verdict}" + ("" if verbosity > 0 else " (-v: every candidate)"))
        table.caption_justify = "left"
    return table


def optimization_table(report: dict, message: str) -> Table:
    """Phase 2 on the held-out training items: the original ANN, H0 and the optimized scales, each with the
    paired interval of its peak-step accuracy change against the original ANN, under the budget."""
    table = Table(title=f"scale optimization ({report['method']}, {report['optimization_items']} held-out training "
                        "items)")
    confidence = report.get("confidence")
    interval = f"{100 * confidence:g} % interval" if confidence else "interval"
    for column in ("", "peak accuracy", "vs original ANN", interval, "P_l (steps)", "P_p (events)", "loss"):
        table.add_column(column)
    original = report.get("original_ann_accuracy", report["ann_accuracy"])
    table.add_row("original ANN", f"{original:.4f}", "", "", "", "", "")
    for label, measured, loss in (("H0 (heuristic scales)", report["start"], report["start_loss"]),
                                  ("optimized", report["best"], report["best_loss"])):
        table.add_row(label, f"{measured['peak_accuracy']:.4f}", _pp(measured["peak_accuracy"] - original),
                      _interval(measured.get("paired")), f"{measured['pareto_latency']:.4g}",
                      f"{measured['pareto_power']:.4g}", f"{loss:.4f}")
    lines = [message]
    verdict = "meets it" if report["feasible"] else "does NOT (no simulated point met it)"
    if report.get("accuracy_budget") is not None:
        lines.insert(0, f"accuracy budget {report['accuracy_budget_pp']:g} pp: a point is outside only when its whole "
                        f"interval lies below -{report['accuracy_budget_pp']:g} pp; the optimized point {verdict}")
    elif report.get("accuracy_floor") is not None:
        lines.insert(0, f"peak accuracy at least {report['accuracy_floor']:.4f}; the optimized point {verdict}")
    table.caption = "\n".join(lines)
    table.caption_justify = "left"
    return table


def _simulator_logs(folder: Path) -> None:
    """Prints the simulators' logs (run.log) of a run folder and its backend folders."""
    for log in sorted(folder.glob("**/run.log")):
        text = log.read_text(errors="replace").strip()
        if text:
            errors.rule(f"simulator log {log}")
            errors.print(escape(text), highlight=False, soft_wrap=True)


def render(event: Event) -> None:
    """The CLI's listener for job events (``neurodeploy.jobs.events``); with -q only the summary and
    comparison tables and the line naming the folder written ("done")."""
    if verbosity < 0 and event.kind not in ("summary", "comparison", "done"):
        return
    if event.kind == "done" and verbosity > 0 and event.data.get("folder"):
        _simulator_logs(Path(event.data["folder"]))
    if event.kind == "fan_in":
        console.print(fan_in_table(event.data) if verbosity > 0 else fan_in_line(event.data), highlight=False)
    elif event.kind == "sparsity":
        console.print(sparsity_table(event.data))
    elif event.kind == "optimization" and event.data:
        console.print(optimization_table(event.data, event.message))
    elif event.kind == "mapping":
        console.print(mapping_table(event.data) if verbosity > 0 else mapping_line(event.data), highlight=False)
    elif event.kind == "summary":
        console.print(summary_table(event.data, event.message))
    elif event.kind == "warning":
        print_warning(event.message)
    elif event.kind == "diagnosis":
        console.print(diagnosis_table(event.data, event.message))
    elif event.kind == "comparison":
        labels, summaries = zip(*event.data["summaries"], strict=True)
        console.print(comparison_table(list(summaries), list(labels)))
        console.print(agreement_table(event.data["report"]))
    else:
        console.print(escape(event.message), highlight=False)


def print_warning(message: str) -> None:
    """A warning the user should read (not shown with -q)."""
    if verbosity >= 0:
        errors.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True, highlight=False)


def print_error(message: str) -> None:
    """A user's error: one line."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
