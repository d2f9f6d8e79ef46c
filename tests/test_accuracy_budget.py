"""The accuracy budget of the anytime optimizations (issue 20): phase 1 picks the sparsest model within the
budget on validation data, phase 2 keeps the peak accuracy above the floor as a hard constraint, both
count the budget in whole items, every setting keys the model cache, and the tables show what was chosen."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from rich.console import Console

from neurodeploy.cli import main
from neurodeploy.data import Split
from neurodeploy.jobs.config import JobConfig, ModelSettings, OptimizationSettings
from neurodeploy.jobs.optimize import accuracy_floor, sparsity_search
from neurodeploy.optimize import OptimizeConfig, optimize_scales
from neurodeploy.optimize.objective import CONSTRAINT_WEIGHT, AnytimeObjective, Measurement
from neurodeploy.train import evaluate_accuracy
from neurodeploy.train.sparsity import BudgetedSparsity, budgeted_sparsity, scale_schedule
from neurodeploy.train.trainer import split_validation


@pytest.fixture(scope="module")
def train_part(mnist):
    """2,000 embedded training digits: a validation part of 200."""
    return Split(mnist.train.images[:2000], mnist.train.labels[:2000])


def search(budget: float, **kwargs) -> BudgetedSparsity:
    """A short search: 1 epoch per fine-tuning, at most 2 fine-tunings."""
    return BudgetedSparsity(budget=budget, epochs=1, max_trials=2, **kwargs)


@pytest.fixture(scope="module")
def zero_budget(small_dense_model, train_part):
    original = copy.deepcopy(small_dense_model)
    chosen, record = budgeted_sparsity(small_dense_model, train_part, search(0.0), progress=False)
    return original, chosen, record


def test_zero_budget_leaves_validation_accuracy_unchanged(zero_budget, small_dense_model, train_part):
    """Budget 0: no validation item the original classifies right may be lost (the original itself, scale 0
    without pruning, is always a candidate); the original model is not touched."""
    original, chosen, record = zero_budget
    _, val = split_validation(train_part, 0.1, 0)
    before, after = evaluate_accuracy(original, val), evaluate_accuracy(chosen, val)
    assert record["validation_items"] == len(val) == 200
    assert record["before"]["accuracy"] == before and record["after"]["accuracy"] == after
    assert after >= before
    assert record["within_budget"] and record["accuracy_floor"] == before
    for name, tensor in original.state_dict().items():
        assert torch.equal(small_dense_model.state_dict()[name], tensor), name
    # the search ran: the original at scale 0, then the default strengths (scale 1) and one more
    assert [t["scale"] for t in record["trials"]][:2] == [0.0, 1.0] and len(record["trials"]) == 3


def test_budget_is_counted_in_whole_items(small_dense_model, train_part):
    """0.5 pp of 200 validation items is 1 item: a candidate is inside the budget iff it loses at most one
    item, and the sparsest of those (largest S_c) is chosen."""
    _, record = budgeted_sparsity(small_dense_model, train_part, search(0.005), progress=False)
    allowed = record["before"]["correct"] - 1
    assert record["accuracy_floor"] == allowed / 200
    for trial in record["trials"]:
        assert trial["within_budget"] == (trial["correct"] >= allowed)
    inside = [t for t in record["trials"] if t["within_budget"]]
    assert record["after"]["combined_sparsity"] == max(t["combined_sparsity"] for t in inside)
    assert record["after"]["correct"] >= allowed


def test_given_strengths_are_not_searched(small_dense_model, train_part):
    _, record = budgeted_sparsity(small_dense_model, train_part,
                                  search(0.005, lambda_a=3.0, lambda_w=7.0, prune_threshold=1e-3), progress=False)
    assert len(record["trials"]) == 1 and record["scale"] is None
    assert (record["config"]["lambda_a"], record["config"]["lambda_w"], record["config"]["prune_threshold"]) == \
        (3.0, 7.0, 1e-3)
    assert record["searched"] == {"penalty": False, "prune_threshold": False}


def test_scale_schedule_by_hand():
    """Steps of 4 until the budget is bracketed, then geometric bisection to a ratio of 1.5 at most."""
    def inside_up_to(limit):
        return lambda scale: scale <= limit

    s = BudgetedSparsity()
    # 1 in, 4 in, 16 out -> 8 (out) -> sqrt(32) = 5.66 (out): 5.66 / 4 = 1.41 <= 1.5, done
    assert scale_schedule(s, inside_up_to(5.0)) == pytest.approx([1, 4, 16, 8, math.sqrt(32)])
    # 1 out -> 1/4 in -> 1/2 (in): 1 / (1/2) = 2 -> sqrt(1/2) = 0.707 (out): 0.707 / 0.5 = 1.41, done
    assert scale_schedule(s, inside_up_to(0.6)) == pytest.approx([1, 0.25, 0.5, math.sqrt(0.5)])
    # never inside: down to 1/64, the next would be below min_scale
    assert scale_schedule(s, inside_up_to(0.0)) == pytest.approx([1, 1 / 4, 1 / 16, 1 / 64])
    # always inside: up to 64, the next would be above max_scale
    assert scale_schedule(s, inside_up_to(1e9)) == pytest.approx([1, 4, 16, 64])
    assert len(scale_schedule(BudgetedSparsity(max_trials=2), inside_up_to(1e9))) == 2


def test_accuracy_floor_in_whole_items():
    assert accuracy_floor(0.9625, 800, 0.005) == (770 - 4) / 800
    assert accuracy_floor(0.9625, 800, 0.0) == 0.9625
    assert accuracy_floor(0.5, 411, 0.005) == (round(0.5 * 411) - 2) / 411  # floor(2.055) = 2 items


def test_constraint_by_hand():
    """Below the floor: L_SNN + CONSTRAINT_WEIGHT * shortfall; every feasible point ranks first."""
    objective = AnytimeObjective(None, None, None, ann_accuracy=0.96, lambda_e=200.0, lambda_l=2.0,
                                 lambda_p=0.01, accuracy_floor=0.95)
    good = Measurement(peak_accuracy=0.955, pareto_latency=3.0, pareto_power=400.0)
    fast = Measurement(peak_accuracy=0.94, pareto_latency=0.1, pareto_power=10.0)
    assert objective.l_snn(good) == pytest.approx(200 * 0.045 + 2 * 3.0 + 0.01 * 400)
    assert objective.loss(good) == pytest.approx(objective.l_snn(good)) and objective.feasible(good)
    assert objective.shortfall(fast) == pytest.approx(0.01) and not objective.feasible(fast)
    assert objective.loss(fast) == pytest.approx(200 * 0.06 + 2 * 0.1 + 0.01 * 10 + CONSTRAINT_WEIGHT * 0.01)
    assert objective.l_snn(fast) < objective.l_snn(good) and objective.rank(good) < objective.rank(fast)
    at_floor = Measurement(peak_accuracy=0.95, pareto_latency=1.0, pareto_power=1.0)
    assert objective.feasible(at_floor)
    unconstrained = AnytimeObjective(None, None, None, 0.96, 200.0, lambda_l=2.0, lambda_p=0.01)
    assert unconstrained.loss(fast) == pytest.approx(objective.l_snn(fast)) and unconstrained.feasible(fast)


@pytest.fixture(scope="module")
def scale_setup(small_dense_model, mnist):
    from neurodeploy.backends.gpu import GpuBackend
    from neurodeploy.convert import convert

    network = convert(small_dense_model, mnist.train.images[:500], granularity="neuron", v_init="half")
    _, val = split_validation(mnist.train, 0.1, 0)
    images, labels = val.images[:150], val.labels[:150]
    simulator = GpuBackend(device="cpu").anytime_simulator(network, images, labels, 20)
    return network, simulator, images, labels, evaluate_accuracy(small_dense_model, val.head(150))


def logged(path) -> list[Measurement]:
    return [Measurement(**json.loads(line)["m"]) for line in path.read_text().splitlines()[1:]]


@pytest.mark.parametrize("floor_from", ["start", "unreachable"])
def test_scale_search_keeps_the_floor(scale_setup, tmp_path, floor_from):
    """The returned point is the feasible one of least L_SNN among all simulated; with an unreachable
    floor, the one closest to it."""
    network, simulator, images, labels, ann = scale_setup
    config = OptimizeConfig(max_evals=25, T=20, groups=(1, 2), evals_per_dimension=(5, 5))
    _, free = optimize_scales(network, simulator, images, labels, ann, config, progress=False)
    floor = free.start.peak_accuracy if floor_from == "start" else 1.0
    constrained = OptimizeConfig(**{**config.__dict__, "accuracy_floor": floor})
    _, result = optimize_scales(network, simulator, images, labels, ann, constrained, tmp_path / "log.jsonl",
                                progress=False)
    points = logged(tmp_path / "log.jsonl")
    assert len(points) == result.evaluations == 25 and result.accuracy_floor == floor
    feasible = [m for m in points if m.peak_accuracy >= floor]
    if floor_from == "start":
        assert result.start_feasible and result.feasible and result.best.peak_accuracy >= floor
        lam = result.lambdas
        l_snn = [lam["lambda_e"] * (1 - m.peak_accuracy) + lam["lambda_l"] * m.pareto_latency
                 + lam["lambda_p"] * m.pareto_power for m in feasible]
        assert result.best_loss == pytest.approx(min(l_snn))
    else:
        assert not feasible and not result.feasible and not result.start_feasible
        assert result.best.peak_accuracy == max(m.peak_accuracy for m in points)


def test_phase1_settings_key_the_model_cache():
    """Every setting that changes phase 1 changes the settings the sparse model's cache key holds."""
    def key(**given):
        return json.dumps(sparsity_search(JobConfig(model=ModelSettings(seed=given.pop("seed", 0)),
                                                    optimization=OptimizationSettings(enabled=True, **given))).
                          __dict__, sort_keys=True)

    keys = [key(), key(accuracy_budget=0.2), key(lambda_a=5.0), key(lambda_w=5.0), key(prune=1e-3), key(seed=1)]
    assert len(set(keys)) == len(keys)
    assert json.loads(key(accuracy_budget=0.2))["budget"] == pytest.approx(0.002)


