"""The accuracy budget of the anytime optimizations (issue 20): phase 1 picks the sparsest model within the
budget on validation data, phase 2 keeps the peak accuracy above the floor as a hard constraint, both
count the budget in whole items, every setting keys the model cache, and the tables show what was chosen."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from neurodeploy.cli import main
from neurodeploy.data import Split
from neurodeploy.errors import NeurodeployError
from neurodeploy.jobs.config import JobConfig, ModelSettings, OptimizationSettings
from neurodeploy.jobs.optimize import FolderStore, estimate_text, sparsity_search
from neurodeploy.optimize import OptimizeConfig, optimize_scales
from neurodeploy.optimize.budget import compare_paired
from neurodeploy.optimize.objective import CONSTRAINT_WEIGHT, AnytimeObjective, Measurement
from neurodeploy.train import evaluate_accuracy
from neurodeploy.train.sparsity import BudgetedSparsity, budgeted_sparsity, correct_flags, scale_schedule
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


def test_zero_budget_admits_no_shown_loss(zero_budget, small_dense_model, train_part):
    """Budget 0: the chosen model is one the paired interval shows to lose no accuracy (its lower
    end is at least 0); the original itself (scale 0, no pruning) is always a candidate and inside; the
    original model is not touched."""
    original, chosen, record = zero_budget
    _, val = split_validation(train_part, 0.1, 0)
    assert record["validation_items"] == len(val) == 200
    assert record["before"]["accuracy"] == evaluate_accuracy(original, val)
    assert record["after"]["accuracy"] == evaluate_accuracy(chosen, val)
    assert record["within_budget"] and record["paired"]["lower"] >= 0 and record["confidence"] == 0.9
    for name, tensor in original.state_dict().items():
        assert torch.equal(small_dense_model.state_dict()[name], tensor), name
    # the search ran: the original at scale 0, then the default strengths (scale 1) from the original, then
    # twice that from scale 1's weights (when 1 was inside) or half of it from the original (when outside)
    trials = record["trials"]
    assert [(t["scale"], t["warm_start"]) for t in trials[:2]] == [(0.0, None), (1.0, None)] and len(trials) == 3
    assert (trials[2]["scale"], trials[2]["warm_start"]) == ((2.0, 1.0) if trials[1]["within_budget"] else (0.5, None))


def test_budget_is_the_paired_rule(small_dense_model, train_part):
    """Each candidate's verdict is the paired comparison of its items with the original's, recomputed here
    from the chosen model; the sparsest candidate inside (largest S_c) is chosen."""
    original = copy.deepcopy(small_dense_model)
    chosen, record = budgeted_sparsity(small_dense_model, train_part, search(0.005), progress=False)
    _, val = split_validation(train_part, 0.1, 0)
    paired = compare_paired(correct_flags(chosen, val).numpy(), correct_flags(original, val).numpy(), 0.005)
    assert paired.as_dict() == record["paired"]
    for trial in record["trials"]:
        p = trial["paired"]
        assert trial["within_budget"] == (p["lower"] >= -0.005)  # kept only when shown within the budget
        assert p["difference"] == pytest.approx(trial["accuracy"] - record["before"]["accuracy"])
        assert p["gained"] - p["lost"] == trial["correct"] - record["before"]["correct"]
    inside = [t for t in record["trials"] if t["within_budget"]]
    assert record["after"]["combined_sparsity"] == max(t["combined_sparsity"] for t in inside)


def test_given_strengths_are_not_searched(small_dense_model, train_part):
    _, record = budgeted_sparsity(small_dense_model, train_part,
                                  search(0.005, lambda_a=3.0, lambda_w=7.0, prune_threshold=1e-3, given_epochs=1),
                                  progress=False)
    assert len(record["trials"]) == 1 and record["scale"] is None
    assert (record["config"]["lambda_a"], record["config"]["lambda_w"], record["config"]["prune_threshold"]) == \
        (3.0, 7.0, 1e-3)
    assert record["searched"] == {"penalty": False, "prune_threshold": False}


def test_scale_schedule_by_hand():
    """Up by 2 from the previous candidate's weights until one is outside; down by 2 from the original when
    the first is outside; then bisection from the largest inside to a ratio of 1.5; at most 5."""
    def inside_up_to(limit):
        return lambda scale, start: scale <= limit

    def r(steps):
        return [(round(x, 9), None if w is None else round(w, 9)) for x, w in steps]

    s = BudgetedSparsity()
    # 1, 2, 4 in, 8 out -> sqrt(32) = 5.66 from 4 (out): 5.66 / 4 = 1.41 <= 1.5, done
    assert r(scale_schedule(s, inside_up_to(5.0))) == \
        r([(1, None), (2, 1), (4, 2), (8, 4), (math.sqrt(32), 4)])
    # 1 out -> 1/2 from the original (in) -> sqrt(1/2) = 0.707 from 1/2 (out): 0.707 / 0.5 = 1.41, done
    assert r(scale_schedule(s, inside_up_to(0.6))) == r([(1, None), (0.5, None), (math.sqrt(0.5), 0.5)])
    # 1 in, 2 out -> sqrt(2) from 1 (in): 2 / 1.41 = 1.41, done
    assert r(scale_schedule(s, inside_up_to(1.5))) == r([(1, None), (2, 1), (math.sqrt(2), 1)])
    # never inside: down to 1/16, the next would be below min_scale
    never = [(1, None), (0.5, None), (0.25, None), (0.125, None), (0.0625, None)]
    assert r(scale_schedule(BudgetedSparsity(max_trials=9), inside_up_to(0.0))) == r(never)
    # always inside: up to 64, the next would be above max_scale; the trial limit cuts it earlier
    assert r(scale_schedule(BudgetedSparsity(max_trials=9), inside_up_to(1e9))) == \
        r([(1, None), (2, 1), (4, 2), (8, 4), (16, 8), (32, 16), (64, 32)])
    assert r(scale_schedule(BudgetedSparsity(max_trials=2), inside_up_to(1e9))) == r([(1, None), (2, 1)])


def test_a_killed_search_reuses_its_finished_fine_tunings(small_dense_model, train_part, tmp_path):
    """Interrupted after its first fine-tuning (a KeyboardInterrupt from the progress hook, as Ctrl-C), the
    search run again with the same store loads that fine-tuning instead of training it and ends with the
    same model and record as an uninterrupted search."""
    store = FolderStore(tmp_path / "candidates")
    seen = []

    def kill_after_first_fine_tuning(entry):
        seen.append(entry)
        if entry["scale"] != 0.0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        budgeted_sparsity(small_dense_model, train_part, search(0.005), progress=False,
                          on_trial=kill_after_first_fine_tuning, store=store)
    assert [t["scale"] for t in seen] == [0.0, 1.0]
    assert [p.name for p in (tmp_path / "candidates").iterdir()] == ["1-scale-1-from-original.pt"]
    resumed_model, resumed = budgeted_sparsity(small_dense_model, train_part, search(0.005), progress=False,
                                               store=store)
    fresh_model, fresh = budgeted_sparsity(small_dense_model, train_part, search(0.005), progress=False)
    assert [t["cached"] for t in resumed["trials"]] == [False, True, False]
    assert resumed["fine_tunings_loaded"] == 1 and fresh["fine_tunings_loaded"] == 0

    def without_cached(record):
        return {**record, "trials": [{k: v for k, v in t.items() if k != "cached"} for t in record["trials"]],
                "fine_tunings_loaded": None}

    assert without_cached(resumed) == without_cached(fresh)
    for name, tensor in fresh_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name


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


def test_scale_search_keeps_the_paired_budget(scale_setup, small_dense_model, mnist, tmp_path):
    """With a budget against the ANN's per-item correctness, every point's verdict is the paired comparison
    at its peak step (recomputed here for the returned point), the returned point is feasible (H0 is, at a
    budget of 100 pp) and the least L_SNN among the feasible ones."""
    network, simulator, images, labels, ann = scale_setup
    reference = correct_flags(small_dense_model, Split(images, labels)).numpy()
    config = OptimizeConfig(max_evals=15, T=20, groups=(1,), evals_per_dimension=(15,), accuracy_budget=0.005)
    optimized, result = optimize_scales(network, simulator, images, labels, ann, config, tmp_path / "log.jsonl",
                                        progress=False, reference_correct=reference)
    correct, _ = simulator.item_curves(optimized)
    peak = int(correct.mean(0).argmax())
    assert result.best.paired == compare_paired(correct[:, peak], reference, 0.005).as_dict()
    points = logged(tmp_path / "log.jsonl")
    assert all(m.paired is not None for m in points)
    for m in points:
        assert m.paired["within_budget"] == (m.paired["upper"] >= -0.005)
    if result.feasible:
        lam = result.lambdas
        l_snn = [lam["lambda_e"] * (1 - m.peak_accuracy) + lam["lambda_l"] * m.pareto_latency
                 + lam["lambda_p"] * m.pareto_power for m in points if m.paired["within_budget"]]
        assert result.best_loss == pytest.approx(min(l_snn))
    with pytest.raises(NeurodeployError, match="reference"):
        optimize_scales(network, simulator, images, labels, ann, config, progress=False)


def test_phase1_settings_key_the_model_cache():
    """Every setting that changes phase 1 changes the settings the sparse model's cache key holds."""
    def key(**given):
        return json.dumps(sparsity_search(JobConfig(model=ModelSettings(seed=given.pop("seed", 0)),
                                                    optimization=OptimizationSettings(enabled=True, **given))).
                          __dict__, sort_keys=True)

    keys = [key(), key(accuracy_budget=0.2), key(lambda_a=5.0), key(lambda_w=5.0), key(prune=1e-3), key(seed=1)]
    assert len(set(keys)) == len(keys)
    # the fine-tuning's targets (the original's outputs, not the labels alone) are in the key, so models and
    # stored candidates fine-tuned on the labels (keys without "distill") are not read back
    assert json.loads(key())["distill"] == 1.0
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
    p = record["paired"]
    assert f"[{100 * p['lower']:+.2f}, {100 * p['upper']:+.2f}]" in shown
    paired = {"items": 800, "gained": 3, "lost": 1, "difference": 0.0025, "lower": -0.0012, "upper": 0.0071,
              "confidence": 0.9, "budget": 0.005, "within_budget": True}
    report = {"method": "coarse_to_fine", "optimization_items": 800, "ann_accuracy": 0.96,
              "original_ann_accuracy": 0.9625, "accuracy_budget_pp": 0.5, "accuracy_budget": 0.005,
              "confidence": 0.9, "feasible": True,
              "start": {"peak_accuracy": 0.96, "pareto_latency": 0.5, "pareto_power": 300.0, "paired": None},
              "best": {"peak_accuracy": 0.9675, "pareto_latency": 0.05, "pareto_power": 40.0, "paired": paired},
              "start_loss": 10.0, "best_loss": 7.5}
    shown = text(optimization_table(report, "L_SNN 10 -> 7.5"))
    assert "0.9625" in shown and "+0.50 pp" in shown and "-0.25 pp" in shown
    assert "[-0.12, +0.71]" in shown and "90 % interval" in shown
    assert "outside only when its whole interval lies below -0.5 pp" in shown
    assert "the optimized point" in shown and "meets it" in shown


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
    assert report["accuracy_budget"] == 0.01 and report["confidence"] == 0.9
    paired = report["best"]["paired"]
    assert paired["items"] == report["optimization_items"] == 100 and paired["budget"] == 0.01
    assert report["feasible"] == paired["within_budget"]


