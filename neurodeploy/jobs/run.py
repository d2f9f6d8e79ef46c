"""``neurodeploy run``: the main job. Model -> IR (``prepare``) -> the backend's mapping, if it has one
-> simulation (or, where the backend returns no data, the backend that predicts it) -> the shared
evaluator -> ``results/<run-id>/``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from neurodeploy.backends import Backend, ExitPolicy, RunOptions, get_backend
from neurodeploy.data import Split, load_dataset
from neurodeploy.errors import ConfigError
from neurodeploy.evaluate.dynamic_confidence import validation_test_split
from neurodeploy.evaluate.energy import ann_operations
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.evaluate.summary import summarize, write_curves_csv, write_json
from neurodeploy.ir import Network, save_network
from neurodeploy.jobs.config import JobConfig
from neurodeploy.jobs.events import Event, Listener, silent
from neurodeploy.jobs.folders import prepare_folder, record_in_config
from neurodeploy.jobs.prepare import preflight, prepare_network


def run_options(config: JobConfig, exit_policy: ExitPolicy | None = None, encoding: str | None = None) -> RunOptions:
    """The job's run settings; ``encoding`` replaces the job's input encoding (a prediction of a target that
    encodes its input itself)."""
    r = config.run
    return RunOptions(T=r.T, batch_size=r.batch_size, encoding=encoding or r.encoding, seed=config.model.seed,
                      progress=r.progress, exit_policy=exit_policy)


def check_encoding(backend: Backend, config: JobConfig) -> None:
    """A target that receives its input in one encoding (it encodes the input itself) takes no other --encoding
    (the default, or that one: ``compare`` then gives every backend the input the target receives)."""
    fixed = backend.requirements().input_encoding
    if fixed is not None and config.run.encoding not in ("analog", fixed):
        raise ConfigError(f"--encoding {config.run.encoding}: {backend.name} encodes the input itself (as {fixed} "
                          f"spikes); leave --encoding at its default or give --encoding {fixed}")


def evaluate(result: SimulationResult, config: JobConfig, ann_accuracy: float | None = None) -> tuple[dict, dict]:
    """The shared evaluator with the job's Dynamic Confidence settings."""
    e = config.evaluation
    a_star = result.metadata["ann_accuracy"] if ann_accuracy is None else ann_accuracy
    return summarize(result, a_star, e.dc_alpha, e.dc_tolerance, e.dc_validation_fraction, config.model.seed,
                     dc_rule=e.dc_rule)


def write_evaluation(folder: Path, label: str, summary: dict, arrays: dict) -> None:
    """summary.json, curves.csv and the plots of one run."""
    from neurodeploy.evaluate.plots import plot_reports

    write_json(folder / "summary.json", summary)
    write_curves_csv(folder / "curves.csv", arrays)
    plot_reports(folder, [(label, summary, arrays)])


@dataclass
class Deployment:
    """A job's network on one backend: the mapping report (None where the backend places nothing), the
    backend that produces the data (``backend`` itself, or the one that predicts it where it returns none)
    with its run options, and the note saying it predicts (None where it does not)."""

    backend: Backend
    runner: Backend
    options: RunOptions
    mapping: dict | None
    prediction_note: str | None

    def record(self, result: SimulationResult) -> None:
        """Writes into ``result.metadata`` the mapping's cores and chips (for the SpiNNaker energy estimate)
        and which backend the result predicts."""
        if self.mapping is not None:
            result.metadata["mapping"] = {key: self.mapping.get(key) for key in ("target", "cores", "chips")}
        if self.prediction_note:
            result.metadata["predicted_for"] = {"backend": self.backend.name, "note": self.prediction_note}


def deploy(backend: Backend, network: Network, folder: Path, config: JobConfig, emit: Listener) -> Deployment:
    """Maps ``network`` with ``backend`` into ``folder`` (a ``mapping`` event where it places networks) and
    chooses what produces the data: ``backend``, or where it returns none the backend that predicts it, which
    gets the input the target receives (its requirements' input encoding)."""
    mapping = backend.map(network, folder)
    if mapping is not None:
        emit(Event("mapping", data=mapping))
    predictor = backend.predictor()
    runner, note, encoding = backend, None, None
    if predictor is not None:
        name, options = predictor
        runner = get_backend(name, **options)
        encoding = backend.requirements().input_encoding
        note = (f"{backend.describe()} returns no data: accuracy and spikes are predicted by {runner.describe()} on "
                "the same IR")
        if encoding:
            note += f", with the input as the target receives it ({encoding} encoding)"
    runner.use_folder(folder)
    return Deployment(backend, runner, run_options(config, encoding=encoding), mapping, note)


