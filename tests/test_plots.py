"""Plots, the notebook objects and ``neurodeploy evaluate`` on small synthetic results: every figure is
written, a run keeps one colour in every figure, the zoom covers where the runs differ, the comparison
plots exist, Summary and SimulationResult show shapes and numbers (not arrays), and evaluate takes run
folders, refuses runs over different items, warns about different T and writes its curves side by side."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from neurodeploy.cli import main
from neurodeploy.evaluate.plots import COLORS, FIGURES, focus_range, overview_figure, plot_comparison, plot_reports
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.evaluate.summary import Summary, summarize


def synthetic_result(seed: int, n: int = 40, T: int = 30, labels: np.ndarray | None = None,
                     dataset: str = "mnist-embedded") -> SimulationResult:
    """Readouts that drift towards the label at a per-item speed (some items never get there); spikes and
    events per population and step."""
    rng = np.random.default_rng(seed)
    C = 4
    labels = rng.integers(0, C, n) if labels is None else labels
    readout = np.cumsum(rng.normal(0.0, 1.0, (n, T, C)), axis=1).astype(np.float32)
    speed = rng.uniform(0.0, 1.0, n) * (rng.uniform(size=n) > 0.1)
    readout[np.arange(n), :, labels] += (speed[:, None] * np.arange(1, T + 1)[None, :]).astype(np.float32)
    spikes = rng.poisson(3.0, (n, T, 3)).astype(np.float32)
    spikes[..., 0] = 0.0  # analog input: no input spikes
    spikes[..., 2] = 0.0  # the output does not spike
    events = spikes * 10.0
    metadata = {"backend": "gpu", "profile": "ideal", "T": T, "dt_ms": 1.0, "ann_accuracy": 0.9, "dataset": dataset,
                "populations": [{"name": "input", "role": "input", "size": 16},
                                {"name": "hidden", "role": "hidden", "size": 20},
                                {"name": "output", "role": "output", "size": C}],
                "ann_operations": {"macs": 400, "accumulates": 24, "input_macs": 320}}
    return SimulationResult(readout, labels.astype(np.int64), spikes, events, metadata)


@pytest.fixture(scope="module")
def runs():
    first = synthetic_result(0)
    second = synthetic_result(1, labels=first.labels)
    return [(label, *summarize(result, 0.9)) for label, result in (("a", first), ("b", second))]


def _line_colors(fig: Figure, label: str) -> set:
    return {tuple(np.round(line.get_color(), 4)) if not isinstance(line.get_color(), str) else line.get_color()
            for ax in fig.axes for line in ax.get_lines() if (line.get_label() or "").startswith(label)}


def test_every_figure_is_written(tmp_path, runs):
    paths = plot_reports(tmp_path, runs)
    assert sorted(p.name for p in paths) == sorted(FIGURES)
    for path in paths:
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300, path


def test_one_colour_per_run_in_every_figure(runs):
    for index, (label, _, _) in enumerate(runs):
        expected = tuple(np.round(COLORS[index], 4))
        for name in ("accuracy_vs_time.png", "accuracy_vs_events.png", "dc_pareto_front.png", "mean_confidence.png",
                     "firing_rate.png"):
            fig = FIGURES[name](runs)
            colors = _line_colors(fig, label)
            assert colors == {expected}, (name, label, colors)


def test_zoom_covers_where_the_runs_differ():
    steps = np.arange(1, 101)
    rising = np.minimum(1.0, steps / 10) * 0.95
    other = rising.copy()
    other[40:] = 0.93
    low, high, start = focus_range([rising, other], [0.96])
    assert start == 10  # both curves first reach 90 % of 0.96 = 0.864 at step 10 (0.95)
    # from there they span 0.93..0.95, the ANN line is at 0.96; margin max(8 % of 0.03, 0.003)
    assert low == pytest.approx(0.927) and high == pytest.approx(0.963)


def test_comparison_plots(tmp_path):
    reference = synthetic_result(0)
    other = synthetic_result(2, labels=reference.labels)
    paths = plot_comparison(tmp_path, ["gpu:ideal", "gpu:pynn"], [reference, other])
    assert [p.name for p in paths] == ["prediction_agreement.png", "spike_count_scatter.png"]
    assert all(imread(p).shape[0] > 200 for p in paths)


def test_summary_object_for_notebooks(runs):
    result = synthetic_result(0)
    summary = Summary.of(result, label="mine")
    text = repr(summary)
    assert text.startswith("Summary of mine: 40 items, T = 30 steps")
    assert "est. energy per inference: Loihi (SNN)" in text and "Davies et al." in text
    assert "<table>" in summary._repr_html_()
    plain = summary.to_dict()
    assert plain["n_items"] == 40 and isinstance(plain["accuracy_curve"], list)
    assert summary["snn_accuracy"] == plain["snn_accuracy"]
    assert isinstance(summary.plot(), Figure) and isinstance(overview_figure(runs), Figure)


def test_result_repr_states_shapes_not_arrays():
    result = synthetic_result(0)
    text = repr(result)
    assert text.startswith("SimulationResult: 40 items x 30 steps x 4 classes (backend gpu, profile ideal)")
    assert "readout          float32 [40, 30, 4]" in text and "hidden (hidden, 20)" in text
    assert "array(" not in text and "[[" not in text
    assert "<table>" in result._repr_html_()


def _save(folder, result):
    folder.mkdir(parents=True, exist_ok=True)
    result.save(folder / "result.npz")
    return str(folder)


def test_evaluate_takes_run_folders_and_writes_curves_side_by_side(tmp_path, capsys):
    first = synthetic_result(0)
    a = _save(tmp_path / "run-a", first)
    _save(tmp_path / "run-b", synthetic_result(1, labels=first.labels))
    out = tmp_path / "evaluation"
    assert main(["evaluate", a, str(tmp_path / "run-b" / "result.npz"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "curves.csv" in printed and str(out) in printed
    with (out / "curves.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:3] == ["step", "gpu:run-a accuracy", "gpu:run-a events_per_step"]
    assert "gpu:run-b mean_confidence" in rows[0] and len(rows) == 31
    assert (out / "accuracy_vs_time.png").is_file() and (out / "evaluation.json").is_file()


def test_evaluate_refuses_different_items_and_warns_about_T(tmp_path, capsys):
    first = synthetic_result(0)
    a = _save(tmp_path / "a", first)
    shuffled = _save(tmp_path / "b", synthetic_result(1, labels=np.roll(first.labels, 1)))
    fewer = _save(tmp_path / "c", synthetic_result(1, n=20))
    other_data = _save(tmp_path / "d", synthetic_result(1, labels=first.labels, dataset="cifar10"))
    longer = _save(tmp_path / "e", synthetic_result(1, labels=first.labels, T=40))
    out = str(tmp_path / "out")
    assert main(["evaluate", a, shuffled, "--out", out]) == 2
    assert "labels differ at" in capsys.readouterr().out
    assert main(["evaluate", a, fewer, "--out", out]) == 2
    assert "has 20 items, gpu:a 40" in capsys.readouterr().out
    assert main(["evaluate", a, other_data, "--out", out]) == 2
    assert "data set 'cifar10'" in capsys.readouterr().out
    assert main(["evaluate", a, fewer, "--allow-mismatch", "--out", out]) == 0
    assert "warning" in capsys.readouterr().err
    assert main(["evaluate", a, longer, "--out", out]) == 0
    assert "ran 40 steps, gpu:a 30" in capsys.readouterr().err


def test_quiet_prints_only_the_table_and_the_folder(tmp_path, capsys, monkeypatch):
    import logging
    import warnings

    from neurodeploy.cli import render

    monkeypatch.setenv("PYTHONWARNINGS", "")  # restored afterwards, as everything -q changes in this process
    monkeypatch.delenv(render.LOG_LEVEL_VARIABLE, raising=False)
    level = logging.getLogger().level
    a = _save(tmp_path / "a", synthetic_result(0))
    with warnings.catch_warnings():
        try:
            assert main(["evaluate", a, "--out", str(tmp_path / "out"), "-q"]) == 0
        finally:
            render.configure(type("Args", (), {"quiet": False, "verbose": 0})())
            logging.getLogger().setLevel(level)
    captured = capsys.readouterr()
    assert "comparison" in captured.out and not captured.err
    written = [line for line in captured.out.splitlines() if "written" in line]
    assert len(written) == 1 and written[0].startswith(f"evaluation written to {tmp_path / 'out'}/: ")


def _texts(fig: Figure) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts]


def test_dc_front_names_the_chosen_threshold_and_the_rule(runs):
    """The star's label is the chosen c as the legend and summary give it; no front label sits next to the
    star; the zoom's title names the pick rule; the "stable" rule's stopping point (the first sweep point
    below the full-T accuracy) is marked; the cloud and the dotted line are in the legend."""
    from neurodeploy.evaluate.plots import dc_pareto_front

    fig = dc_pareto_front(runs)
    whole, zoom = fig.axes[:2]
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    ax = whole
    for i, (label, summary, arrays) in enumerate(runs):
        c = summary["dynamic_confidence"]["threshold"]
        text = f"c={c:.4f}"
        assert text in _texts(fig)
        assert any(entry.startswith(f"{label} chosen (stable rule): {text}") for entry in legend)
        sweep = arrays["sweep"]
        first_below = int(np.flatnonzero(sweep.accuracy < sweep.accuracy[0] - 1e-12)[0])
        marks = [line for line in ax.get_lines() if line.get_label().startswith(f"{label}: first drop")]
        assert len(marks) == 1
        assert marks[0].get_xdata()[0] == sweep.mean_latency[first_below]
        # the x's legend names the c that dropped (not the chosen one) and the accuracy it dropped to
        dropped = float(1.0 / (1.0 + np.exp(-sweep.thresholds[first_below])))
        label_text = marks[0].get_label()
        assert f"accuracy {sweep.accuracy[first_below]:.4f}" in label_text
        shown = float(label_text.split(" at c=")[1].split(" ")[0])
        assert abs(shown - dropped) < 1e-4 and f"at {text} " not in label_text
        star_x = sweep.mean_latency[arrays["chosen"]]
        near = [t for t in ax.texts if t.get_text() != text and t.get_color() == COLORS[i]
                and abs(np.log(max(t.xy[0], 1e-9) / star_x)) < 0.25]
        assert not near
        assert f"{label}: full-T accuracy {sweep.accuracy[0]:.4f}" in legend
        assert f"{label}: every threshold's operating point" in legend
    assert "rule stable" in zoom.get_title()


def test_a_drop_next_to_the_chosen_threshold_gets_the_digits_that_tell_them_apart():
    from neurodeploy.evaluate.plots import _distinct_confidence_texts

    def log_odds(c):
        return float(np.log(c / (1 - c)))

    assert _distinct_confidence_texts(log_odds(0.47781), log_odds(0.47784)) == ("c=0.47781", "c=0.47784")
    assert _distinct_confidence_texts(log_odds(0.4), log_odds(0.5)) == ("c=0.4000", "c=0.5000")
    assert _distinct_confidence_texts(log_odds(1 - 2e-6), log_odds(0.3)) == ("c=1-2e-06", "c=0.3000")


def test_identical_curves_are_named_and_fractions_have_no_tick_above_one(runs):
    from neurodeploy.evaluate.plots import accuracy_vs_time

    label, summary, arrays = runs[0]
    fig = accuracy_vs_time([(label, summary, arrays), ("copy", summary, arrays)])
    assert "identical curves: copy = a" in fig.axes[1].get_title()
    assert any("(curve identical to a)" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    from neurodeploy.evaluate.plots import prediction_agreement_figure

    reference = synthetic_result(0)
    for other in (reference, synthetic_result(5, labels=reference.labels)):  # agreement 1 everywhere, and less
        ax = prediction_agreement_figure(["ref", "other"], [reference, other]).axes[0]
        assert max(ax.get_yticks()) == 1.0 and ax.get_ylim()[1] > 1.0  # the line at 1 visible, no tick above

def test_population_activity_is_not_called_a_raster_and_one_run_has_no_energy_legend(runs):
    from neurodeploy.evaluate.plots import energy, population_activity

    title = population_activity(runs[:1])._suptitle.get_text()
    assert "raster" not in title and "spike times are not recorded" in title
    assert energy(runs[:1]).axes[0].get_legend() is None
    assert energy(runs).axes[0].get_legend() is not None
