"""A board prediction against its reference: the accuracy check every run of such a backend makes (a warning
where the prediction loses more than :data:`LOSS_LIMIT_PP` points, naming the population and the factor) and
``neurodeploy diagnose`` (each of the board's differences on its own, per population, and the fan-in pass).
Backends say what their reference and their factors are (``Backend.accuracy_reference``,
``Backend.factor_variants``); the numbers come from ``neurodeploy.evaluate.diagnosis``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from neurodeploy.backends import Backend, RunOptions, get_backend
from neurodeploy.data import Split, load_dataset
from neurodeploy.errors import ConfigError
from neurodeploy.evaluate.diagnosis import attribute_loss, cause, count_agreement, final_accuracy
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir import Network
from neurodeploy.jobs.config import JobConfig
from neurodeploy.jobs.events import Event, Listener, silent
from neurodeploy.jobs.folders import prepare_folder
from neurodeploy.jobs.prepare import preflight, prepare_network
from neurodeploy.jobs.run import run_options

#: a prediction more than this many points of accuracy below its reference gets a warning
LOSS_LIMIT_PP = 1.0


def exceeds_limit(loss_pp: float) -> bool:
    """Whether a loss of ``loss_pp`` points is more than :data:`LOSS_LIMIT_PP`; a loss of exactly the limit is not
    (100 (0.40 - 0.39) is 1.0000000000000009 in floating point: one item of 100 must not warn)."""
    return round(loss_pp, 9) > LOSS_LIMIT_PP


def _sources(network: Network) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    for projection in network.projections:
        sources.setdefault(projection.target, []).append(projection.source)
    return sources


def diagnose(runner: Backend, network: Network, test: Split, options: RunOptions) -> dict:
    """Runs ``runner``, its reference and each of its factor variants on ``test`` with per-neuron counts and
    returns the accuracies and, per population, the spike-count agreements with the reference
    (``evaluate.diagnosis.attribute_loss``) and the ``cause`` (population and factor)."""
    name, reference_options = runner.accuracy_reference()
    recorded = replace(options, record_neuron_counts=True, progress=False, exit_policy=None)
    reference = get_backend(name, **reference_options)
    results: dict[str, SimulationResult] = {"reference": reference.run(network, test.images, test.labels, recorded),
                                            "board": runner.run(network, test.images, test.labels, recorded)}
    for factor, (variant, variant_options) in runner.factor_variants().items():
        results[factor] = get_backend(variant, **variant_options).run(network, test.images, test.labels, recorded)
    board = count_agreement(results["reference"], results["board"])
    factors = {f: count_agreement(results["reference"], r) for f, r in results.items() if f not in ("reference",
                                                                                                   "board")}
    rows = attribute_loss(board, factors, _sources(network))
    return {"backend": runner.describe(), "reference": reference.describe(), "n_items": len(test), "T": options.T,
            "encoding": options.encoding, "accuracy": {f: final_accuracy(r) for f, r in results.items()},
            "populations": rows, "cause": cause(rows)}


def warning_text(check: dict) -> str:
    """The warning line of an :func:`accuracy_check` that lost more than the limit."""
    text = (f"predicted accuracy {check['accuracy']:.4f} is {check['loss_pp']:.2f} pp below the reference "
            f"{check['reference']} ({check['reference_accuracy']:.4f})")
    if check.get("population"):
        text += (f": population {check['population']} loses it (spike-count agreement "
                 f"{check['population_agreement']:.3f}), factor {check['factor']}")
    return text


def accuracy_check(runner: Backend, network: Network, test: Split, options: RunOptions, result: SimulationResult
                   ) -> dict | None:
    """``result`` (``runner`` on ``test``) against ``runner``'s reference on the same items (None where it has
    none): both accuracies, the loss in points and, where it exceeds :data:`LOSS_LIMIT_PP`, the
    :func:`diagnose` report, the population and factor it names and the ``warning`` line."""
    spec = runner.accuracy_reference()
    if spec is None:
        return None
    reference = get_backend(spec[0], **spec[1])
    plain = replace(options, progress=False, exit_policy=None, record_neuron_counts=False)
    reference_accuracy = final_accuracy(reference.run(network, test.images, test.labels, plain))
    accuracy = final_accuracy(result)
    check = {"reference": reference.describe(), "reference_accuracy": reference_accuracy, "accuracy": accuracy,
             "loss_pp": 100.0 * (reference_accuracy - accuracy), "limit_pp": LOSS_LIMIT_PP, "warning": None}
    if exceeds_limit(check["loss_pp"]):
        report = diagnose(runner, network, test, options)
        found = report["cause"]
        if found is not None:
            check.update(population=found["population"], population_agreement=found["agreement"],
                         factor=found["factor"])
        check.update(diagnosis=report, warning=warning_text(check))
    return check


def _runner(backend: Backend) -> tuple[Backend, str | None]:
    """What produces ``backend``'s data (its predictor where it returns none) and the input encoding it gets."""
    predictor = backend.predictor()
    if predictor is None:
        return backend, None
    return get_backend(predictor[0], **predictor[1]), backend.requirements().input_encoding


def diagnose_job(config: JobConfig, emit: Listener = silent) -> tuple[Path, dict]:
    """``neurodeploy diagnose``: the job's network prepared for ``config.backend`` as ``run`` prepares it, then
    :func:`diagnose` on the test items, and the fan-in pass's own cost (the reference on the network converted
    without it); writes ``diagnosis.json`` into the run folder and returns the folder and the report."""
    backend = get_backend(config.backend, **config.backend_options)
    runner, encoding = _runner(backend)
    if runner.accuracy_reference() is None:
        raise ConfigError(f"{backend.describe()} has no reference semantics to diagnose against; diagnose a board "
                          "prediction: --backend spinnaker (virtual board) or --backend gpu --profile spinnaker "
                          "(or spinnaker_exp)")
    dataset = load_dataset(config.model.data)
    user = preflight(config, dataset)
    folder = prepare_folder(config, dataset.content_hash())
    backend.use_folder(folder)
    prepared = prepare_network(config, dataset, [backend], folder, emit, user)
    options = run_options(config, encoding=encoding)
    emit(Event("stage", f"diagnosing {runner.describe()} on {len(prepared.test)} items, T={config.run.T}: the "
                        "prediction, its reference and each factor on its own"))
    report = diagnose(runner, prepared.network, prepared.test, options)
    report["predicts"] = backend.describe()
    changes = [c for c in (prepared.network.metadata.get("fan_in_pass") or {}).get("changes", [])
               if c.get("fan_in_after") != c.get("fan_in_before")]
    if changes:
        emit(Event("stage", "fan-in pass: converting without it for the reference"))
        plain = replace(config, fan_in=replace(config.fan_in, max_fan_in=0))
        without = prepare_network(plain, dataset, [], folder, emit, user)
        name, reference_options = runner.accuracy_reference()
        accuracy = final_accuracy(get_backend(name, **reference_options).run(
            without.network, without.test.images, without.test.labels, replace(options, progress=False)))
        report["fan_in"] = {"reference_accuracy_without": accuracy,
                            "reference_accuracy_with": report["accuracy"]["reference"],
                            "loss_pp": 100.0 * (accuracy - report["accuracy"]["reference"]), "changes": changes}
    (folder / "diagnosis.json").write_text(json.dumps(report, indent=1))
    emit(Event("diagnosis", f"{prepared.model.label} on {dataset.name}: {report['backend']} against "
                            f"{report['reference']}", data=report))
    return folder, report
