"""The anytime optimizations as jobs: phase 1 of Dutson et al. (sparsity fine-tuning, its strength chosen
under the accuracy budget on held-out training items), formal scale optimization of a converted network on
held-out training items (phase 2, its peak accuracy kept within the same budget), and ``neurodeploy
optimize``, which writes the optimized IR without a test run."""

from __future__ import annotations

import copy
import io
import pickle
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from neurodeploy.backends.gpu import GpuBackend
from neurodeploy.data import Dataset, Split, load_dataset
from neurodeploy.ir import Network, save_network
from neurodeploy.jobs.config import JobConfig
from neurodeploy.jobs.events import Event, Listener, silent
from neurodeploy.jobs.folders import prepare_folder, write_json
from neurodeploy.jobs.models import CachedModel, ModelCache, derived_key, derived_model
from neurodeploy.safe_io import atomic_write
from neurodeploy.train import TrainConfig, evaluate_accuracy
from neurodeploy.train.sparsity import correct_flags
from neurodeploy.train.trainer import split_validation

#: the kind a sparsity fine-tuned model's cache key names (``derived_model``'s ``what``)
SPARSE = "sparse"


def estimate_text(what: str, seconds_each: float, remaining: int) -> str:
    """The stage line of a phase's cost: ``what`` took ``seconds_each`` (s), and at most ``remaining`` more
    of them follow, e.g. ``estimate_text("fine-tuning", 90, 4)`` -> "one fine-tuning took 1.5 min: at most
    4 more, about 6.0 min"."""
    def duration(seconds: float) -> str:
        if seconds < 10:
            return f"{seconds:.1f} s"
        return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"

    return f"one {what} took {duration(seconds_each)}: at most {remaining} more, about " \
           f"{duration(seconds_each * remaining)}"


def optimization_split(dataset: Dataset, config: JobConfig) -> Split:
    """The held-out part of the training split (never trained on, never the test split) the scales are
    optimized on: the first ``--optimize-items`` (default 800) items of the validation part that
    training and sparsity fine-tuning hold out (10 % of the training split, seeded)."""
    _, validation = split_validation(dataset.train, TrainConfig().val_fraction, config.model.seed)
    return validation.head(config.optimization.items)


#: the held-out check of phase 2's result uses at most this many validation items after the optimization items,
#: and none when fewer than CHECK_MIN_ITEMS are left (the embedded MNIST's 800 validation items are all
#: optimization items)
CHECK_MAX_ITEMS = 5000
CHECK_MIN_ITEMS = 400


def check_split(dataset: Dataset, config: JobConfig) -> Split | None:
    """The validation items after :func:`optimization_split`'s (at most CHECK_MAX_ITEMS), on which phase 2's
    result is checked (:mod:`neurodeploy.optimize.check`); None when fewer than CHECK_MIN_ITEMS are left."""
    _, validation = split_validation(dataset.train, TrainConfig().val_fraction, config.model.seed)
    start = config.optimization.items
    rest = Split(validation.images[start:start + CHECK_MAX_ITEMS], validation.labels[start:start + CHECK_MAX_ITEMS])
    return rest if len(rest) >= CHECK_MIN_ITEMS else None


def sparsity_search(config: JobConfig):
    """Phase 1's settings from the job: the accuracy budget and the strengths given on the command line."""
    from neurodeploy.train.sparsity import BudgetedSparsity

    o = config.optimization
    return BudgetedSparsity(budget=o.budget_fraction, lambda_a=o.lambda_a, lambda_w=o.lambda_w,
                            prune_threshold=o.prune, seed=config.model.seed)


