"""benchmarks/anytime_heldout.py reads finished runs back (no CLI call) and computes the reduction
factors, the peak-accuracy change and the medians over seeds as hand-computed here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "anytime_heldout.py"


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("anytime_heldout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(peak: float, latency: float, power: float) -> dict:
    return {"ann_accuracy": 0.9, "peak_accuracy": peak, "peak_step": 5, "n_items": 100,
            "pareto_latency": {"pareto": latency, "raw": latency}, "pareto_power": {"pareto": power, "raw": power}}


def test_finished_cells_are_read_back_with_hand_computed_factors(tmp_path, table):
    runs = tmp_path / "runs"
    values = {0: ((0.95, 2.0, 1000.0), (0.944, 0.1, 50.0)), 1: ((0.95, 3.0, 900.0), (0.955, 0.5, 300.0)),
              2: ((0.96, 2.5, 800.0), (0.950, 0.05, 20.0))}
    for seed, (plain, opt) in values.items():
        for kind, numbers in (("plain", plain), ("optimize", opt)):
            folder = runs / table.run_id("mnist", seed, kind)
            folder.mkdir(parents=True)
            (folder / "summary.json").write_text(json.dumps(summary(*numbers)))
    # a missing dataset folder is never touched: nothing runs when both summaries exist
    cells = [table.run_cell("mnist", seed, tmp_path / "absent", runs, 100, 1.0, None) for seed in values]
    assert [c["latency_factor"] for c in cells] == pytest.approx([20.0, 6.0, 50.0])
    assert [c["power_factor"] for c in cells] == pytest.approx([20.0, 3.0, 40.0])
    assert [c["peak_change_pp"] for c in cells] == pytest.approx([-0.6, 0.5, -1.0])
    text = table.markdown("abc1234", cells)
    # medians: P_l 20, P_p 20 (both >= 10), peak -0.6 pp (< -0.5): missed
    assert "| mnist | 0, 1, 2 | 20, 6, 50 | 20 | 20, 3, 40 | 20 | -0.60, +0.50, -1.00 | -0.60 | missed |" in text


def test_plain_from_reads_the_plain_run_of_another_table(tmp_path, table):
    other, runs = tmp_path / "before", tmp_path / "after"
    for folder, numbers in ((other / table.run_id("noisy", 0, "plain"), (0.9, 2.0, 500.0)),
                            (runs / table.run_id("noisy", 0, "optimize"), (0.9, 0.2, 50.0))):
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary(*numbers)))
    cell = table.run_cell("noisy", 0, tmp_path, runs, 100, 1.0, None, plain_from=other)
    assert cell["latency_factor"] == pytest.approx(10.0) and cell["power_factor"] == pytest.approx(10.0)
    assert "met" in table.markdown("x", [cell]).splitlines()[-1]
    with pytest.raises(RuntimeError, match="no plain run"):
        table.run_cell("noisy", 1, tmp_path, runs, 100, 1.0, None, plain_from=other)


def test_check_cell_by_hand(table):
    """The held-out check's cell: items, the chosen point of those after H0, P_p of H0 and of the chosen one."""
    check = {"items": 5000, "chosen": 2, "points": [{"pareto_power": 326.7}, {"pareto_power": 226.4},
                                                    {"pareto_power": 207.6}, {"pareto_power": 278.0}]}
    assert table.check_text(check) == "5000: point 2 of 3, 326.7 -> 207.6"
    assert table.check_text(None) == "none"