def run_job(config: JobConfig, emit: Listener = silent) -> tuple[Path, dict]:
    """Runs the main job and writes ``results/<run-id>/``; returns the folder and the summary.

    The folder holds config.json, network.zip (the IR), result.npz, summary.json, curves.csv, the PNG
    plots and, for backends that place networks on hardware, mapping.json. Finished batches are kept in
    ``partial/`` until the run completes, so running again with the same ``run_id`` and settings
    resumes an interrupted run.
    """
    backend = get_backend(config.backend, **config.backend_options)
    backend.check_target()
    check_encoding(backend, config)
    dataset = load_dataset(config.model.data)
    user = preflight(config, dataset)  # the user's model against the data, before the run folder
    folder = prepare_folder(config, dataset.content_hash())
    backend.use_folder(folder)
    prepared = prepare_network(config, dataset, [backend], folder, emit, user)
    network, test = prepared.network, prepared.test
    record_in_config(folder, backend_resolved={"description": backend.describe(), **backend.option_values()},
                     models=prepared.models)
    save_network(network, folder / "network.zip")
    deployment = deploy(backend, network, folder, config, emit)
    runner = deployment.runner
    emit(Event("stage", f"simulating {len(test)} items for {config.run.T} steps on {runner.describe()}"))
    partial = folder / "partial"
    if partial.exists() and any(partial.glob("batch_*.npz")):
        emit(Event("stage", f"resuming: {len(list(partial.glob('batch_*.npz')))} finished batches found in "
                            f"{partial}"))
    result = runner.run(network, test.images, test.labels, deployment.options, checkpoint_dir=partial)
    result.metadata.update({
        "ann_accuracy": prepared.ann_accuracy, "model": prepared.model.label, "dataset": dataset.name,
        "activation_sparsity": network.metadata["activation_sparsity"],
        "weight_sparsity": network.metadata["weight_sparsity"], "convert_s": prepared.convert_s,
        "ann_operations": ann_operations(network),
    })
    deployment.record(result)
    result.save(folder / "result.npz")
    for path in partial.glob("batch_*.npz"):
        path.unlink()
    partial.rmdir()
    summary, arrays = evaluate(result, config)
    from neurodeploy.jobs.diagnosis import accuracy_check

    check = accuracy_check(runner, network, test, deployment.options, result)
    if check is not None and check["warning"]:
        emit(Event("warning", check["warning"]))
    for key, value in (("board_accuracy", check), ("fan_in_pass", network.metadata.get("fan_in_pass")),
                       ("scale_optimization", prepared.optimization), ("mapping", deployment.mapping),
                       ("prediction", deployment.prediction_note)):
        if value is not None:
            summary[key] = value
    if config.run.exit:
        summary["early_exit"] = run_early_exit(runner, network, test, result, summary, config, folder,
                                               deployment.options)
    label = backend.name if deployment.prediction_note is None else f"{runner.name} predicting {backend.name}"
    write_evaluation(folder, label, summary, arrays)
    emit(Event("summary", f"{prepared.model.label} on {dataset.name} ({result.n_items} test items), backend "
                          f"{backend.describe()}", data=summary))
    emit(Event("done", f"results written to {folder}/", data={"folder": str(folder)}))
    return folder, summary


def run_early_exit(backend: Backend, network: Network, test: Split, full: SimulationResult, summary: dict,
                   config: JobConfig, folder: Path, options: RunOptions | None = None) -> dict:
    """Runs the Dynamic Confidence test part again with early exit in the simulator and compares its
    wall time with the full-T run of the same items (saved as ``result_exit.npz``); ``options``: the full
    run's (None: the job's)."""
    dc = summary["dynamic_confidence"]
    given = config.run.exit_threshold
    policy = ExitPolicy(dc["alpha"], dc["threshold_log_odds"]) if given is None else \
        ExitPolicy.from_confidence(dc["alpha"], given)
    _, test_index = validation_test_split(full.n_items, config.evaluation.dc_validation_fraction, config.model.seed)
    index = torch.as_tensor(test_index)
    options = options or run_options(config)
    exited = backend.run(network, test.images[index], test.labels[index], replace(options, exit_policy=policy))
    exited.metadata["ann_accuracy"] = full.metadata["ann_accuracy"]
    exited.save(folder / "result_exit.npz")
    full_part = backend.run(network, test.images[index], test.labels[index], options)
    wall, wall_full = exited.metadata["timings"]["run_s"], full_part.metadata["timings"]["run_s"]
    return {
        "threshold": float(1.0 / (1.0 + np.exp(-policy.threshold_log_odds))),
        "threshold_source": "validation" if given is None else "given",
        "alpha": policy.alpha,
        "n_items": exited.n_items,
        "mean_latency": float(exited.stop_times.mean()),
        "accuracy": float(exited.exit_correct().mean()),
        "full_T_accuracy": float(full_part.accuracy_curve()[-1]),
        "step_saving": 1.0 - float(exited.stop_times.mean()) / config.run.T,
        "wall_time_s": wall,
        "full_T_wall_time_s": wall_full,
        "wall_saving": 1.0 - wall / wall_full,
    }

