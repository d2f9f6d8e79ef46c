"""The anytime optimizations as jobs: formal scale optimization of a converted network on held-out
training items (phase 2 of Dutson et al.; phase 1, sparsity fine-tuning, happens in ``prepare``), and
``neurodeploy optimize``, which writes the optimized IR without a test run."""

from __future__ import annotations

from pathlib import Path

import torch

from neurodeploy.backends.gpu import GpuBackend
from neurodeploy.data import Dataset, Split, load_dataset
from neurodeploy.ir import Network, save_network
from neurodeploy.jobs.config import JobConfig
from neurodeploy.jobs.events import Event, Listener, silent
from neurodeploy.jobs.folders import prepare_folder, write_json
from neurodeploy.train import TrainConfig, evaluate_accuracy
from neurodeploy.train.trainer import split_validation


def optimization_split(dataset: Dataset, config: JobConfig) -> Split:
    """The held-out part of the training split (never trained on, never the test split) the scales are
    optimized on: the first ``--optimize-items`` (default 800) items of the validation part that
    training and sparsity fine-tuning hold out (10 % of the training split, seeded)."""
    _, validation = split_validation(dataset.train, TrainConfig().val_fraction, config.model.seed)
    return validation.head(config.optimization.items)


def optimize_network(network: Network, model: torch.nn.Module, dataset: Dataset, config: JobConfig, folder: Path,
                     emit: Listener) -> tuple[Network, dict]:
    """Formal scale optimization of ``network`` (H0) on :func:`optimization_split` with the reference
    simulator; the replay log ``folder/optimize_log.jsonl`` makes an interrupted search resume.
    Returns the network and a report."""
    from neurodeploy.optimize import OptimizeConfig, optimize_scales

    o = config.optimization
    items = optimization_split(dataset, config)
    settings = OptimizeConfig(method=o.method, max_evals=o.evals, T=o.T or config.run.T, lambda_e=o.lambda_e)
    ann = evaluate_accuracy(model, items)
    emit(Event("stage", f"optimizing scales ({settings.method}, {settings.max_evals} simulations of {len(items)} "
                        f"held-out training items, T={settings.T})"))
    # the reference simulator is the optimizer's whatever the job deploys to; a job whose backend has a
    # device option (the gpu backend's) places it there too
    simulator = GpuBackend(device=config.backend_options.get("device")).anytime_simulator(
        network, items.images, items.labels, settings.T)
    optimized, result = optimize_scales(network, simulator, items.images, items.labels, ann, settings,
                                        folder / "optimize_log.jsonl", config.run.progress)
    report = {"method": settings.method, "optimization_items": len(items), "ann_accuracy": ann, **result.as_dict()}
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
