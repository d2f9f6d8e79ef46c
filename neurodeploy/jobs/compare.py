"""``neurodeploy compare``: one converted network on several backends, each compared with the first
(the reference) on predictions per step, spike counts per population and per neuron, and wall time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from neurodeploy.backends import backend_class, get_backend
from neurodeploy.errors import ConfigError
from neurodeploy.evaluate.compare import comparison_summary
from neurodeploy.evaluate.energy import ann_operations
from neurodeploy.evaluate.summary import write_json
from neurodeploy.jobs.config import JobConfig
from neurodeploy.jobs.events import Event, Listener, silent
from neurodeploy.jobs.folders import claim_run
from neurodeploy.jobs.run import check_encoding, deploy, evaluate
from neurodeploy.jobs.start import prepare_run


def parse_backend_spec(spec: str, shared: dict | None = None) -> tuple[str, dict]:
    """``name`` or ``name:profile`` -> (backend name, validated options). ``shared`` options (given once
    for the whole comparison, e.g. workers) go to the backends that declare them."""
    name, _, profile = spec.partition(":")
    cls = backend_class(name)
    declared = {option.name for option in cls.options}
    options = {k: v for k, v in (shared or {}).items() if k in declared}
    if profile:
        if "profile" not in declared:
            raise ConfigError(f"{spec!r}: the {name} backend has no profiles")
        options["profile"] = profile
    options = cls.validate_options(options)
    cls.check_installed()  # a missing extra is found before any work
    return name, options


def parse_backend_specs(specs: list[str], shared: dict) -> list[tuple[str, str, dict]]:
    """(spec, name, options) of every spec; raises ConfigError for an empty list, a repeated spec, or
    a shared option no backend in the list declares."""
    if not specs or any(not s for s in specs):
        raise ConfigError("--backends needs a comma-separated list of backends, e.g. gpu:pynn,neuron")
    if len(set(specs)) != len(specs):
        raise ConfigError(f"--backends lists a backend twice: {','.join(specs)}")
    parsed = [(spec, *parse_backend_spec(spec, shared)) for spec in specs]
    declared = {option.name for _, name, _ in parsed for option in backend_class(name).options}
    unused = sorted(set(shared) - declared)
    if unused:
        raise ConfigError(f"--{unused[0].replace('_', '-')} applies to none of the backends {','.join(specs)}")
    return parsed


def compare_backends(config: JobConfig, specs: list[str], shared_options: dict | None = None,
                     emit: Listener = silent) -> tuple[Path, dict]:
    """Converts once and runs the same items on every backend in ``specs`` (the first is the
    reference); writes per-backend results, compare.json and overlaid plots into the run folder."""
    from neurodeploy.evaluate.plots import plot_comparison, plot_reports

    parsed = parse_backend_specs(specs, shared_options or {})
    for _, name, _ in parsed:
        config.check_neuron_features(backend_class(name))
    backends = [get_backend(name, **options) for _, name, options in parsed]
    for backend in backends:
        backend.check_target()
        check_encoding(backend, config)
    with claim_run(config) as claim:
        folders = [spec.replace(":", "-") for spec, _, _ in parsed]
        # the options as resolved (device chosen, workers counted)
        resolved = {spec: {"description": backend.describe(), **backend.option_values()}
                    for (spec, _, _), backend in zip(parsed, backends, strict=True)}
        started = prepare_run(claim, config, backends, emit, {"backends": resolved}, subfolders=folders,
                              resumable=False)
        folder, dataset, prepared = started.folder, started.dataset, started.prepared
        network, test = prepared.network, prepared.test
        runs, results = [], []
        for (spec, _, _), backend, subfolder in zip(parsed, backends, folders, strict=True):
            deployment = deploy(backend, network, folder / subfolder, config, emit)
            runner = deployment.runner  # a virtual board: the backend that predicts it
            options = replace(deployment.options, record_neuron_counts=runner.supports_neuron_counts)
            emit(Event("stage", f"simulating {len(test)} items for {config.run.T} steps on {runner.describe()}"))
            result = runner.run(network, test.images, test.labels, options)
            result.metadata.update(ann_accuracy=prepared.ann_accuracy, model=prepared.model.label, dataset=dataset.name,
                                   ann_operations=ann_operations(network))
            deployment.record(result)
            if deployment.prediction_note:
                emit(Event("stage", deployment.prediction_note))
            result.save(folder / f"result_{subfolder}.npz")
            summary, arrays = evaluate(result, config)
            runs.append((spec, summary, arrays))
            results.append(result)
        report = {"reference": specs[0], "n_items": results[0].n_items, "T": config.run.T, "backends": {}}
        for (spec, summary, _), result in zip(runs, results, strict=True):
            timings = result.metadata.get("timings", {})
            report["backends"][spec] = {
                "snn_accuracy": summary["snn_accuracy"], "peak_accuracy": summary["peak_accuracy"],
                "wall_time_per_item_s": timings.get("per_item_s"), "build_s": timings.get("build_s"),
                "run_s": timings.get("run_s"), "pipeline_delay": result.metadata.get("pipeline_delay"),
                "agreement_with_reference": comparison_summary(results[0], result),
            }
        claim.check()
        write_json(folder / "compare.json", report)
        plot_reports(folder, runs)
        plot_comparison(folder, specs, results)
        claim.check()
        emit(Event("comparison", data={"report": report, "summaries": [(spec, s) for spec, s, _ in runs]}))
        emit(Event("done", f"comparison written to {folder}/", data={"folder": str(folder)}))
        return folder, report