class FolderStore:
    """Phase 1's finished fine-tunings as files ``<folder>/<name>.pt`` (state dicts, written atomically so
    that a kill leaves a whole file or none; read back with ``weights_only``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def load(self, name: str) -> dict[str, torch.Tensor] | None:
        path = self.folder / f"{name}.pt"
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # damaged: train that one again
            return None

    def save(self, name: str, state: dict[str, torch.Tensor]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.folder / f"{name}.pt") as handle:
            handle.write(buffer.getvalue())


def interval_text(paired: dict) -> str:
    """The paired comparison of one candidate as people read it: the change in pp and its interval."""
    return (f"{100 * paired['difference']:+.2f} pp [{100 * paired['lower']:+.2f}, {100 * paired['upper']:+.2f}] "
            f"({paired['gained']} gained, {paired['lost']} lost)")


def sparse_model(config: JobConfig, dataset: Dataset, cache: ModelCache, base: CachedModel) -> CachedModel:
    """Phase 1: ``base`` fine-tuned for sparsity and pruned, at the strength the budget search chooses
    (or the one given), cached under a key that holds every setting of the search; the record (validation
    accuracies, sparsities, chosen strengths, every candidate with its paired interval) is emitted as a
    ``sparsity`` event. Each finished fine-tuning is kept beside the model's cache file
    (``<file>.candidates/``) until the model is saved, so that a run killed in phase 1 and run again, in
    the same run folder or a new one, loads them instead of training them again."""
    from neurodeploy.jobs.prepare import _shape
    from neurodeploy.train.sparsity import budgeted_sparsity

    search = sparsity_search(config)
    progress = config.run.progress
    name, key = derived_key(base, dataset, SPARSE, asdict(search))
    store = FolderStore(cache.path(name, key).with_suffix(".candidates"))

    last = {"at": time.perf_counter(), "estimated": False, "done": 0}

    def trial(entry: dict) -> None:
        now = time.perf_counter()
        took, last["at"] = now - last["at"], now
        last["done"] += entry["scale"] != 0.0
        what = "original, pruned only" if entry["scale"] == 0.0 else \
            f"lambda_a {entry['lambda_a']:.4g}, lambda_w {entry['lambda_w']:.4g}"
        origin = " (finished before, loaded)" if entry["cached"] else ""
        cache.emit(Event("stage", f"  {what}, pruning below {entry['prune_threshold']:g}{origin}: validation "
                                  f"accuracy {entry['accuracy']:.4f}, change {interval_text(entry['paired'])}, "
                                  f"S_c {entry['combined_sparsity']:.4f}"
                                  + ("" if entry["within_budget"] else " (outside the budget)")))
        if search.searches_penalty and entry["scale"] != 0.0 and not entry["cached"] and not last["estimated"]:
            last["estimated"] = True
            cache.emit(Event("stage", "  " + estimate_text("fine-tuning", took,
                                                            max(search.max_trials - last["done"], 0))))

    def sparsify():
        strengths = (f"the sparsest within it, at most {search.max_trials} fine-tunings of {search.passes:g} pass "
                     "over the fit part each, each from the one before" if search.searches_penalty
                     else f"the given strengths, {search.given_epochs} epochs")
        targets = {0.0: "the labels", 1.0: "the original's outputs"}.get(
            search.distill, f"the labels and the original's outputs (weight {search.distill:g})")
        strengths += f"; toward {targets}" + (", batch norms frozen" if search.frozen_norms else "")
        cache.emit(Event("stage", f"sparsity fine-tuning under an accuracy budget of {100 * search.budget:g} pp of "
                                  f"validation accuracy, paired {100 * search.confidence:g} % intervals "
                                  f"({strengths})"))
        model, record = budgeted_sparsity(base.model, dataset.train, search, progress=progress, on_trial=trial,
                                          store=store)
        return model, _shape(base, dataset), {"sparsity": record}

    model = derived_model(cache, base, dataset, SPARSE, "sparsity fine-tuned", asdict(search), sparsify)
    shutil.rmtree(store.folder, ignore_errors=True)  # the model file holds the result now
    cache.emit(Event("sparsity", data=model.info["record"]["sparsity"]))
    return model


class _TimedSimulator:
    """The optimizer's simulator, timing its first simulation (``first_s``, seconds) for the phase's estimate."""

    def __init__(self, simulator):
        self.simulator, self.first_s, self.estimated = simulator, None, False

    def item_curves(self, network: Network):
        start = time.perf_counter()
        curves = self.simulator.item_curves(network)
        if self.first_s is None:
            self.first_s = time.perf_counter() - start
        return curves

    def __getattr__(self, name: str):
        return getattr(self.simulator, name)


def optimize_network(network: Network, model: torch.nn.Module, dataset: Dataset, config: JobConfig, folder: Path,
                     emit: Listener, models: list[CachedModel] | None = None) -> tuple[Network, dict]:
    """Formal scale optimization of ``network`` (H0, converted from ``model``) on :func:`optimization_split`
    with the reference simulator; the replay log ``folder/optimize_log.jsonl`` makes an interrupted search
    resume. The peak accuracy is kept within the accuracy budget of the original ANN on those items, by
    the paired rule (:mod:`neurodeploy.optimize.budget`) at the peak step: the original is the model
    phase 1 started from when ``models`` (the chain the network was converted from, the source first)
    holds a sparsity fine-tuned one, else ``model``. Returns the network and a report, which holds
    phase 1's record too."""
    from neurodeploy.optimize import OptimizeConfig, optimize_scales

    o = config.optimization
    items = optimization_split(dataset, config)
    chain = models or []
    sparse = next((i for i, m in enumerate(chain) if m.key.get("kind") == SPARSE), None)
    original = chain[sparse - 1].model if sparse is not None and sparse > 0 else model
    ann = evaluate_accuracy(model, items)
    reference = correct_flags(original, items).numpy()
    original_accuracy = float(reference.mean())
    settings = OptimizeConfig(method=o.method, max_evals=o.evals, T=o.T or config.run.T, lambda_e=o.lambda_e,
                              accuracy_budget=o.budget_fraction, v_init=o.v_init, silence=True)
    emit(Event("stage", f"optimizing scales ({settings.method}, {settings.max_evals} simulations of {len(items)} "
                        f"held-out training items, T={settings.T}; a point is outside the {o.accuracy_budget:g} pp "
                        f"budget when its paired {100 * settings.confidence:g} % interval against the original "
                        f"ANN ({original_accuracy:.4f}) lies wholly below -{o.accuracy_budget:g} pp)"))
    # the reference simulator is the optimizer's whatever the job deploys to; a job whose backend has a
    # device option (the gpu backend's) places it there too
    simulator = GpuBackend(device=config.backend_options.get("device")).anytime_simulator(
        network, items.images, items.labels, settings.T)
    timed = _TimedSimulator(simulator)
    held_out = check_split(dataset, config)
    check = None
    if held_out is not None:
        from neurodeploy.optimize.check import HeldOutCheck

        emit(Event("stage", f"  the result is chosen on {len(held_out)} further held-out training items: H0 and the "
                            "best point after each stage, judged there by the same rule"))
        check = HeldOutCheck(GpuBackend(device=config.backend_options.get("device")).anytime_simulator(
            network, held_out.images, held_out.labels, settings.T), correct_flags(original, held_out).numpy(),
            evaluate_accuracy(model, held_out))

    def evaluated(count: int) -> None:
        """The phase's estimate from its first simulation (evaluations replayed from the log simulate nothing)."""
        if timed.first_s is not None and not timed.estimated:
            timed.estimated = True
            emit(Event("stage", "  " + estimate_text("simulation", timed.first_s, max(settings.max_evals - count, 0))))

    optimized, result = optimize_scales(network, timed, items.images, items.labels, ann, settings,
                                        folder / "optimize_log.jsonl", config.run.progress, on_evaluation=evaluated,
                                        reference_correct=reference, check=check)
    report = {"method": settings.method, "optimization_items": len(items), "ann_accuracy": ann,
              "original_ann_accuracy": original_accuracy, "accuracy_budget_pp": o.accuracy_budget,
              "confidence": settings.confidence, "v_init_searched": settings.v_init, **result.as_dict()}
    if sparse is not None:
        report["sparsity"] = copy.deepcopy(chain[sparse].info["record"]["sparsity"])
    emit(Event("optimization", f"L_SNN {result.start_loss:.4f} -> {result.best_loss:.4f} in {result.evaluations} "
                               f"simulations ({result.replayed} from the log), {result.wall_time_s:.1f} s",
               data=report))
    return optimized, report


def optimize_job(config: JobConfig, out: str | Path, emit: Listener = silent) -> tuple[Network, dict]:
    """``neurodeploy optimize``: phases 1 and 2 without the test run. Obtains the (sparsity fine-tuned)
    model, applies the fan-in pass where the job has one, converts, optimizes the scales and writes the
    IR to ``out``; the report and the replay log go to the run folder."""
    from neurodeploy.backends import get_backend
    from neurodeploy.jobs.prepare import preflight, prepare_network

    backend = get_backend(config.backend, **config.backend_options)
    dataset = load_dataset(config.model.data)
    user = preflight(config, dataset)  # the user's model against the data, before the run folder
    folder = prepare_folder(config, dataset.content_hash())
    prepared = prepare_network(config, dataset, [backend], folder, emit, user)
    report = dict(prepared.optimization or {}, model=prepared.model.label, models=prepared.models)
    if "fan_in_pass" in prepared.network.metadata:
        report["fan_in_pass"] = prepared.network.metadata["fan_in_pass"]
    save_network(prepared.network, out)
    write_json(folder / "optimization.json", report)
    emit(Event("done", f"optimized network written to {out}; report in {folder / 'optimization.json'}"))
    return prepared.network, report