@pytest.mark.slow
def test_a_killed_phase1_job_loads_its_candidates_beside_the_cache_file(small_dense_model, mnist, tmp_path):
    """The job: Ctrl-C (a KeyboardInterrupt from the progress listener) after the first fine-tuning; run
    again into the same model cache, that fine-tuning is loaded (its line says so), the phase-1 model is
    saved, and the candidates' folder beside its file is gone."""
    from neurodeploy.jobs.config import RunSettings
    from neurodeploy.jobs.models import CachedModel, ModelCache
    from neurodeploy.jobs.optimize import sparse_model

    config = JobConfig(optimization=OptimizationSettings(enabled=True), run=RunSettings(progress=False))
    base = CachedModel(small_dense_model, {"arch": "dense_mnist"}, "small dense", {"kind": "test", "id": 1},
                       "", "file")
    lines = []

    def kill_after_first_fine_tuning(event):
        lines.append(event.message)
        if "lambda_a" in event.message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sparse_model(config, mnist, ModelCache(tmp_path, kill_after_first_fine_tuning), base)
    folders = list(tmp_path.glob("*.candidates"))
    assert len(folders) == 1 and [p.name for p in folders[0].iterdir()] == ["1-scale-1-from-original.pt"]
    lines.clear()
    model = sparse_model(config, mnist, ModelCache(tmp_path, lambda event: lines.append(event.message)), base)
    candidates = [line for line in lines if "lambda_a" in line]
    assert "(finished before, loaded)" in candidates[0]
    assert all("loaded" not in line for line in candidates[1:])
    record = model.info["record"]["sparsity"]
    assert record["fine_tunings_loaded"] == 1 and record["fine_tunings"] == len(candidates)
    assert not folders[0].exists() and model.origin == "made" and Path(model.path).is_file()


def test_estimate_text_by_hand():
    """90 s each, 4 more: 360 s = 6.0 min; 12 s each, 249 more: 2988 s = 49.8 min; under 90 s in seconds,
    under 10 s with a decimal."""
    assert estimate_text("fine-tuning", 90, 4) == "one fine-tuning took 1.5 min: at most 4 more, about 6.0 min"
    assert estimate_text("simulation", 12, 249) == "one simulation took 12 s: at most 249 more, about 49.8 min"
    assert estimate_text("simulation", 2, 10) == "one simulation took 2.0 s: at most 10 more, about 20 s"


def test_run_optimize_states_phase_2_cost(tmp_path, capsys):
    """`run --optimize` prints, after phase 2's first simulation, its time and the estimate for the rest."""
    assert main(["run", "--optimize", "--no-sparsity", "--epochs", "1", "--optimize-evals", "4",
                 "--optimize-items", "100", "-T", "10", "--samples", "20", "--results-dir", str(tmp_path),
                 "--run-id", "r", "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "one simulation took" in out and "at most 3 more" in out

