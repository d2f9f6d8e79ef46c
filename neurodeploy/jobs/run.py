"""``neurodeploy run``: the main job. Model -> IR (``prepare``) -> the backend's mapping, if it has one
-> simulation (or, where the backend returns no data, the backend that predicts it) -> the shared
evaluator -> ``results/<run-id>/``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from neurodeploy.backends import Backend, ExitPolicy, RunOptions, get_backend
from neurodeploy.data import Split
from neurodeploy.errors import ConfigError
from neurodeploy.evaluate.dynamic_confidence import validation_test_split
from neurodeploy.evaluate.energy import ann_operations
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.evaluate.summary import summarize, write_curves_csv, write_json
from neurodeploy.ir import Network
from neurodeploy.jobs.config import JobConfig
from neurodeploy.jobs.events import Event, Listener, silent
from neurodeploy.jobs.folders import RunClaim, claim_run
from neurodeploy.jobs.record import record_spikes
from neurodeploy.jobs.start import prepare_run


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
    """curves.csv, the plots and summary.json of one run; summary.json last, so its presence says the run
    finished (:meth:`neurodeploy.jobs.folders.RunClaim.finished`)."""
    from neurodeploy.evaluate.plots import plot_reports

    write_curves_csv(folder / "curves.csv", arrays)
    plot_reports(folder, [(label, summary, arrays)])
    write_json(folder / "summary.json", summary)


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
    estimate = backend.build_estimate(network)
    if estimate:
        emit(Event("stage", estimate))  # before a build that can take minutes, so the wait is announced
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


def imported_graph(config: JobConfig) -> bool:
    """Whether the job runs a NIR graph given with ``--network``."""
    from neurodeploy.nir import is_nir_file

    return config.model.network is not None and is_nir_file(config.model.network)


def run_job(config: JobConfig, emit: Listener = silent) -> tuple[Path, dict]:
    """Runs the main job and writes ``results/<run-id>/``; returns the folder and the summary.

    The folder holds config.json, network.zip (the IR), result.npz, summary.json, curves.csv, the PNG
    plots and, for backends that place networks on hardware, mapping.json. Finished batches are kept in
    ``partial/`` until the run completes, so running again with the same ``run_id`` and settings
    resumes an interrupted run. The folder is held while the job runs
    (:func:`~neurodeploy.jobs.folders.claim_run`): a second job with the same id is refused, a finished
    run is reported, not run again, and a refused new run leaves nothing behind.
    """
    backend = get_backend(config.backend, **config.backend_options)
    backend.check_target()
    check_encoding(backend, config)
    with claim_run(config) as claim:
        return _run_in(claim, backend, config, emit)


def _run_in(claim: RunClaim, backend: Backend, config: JobConfig, emit: Listener) -> tuple[Path, dict]:
    """The main job in the claimed run folder (:func:`run_job`)."""
    started = prepare_run(claim, config, [backend], emit,
                          {"backend_resolved": {"description": backend.describe(), **backend.option_values()}})
    folder, dataset = started.folder, started.dataset
    if started.finished is not None:
        emit(Event("summary", f"run {folder.name} finished before; its results are unchanged (choose another "
                              "--run-id to run it again)", data=started.finished))
        emit(Event("done", f"results in {folder}/", data={"folder": str(folder)}))
        return folder, started.finished
    prepared = started.prepared
    network, test = prepared.network, prepared.test
    deployment = deploy(backend, network, folder, config, emit)
    runner = deployment.runner
    emit(Event("stage", f"simulating {len(test)} items for {config.run.T} steps on {runner.describe()}"))
    partial = folder / "partial"
    if partial.exists() and any(partial.glob("batch_*.npz")):
        emit(Event("stage", f"resuming: {len(list(partial.glob('batch_*.npz')))} finished batches found in "
                            f"{partial}"))
    options = deployment.options
    if imported_graph(config):  # every neuron's count, to compare the graph with the library that wrote it
        options = replace(options, record_neuron_counts=runner.supports_neuron_counts)
    result = runner.run(network, test.images, test.labels, options, checkpoint_dir=partial)
    claim.check()
    result.metadata.update({
        "ann_accuracy": prepared.ann_accuracy, "model": prepared.model.label, "dataset": dataset.name,
        # a network run without its ANN (--network, e.g. a NIR graph written elsewhere) records no sparsity
        "activation_sparsity": network.metadata.get("activation_sparsity"),
        "weight_sparsity": network.metadata.get("weight_sparsity"), "convert_s": prepared.convert_s,
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
    if config.run.record:
        summary["spike_recording"] = record_spikes(runner, network, test, deployment.options,
                                                   config.run.record_requests, folder, config.run.memory_budget, emit)
    label = backend.name if deployment.prediction_note is None else f"{runner.name} predicting {backend.name}"
    claim.check()
    write_evaluation(folder, label, summary, arrays)
    claim.check()
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

