"""The shared evaluator's summary of a result (summary.json), its per-step curves (curves.csv) and
strict JSON files; no plotting or terminal code here (plots: ``plots``; tables: ``neurodeploy.cli.render``).

summary.json (stable interface; accuracies are fractions in [0, 1], latencies in steps):
    backend, T, n_items, ann_accuracy, snn_accuracy (at T), peak_accuracy, peak_step,
    accuracy_curve [T], time_to_target, events_to_target, target_accuracy, spikes_per_neuron,
    synaptic_events_per_item, pareto_latency {raw, pareto}, pareto_power {raw, pareto}, printed_form,
    dynamic_confidence {alpha, threshold, mean_latency, accuracy, full_T_accuracy, step_saving, ...},
    oracle {accuracy, mean_latency, mean_latency_never_correct_at_1}, energy {estimate, unit, counts,
    platforms {name: {joules, formula, source}}, note} (estimates, ``energy``), wall_time_s, metadata.
JSON files are strict: a value that is not a finite number (NaN, infinity) is written as null.

:class:`Summary` wraps a summary for notebooks and scripts (readable repr, ``to_dict``, ``plot``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from neurodeploy.evaluate.dynamic_confidence import evaluate_dynamic_confidence
from neurodeploy.evaluate.energy import LABELS, format_joules, result_energy
from neurodeploy.evaluate.metrics import anytime_metrics, events_per_step
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.safe_io import atomic_write, write_bytes

#: why a summary has no a* and no numbers that need it
A_STAR_ABSENT = ("no ANN accuracy a*: the network was run without its model and records none; a*, the first "
                 "step reaching 99 % of a*, its events, P_l and P_p need it")
#: items whose spikes per step the plots show as a population-by-time map
PLOTTED_ITEMS = 3


def summarize(result: SimulationResult, ann_accuracy: float, dc_alpha: str | float = "T",
              dc_tolerance: float = 0.0, dc_validation_fraction: float = 0.5, seed: int = 0,
              target_fraction: float = 0.99, dc_rule: str = "stable") -> tuple[dict, dict]:
    """Returns ``(summary, plot_arrays)`` for one result (:class:`Summary` wraps both). ``ann_accuracy``
    None (a converted network run without its model and without a recorded a*): every number that needs
    a* (``ann_accuracy``, the target step and events, P_l, P_p) is None and ``ann_accuracy_absent`` says
    why; nothing stands in for a*."""
    summary = {"backend": result.metadata.get("backend", "unknown")}
    summary.update(anytime_metrics(result, 1.0 if ann_accuracy is None else ann_accuracy, target_fraction))
    if ann_accuracy is None:
        summary.update(ann_accuracy=None, target_accuracy=None, time_to_target=None, events_to_target=None,
                       pareto_latency={"raw": None, "pareto": None}, pareto_power={"raw": None, "pareto": None},
                       ann_accuracy_absent=A_STAR_ABSENT)
    dc = evaluate_dynamic_confidence(result, dc_alpha, dc_tolerance, dc_validation_fraction, seed, dc_rule)
    summary["dynamic_confidence"] = dc["dynamic_confidence"]
    summary["oracle"] = dc["oracle"]
    summary["energy"] = result_energy(result, summary["synaptic_events_per_item"])
    summary["wall_time_s"] = float(result.metadata.get("timings", {}).get("run_s", float("nan")))
    summary["metadata"] = result.metadata
    arrays = dict(dc["arrays"], events_per_step=events_per_step(result), accuracy=result.accuracy_curve(),
                  spikes_per_step=result.spike_counts.mean(axis=0), item_spikes=result.spike_counts[:PLOTTED_ITEMS],
                  item_labels=result.labels[:PLOTTED_ITEMS],
                  item_predictions=result.readout[:PLOTTED_ITEMS, -1].argmax(axis=1),
                  populations=list(result.populations), dt_ms=float(result.metadata.get("dt_ms", 1.0)))
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
    text = json.dumps(_plain(data), indent=1, allow_nan=False)
    return write_bytes(path, text.encode())


def write_curves_csv(path: Path, arrays: dict) -> Path:
    """One row per step: accuracy, events per step, cumulative events, mean confidence."""
    accuracy, events = arrays["accuracy"], arrays["events_per_step"]
    cumulative = np.cumsum(events)
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "accuracy", "events_per_step", "cumulative_events", "mean_confidence"])
        for t in range(len(accuracy)):
            writer.writerow([t + 1, f"{accuracy[t]:.6f}", f"{events[t]:.3f}", f"{cumulative[t]:.3f}",
                             f"{arrays['mean_confidence'][t]:.6f}"])
    return path


def write_curves_table(path: Path, runs: list[tuple[str, dict, dict]]) -> Path:
    """The curves of several runs ``(label, summary, arrays)`` side by side, one row per step: for every
    run ``<label> accuracy``, ``<label> events_per_step``, ``<label> cumulative_events`` and
    ``<label> mean_confidence``; a run with fewer steps has empty cells after its T."""
    columns = ("accuracy", "events_per_step", "cumulative_events", "mean_confidence")
    T = max(len(arrays["accuracy"]) for _, _, arrays in runs)
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step"] + [f"{label} {column}" for label, _, _ in runs for column in columns])
        for t in range(T):
            row = [t + 1]
            for _, _, arrays in runs:
                if t < len(arrays["accuracy"]):
                    cumulative = float(np.sum(arrays["events_per_step"][:t + 1]))
                    row += [f"{arrays['accuracy'][t]:.6f}", f"{arrays['events_per_step'][t]:.3f}", f"{cumulative:.3f}",
                            f"{arrays['mean_confidence'][t]:.6f}"]
                else:
                    row += [""] * len(columns)
            writer.writerow(row)
    return path


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "not reached"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """The summary as (metric, value) text rows: what the terminal table and :class:`Summary` show."""
    dc, bound = summary["dynamic_confidence"], summary["oracle"]
    rows = [
        ("ANN accuracy (a*)", _fmt(summary["ann_accuracy"])),
        (f"SNN accuracy at T={summary['T']}", _fmt(summary["snn_accuracy"])),
        ("peak accuracy (step)", f"{_fmt(summary['peak_accuracy'])} ({summary['peak_step']})"),
        (f"first step >= {summary['target_fraction']:.0%} of a*", _fmt(summary["time_to_target"])),
        ("synaptic events to that step", _fmt(summary["events_to_target"])),
        ("Pareto latency P_l (pareto / raw), steps",
         f"{_fmt(summary['pareto_latency']['pareto'])} / {_fmt(summary['pareto_latency']['raw'])}"),
        ("Pareto power P_p (pareto / raw), events",
         f"{_fmt(summary['pareto_power']['pareto'])} / {_fmt(summary['pareto_power']['raw'])}"),
        ("spikes per neuron per inference", _fmt(summary["spikes_per_neuron"])),
        ("synaptic events per inference", _fmt(summary["synaptic_events_per_item"])),
        ("DC threshold / alpha", f"{_fmt(dc['threshold'])} / {_fmt(dc['alpha'], 3)}"),
        (f"DC on test part (n={dc['n_test']})",
         f"latency {dc['mean_latency']:.2f} steps, accuracy {dc['accuracy']:.4f} "
         f"(full T {dc['full_T_accuracy']:.4f}), saving {dc['step_saving']:.1%} steps, "
         f"{dc['event_saving']:.1%} events"),
        ("oracle bound (test part)", f"accuracy {bound['accuracy']:.4f}, latency {bound['mean_latency']:.2f} steps"),
    ]
    if summary.get("ann_accuracy") is None:  # a* absent: the rows that need it say so
        rows = [(name, "absent (no a*)") if i in (0, 3, 4, 5, 6) else (name, value)
                for i, (name, value) in enumerate(rows)]
    check = summary.get("board_accuracy")
    if check:
        text = (f"{check['accuracy']:.4f} vs {check['reference_accuracy']:.4f} ({-check['loss_pp']:+.2f} pp; "
                f"limit -{check['limit_pp']:g} pp)")
        if check.get("warning"):
            text += f" WARNING: population {check.get('population')}, factor {check.get('factor')}"
        rows.append((f"accuracy against {check['reference']}", text))
    mapping = summary.get("mapping")
    if mapping:
        rows.append((f"mapping on the {mapping['target']}",
                     f"{mapping.get('neuron_cores', '?')} neuron cores + {mapping.get('system_cores', '?')} system "
                     f"cores on {mapping['chips']} chips"))
    for name, entry in (summary.get("energy") or {}).get("platforms", {}).items():
        rows.append((f"est. energy per inference: {LABELS.get(name, name)}", format_joules(entry["joules"])))
    rows.append(("wall time", f"{summary['wall_time_s']:.2f} s" if summary.get("wall_time_s") is not None else "n/a"))
    recording = summary.get("spike_recording")
    if recording:
        parts = [f"{name} {entry['spikes']:,} spikes ({entry['neurons']:,} neurons, {len(entry['items'])} items)"
                 for name, entry in recording["populations"].items()]
        rows.append((f"spike trains in {recording['file']}", "; ".join(parts)))
    return rows


def energy_caption(summary: dict) -> str:
    """Where the energy estimates come from, one line per platform of ``summary``."""
    energy = summary.get("energy") or {}
    platforms = energy.get("platforms", {})
    if not platforms:
        return ""
    lines = ["Energy: estimates from the counted operations (summary.json: energy)."]
    lines += [entry["source"] for entry in platforms.values()]
    cores_from = energy.get("counts", {}).get("spinnaker_cores_from")
    if "spinnaker1" in platforms and cores_from:
        counts = energy["counts"]
        lines.append(f"SpiNNaker cores/chips: {counts['spinnaker_cores']}/{counts['spinnaker_chips']} ({cores_from})")
    return "\n".join(lines)


class Summary(Mapping):
    """One run's summary for notebooks and scripts: a read-only mapping over the summary.json fields
    (``s["snn_accuracy"]``), shown as a table (``repr`` and, in Jupyter, ``_repr_html_``), with
    :meth:`to_dict` (JSON types) and :meth:`plot`. Made by :meth:`of` from a SimulationResult, or from a
    ``(summary, arrays)`` pair of :func:`summarize`; :meth:`load` reads a summary.json (no plots)."""

    def __init__(self, summary: dict, arrays: dict | None = None, label: str | None = None):
        self._summary = summary
        self.arrays = arrays
        self.label = label or str(summary.get("backend", "run"))

    @classmethod
    def of(cls, result: SimulationResult, ann_accuracy: float | None = None, label: str | None = None,
           **options) -> Summary:
        """Evaluates ``result`` (``options``: those of :func:`summarize`); ``ann_accuracy`` defaults to
        the one the result records."""
        a_star = result.metadata.get("ann_accuracy") if ann_accuracy is None else ann_accuracy
        if a_star is None:
            raise ValueError("the result records no ANN accuracy; pass ann_accuracy")
        return cls(*summarize(result, a_star, **options), label=label)

    @classmethod
    def load(cls, path: str | Path, label: str | None = None) -> Summary:
        """A summary.json, or the one in a run folder."""
        path = Path(path)
        path = path / "summary.json" if path.is_dir() else path
        return cls(json.loads(path.read_text()), label=label or path.parent.name)

    def __getitem__(self, key: str):
        return self._summary[key]

    def __iter__(self):
        return iter(self._summary)

    def __len__(self) -> int:
        return len(self._summary)

    def to_dict(self) -> dict:
        """The summary with JSON types only (what summary.json holds)."""
        return _plain(self._summary)

    def rows(self) -> list[tuple[str, str]]:
        return summary_rows(self._summary)

    def _title(self) -> str:
        s = self._summary
        return f"Summary of {self.label}: {s.get('n_items', '?')} items, T = {s.get('T', '?')} steps"

    def __repr__(self) -> str:
        rows = self.rows()
        width = max(len(name) for name, _ in rows)
        lines = [self._title()] + [f"  {name:<{width}}  {value}" for name, value in rows]
        caption = energy_caption(self._summary)
        return "\n".join(lines + ([""] + caption.splitlines() if caption else []))

    def _repr_html_(self) -> str:
        from html import escape

        body = "".join(f"<tr><th style='text-align:left'>{escape(name)}</th><td style='text-align:left'>"
                       f"{escape(value)}</td></tr>" for name, value in self.rows())
        caption = "<br>".join(escape(line) for line in energy_caption(self._summary).splitlines())
        note = f"<p style='font-size:smaller'>{caption}</p>" if caption else ""
        return f"<table><caption>{escape(self._title())}</caption>{body}</table>{note}"

    def plot(self, folder: str | Path | None = None):
        """An overview figure (accuracy over time and over synaptic events, Dynamic Confidence front,
        stop times; a matplotlib ``Figure``, which Jupyter shows); with ``folder`` also every PNG of
        :func:`neurodeploy.evaluate.plots.plot_reports` there."""
        from neurodeploy.evaluate.plots import overview_figure, plot_reports

        if self.arrays is None:
            raise ValueError("this summary has no curves (it was loaded from summary.json); make it with "
                             "Summary.of(SimulationResult.load(...))")
        runs = [(self.label, self._summary, self.arrays)]
        if folder is not None:
            plot_reports(Path(folder), runs)
        return overview_figure(runs)