BAD = [
    (["run", "--accuracy-budget", "-1"], "--accuracy-budget must lie in [0, 100]"),
    (["run", "--optimize", "--lambda-a", "-2"], "--lambda-a must lie in [0, inf)"),
    (["run", "--lambda-w", "5"], "--lambda-w sets phase 1 (sparsity fine-tuning) of --optimize: add --optimize"),
    (["run", "--optimize", "--no-sparsity", "--prune", "0.01"], "--prune sets phase 1 (sparsity fine-tuning) of "
                                                                "--optimize: drop --no-sparsity"),
    (["optimize", "--out", "o.zip", "--accuracy-budget", "nan"], "--accuracy-budget must be a finite number"),
]


@pytest.mark.parametrize("argv, needle", BAD, ids=[" ".join(argv) for argv, _ in BAD])
def test_bad_budget_flags_are_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out = capsys.readouterr().out.strip()
    assert needle in out and len(out.splitlines()) == 1
    assert not (tmp_path / "results").exists()  # refused before any work


def text(table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_tables_show_strengths_budget_and_validation_accuracy(zero_budget):
    from neurodeploy.cli.render import optimization_table, sparsity_table

    _, _, record = zero_budget
    shown = text(sparsity_table(record))
    config = record["config"]
    assert f"{config['lambda_a']:.4g}" in shown and f"{config['prune_threshold']:g}" in shown
    assert f"{record['before']['accuracy']:.4f}" in shown and f"{record['after']['accuracy']:.4f}" in shown
    assert "accuracy budget 0 pp" in shown and "200 items" in shown
    report = {"method": "coarse_to_fine", "optimization_items": 800, "ann_accuracy": 0.96,
              "original_ann_accuracy": 0.9625, "accuracy_budget_pp": 0.5, "accuracy_floor": 0.9575,
              "feasible": True, "start": {"peak_accuracy": 0.96, "pareto_latency": 0.5, "pareto_power": 300.0},
              "best": {"peak_accuracy": 0.9675, "pareto_latency": 0.05, "pareto_power": 40.0},
              "start_loss": 10.0, "best_loss": 7.5}
    shown = text(optimization_table(report, "L_SNN 10 -> 7.5"))
    assert "0.9625" in shown and "+0.50 pp" in shown and "-0.25 pp" in shown
    assert "peak accuracy at least 0.9575; the optimized point meets it" in shown


def test_run_optimize_reports_the_budget(tmp_path):
    """`run --optimize` with given strengths: summary.json holds phase 1's record (strengths, validation
    accuracies) and phase 2's floor against the original ANN."""
    assert main(["run", "--optimize", "--epochs", "1", "--lambda-a", "5", "--lambda-w", "20", "--prune", "0.002",
                 "--accuracy-budget", "1", "--optimize-evals", "3", "--optimize-items", "100", "-T", "10",
                 "--samples", "50", "--results-dir", str(tmp_path), "--run-id", "r", "--no-progress", "-q"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    report = summary["scale_optimization"]
    phase1 = report["sparsity"]
    assert (phase1["config"]["lambda_a"], phase1["config"]["lambda_w"], phase1["config"]["prune_threshold"]) == \
        (5.0, 20.0, 0.002)
    assert phase1["budget"] == pytest.approx(0.01) and phase1["validation_items"] == 800
    assert report["accuracy_budget_pp"] == 1.0 and report["v_init_searched"]
    assert report["accuracy_floor"] == accuracy_floor(report["original_ann_accuracy"], 100, 0.01)
