"""Model -> IR for the job's backends: obtain the model (quantized or sparsity fine-tuned as the job
asks), apply the fan-in pass the backends require, convert, optimize the scales when asked, and give
each backend its own passes (``Backend.prepare``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from neurodeploy.backends import Backend
from neurodeploy.convert import convert
from neurodeploy.data import Dataset, Split
from neurodeploy.errors import DataError
from neurodeploy.ir import Network
from neurodeploy.jobs.config import JobConfig, NIRImportSettings
from neurodeploy.jobs.events import Event, Listener
from neurodeploy.jobs.models import CachedModel, ModelCache, cache_folder, derived_model, trained_model
from neurodeploy.passes.fan_in import apply_dense_pooling, materialize_pooling, plan_dense_pooling, pool_inputs
from neurodeploy.train import TrainConfig, evaluate_accuracy, train_model
from neurodeploy.train.quantized import SCHEDULES, finetune_quantized

#: training items the backends' passes calibrate on (ring-buffer sizing)
BACKEND_CALIBRATION_ITEMS = 256


@dataclass
class PreparedNetwork:
    """What a job runs: the network, the test items as the network takes them (through the input
    transform of the fan-in pass), a* of the model on those items, and what was done on the way."""

    network: Network
    test: Split
    ann_accuracy: float | None
    model: CachedModel
    input_transform: Callable[[torch.Tensor], torch.Tensor]
    convert_s: float
    models: list[dict] = field(default_factory=list)
    optimization: dict | None = None


def model_cache(config: JobConfig, emit: Listener) -> ModelCache:
    """The model cache shared by every run folder (``--cache-dir``, ``NEURODEPLOY_CACHE`` or the platform's
    user cache folder: :func:`neurodeploy.jobs.models.cache_folder`)."""
    return ModelCache(cache_folder(config.cache_dir), emit)


def preflight(config: JobConfig, dataset: Dataset) -> CachedModel | None:
    """The user's model, loaded and checked against ``dataset`` (the one-line error of a model that does
    not fit the data), for a job to call before it creates its run folder and to hand to
    :func:`prepare_network`; None when the job trains a zoo architecture."""
    if not config.model.given:
        return None
    from neurodeploy.jobs.user_models import user_model

    return user_model(config.model, dataset)


def source_model(config: JobConfig, dataset: Dataset, cache: ModelCache, user: CachedModel | None = None
                 ) -> CachedModel:
    """The model file (its input shape and classes checked against ``dataset`` before any work), or the zoo
    architecture trained on ``dataset``. A model file is recognised by its content, and a class and its
    state_dict are taken too (:func:`neurodeploy.jobs.user_models.user_model`)."""
    if config.model.given:
        from neurodeploy.jobs.user_models import user_model

        return user or user_model(config.model, dataset)
    return trained_model(cache, dataset, config.model.arch, config.model.epochs, config.model.seed,
                         config.run.progress)


def model_for_conversion(config: JobConfig, dataset: Dataset, cache: ModelCache, user: CachedModel | None = None
                         ) -> list[CachedModel]:
    """The chain of models the conversion starts from (the last one is converted): the source model,
    then its quantized version (QCFS/QFFS from a zoo model; a model file is taken as quantized already)
    or its sparsity fine-tuned version (phase 1 of the anytime optimizations)."""
    base = source_model(config, dataset, cache, user)
    conversion, seed, progress = config.conversion, config.model.seed, config.run.progress
    if conversion.conversion != "rate":
        if config.model.given:
            return [base]
        settings = {"bits": conversion.quant_bits, "resolution": "mixed", "schedules": list(SCHEDULES),
                    "train": asdict(TrainConfig(epochs=conversion.quant_epochs, lr=0.01, seed=seed))}

        def quantize():
            cache.emit(Event("stage", f"fine-tuning with {conversion.quant_bits}-bit activations for "
                                      f"{conversion.quant_epochs} epochs"))
            model, record = finetune_quantized(base.model, dataset.train, conversion.quant_bits,
                                               TrainConfig(**settings["train"]), progress=progress,
                                               resolution="mixed")
            return model, {**_shape(base, dataset), "quant_bits": conversion.quant_bits}, record

        return [base, derived_model(cache, base, dataset, f"q{conversion.quant_bits}",
                                     f"{conversion.quant_bits}-bit activations", settings, quantize)]
    if config.optimization.enabled and config.optimization.sparsity:
        from neurodeploy.jobs.optimize import sparse_model

        return [base, sparse_model(config, dataset, cache, base)]
    return [base]


def _shape(parent: CachedModel, dataset: Dataset) -> dict:
    return {"arch": parent.info["arch"], "input_shape": dataset.input_shape, "n_classes": dataset.n_classes,
            "quant_bits": parent.info.get("quant_bits"), "pooling": parent.info.get("pooling") or None}


def fan_in_limit(config: JobConfig, backends: list[Backend]) -> int | None:
    """``--max-fan-in`` (0: no pass), else the smallest limit the backends require; None: no pass."""
    if config.fan_in.max_fan_in is not None:
        return config.fan_in.max_fan_in or None
    limits = [b.requirements().max_fan_in for b in backends if b.requirements().max_fan_in is not None]
    return min(limits) if limits else None


def pooled_model(config: JobConfig, dataset: Dataset, cache: ModelCache, parent: CachedModel, limit: int
                 ) -> tuple[CachedModel, list[dict]]:
    """Step 1 of the fan-in pass: pools the inputs of dense layers above ``limit`` and fine-tunes the
    model (cached); returns the model and the changes with the test accuracy before and after."""
    plan, changes = plan_dense_pooling(parent.model, dataset.input_shape, limit)
    report = [c.as_dict() for c in changes]
    if not plan:
        return parent, report
    epochs = config.fan_in.epochs
    settings = {"max_fan_in": limit, "plan": plan, "train": asdict(TrainConfig(epochs=epochs, lr=0.01,
                                                                               seed=config.model.seed))}

    def pool():
        cache.emit(Event("stage", f"fan-in pass: pooling before {len(plan)} dense layer(s), fine-tuning "
                                  f"{epochs} epochs"))
        model = apply_dense_pooling(parent.model, dataset.input_shape, plan)
        record = train_model(model, dataset.train, TrainConfig(**settings["train"]), progress=config.run.progress)
        return model, {**_shape(parent, dataset), "pooling": plan}, record

    pooled = derived_model(cache, parent, dataset, f"fanin{limit}", f"input pooled for fan-in <= {limit}",
                           settings, pool)
    test = dataset.test.head(config.run.samples)
    before, after = evaluate_accuracy(parent.model, test), evaluate_accuracy(pooled.model, test)
    for entry in report:
        entry.update(test_accuracy_before=before, test_accuracy_after=after)
    cache.emit(Event("stage", f"fan-in pass: ANN test accuracy {before:.4f} -> {after:.4f} after pooling and "
                              "fine-tuning"))
    return pooled, report


def convert_model(model: torch.nn.Module, dataset: Dataset, config: JobConfig) -> Network:
    """Converts with the job's conversion settings, calibrating on the first training items."""
    c = config.resolved_conversion
    calibration = dataset.train.images[: c.calibration_samples]
    # the percentile as given: None lets the converter pick its own (it differs for QCFS/QFFS)
    return convert(model, calibration, normalization=c.normalization, percentile=config.conversion.percentile,
                   granularity=c.granularity, reset=c.reset, v_init=c.v_init, seed=config.model.seed,
                   conversion=c.conversion, max_pool=c.max_pool, readout_start=c.readout_start,
                   T=config.run.T, progress=config.run.progress, negative_spikes=c.negative_spikes,
                   headroom=c.headroom)


def choice_lines(metadata: dict) -> list[str]:
    """One line for each choice the converter made on calibration items (initial membranes, readout start)."""
    lines = []
    if "v_init_calibration" in metadata:
        c = metadata["v_init_calibration"]
        fractions = ", ".join(f"{name} {fraction:g}" for name, fraction in c["fractions"].items())
        lines.append(f"initial membranes calibrated for T={c['T']} on {c['items']} training items: agreement with "
                     f"the ANN {c['agreement_before']:.4f} -> {c['agreement']:.4f}; v0/theta: {fractions}")
    if "readout_start_choice" in metadata:
        c = metadata["readout_start_choice"]
        lines.append(f"delayed readout from step {c['readout_start']} (chosen for T={c['T']} on {c['items']} "
                     f"training items: agreement {c['agreement_without']:.4f} -> {c['agreement']:.4f})")
    return lines


def prepare_network(config: JobConfig, dataset: Dataset, backends: list[Backend], folder: Path,
                    emit: Listener, user: CachedModel | None = None) -> PreparedNetwork:
    """One IR for every backend in ``backends``: when one needs the fan-in pass, all get it. With
    ``--network`` the IR is read as written (:func:`prepare_from_ir`)."""
    if config.model.network:
        return prepare_from_ir(config, dataset, backends, emit)
    cache = model_cache(config, emit)
    chain = model_for_conversion(config, dataset, cache, user)
    limit = fan_in_limit(config, backends)
    changes = None
    if limit is not None:
        pooled, changes = pooled_model(config, dataset, cache, chain[-1], limit)
        if pooled is not chain[-1]:
            chain.append(pooled)
    source = chain[-1]
    test = dataset.test.head(config.run.samples)
    ann_accuracy = evaluate_accuracy(source.model, test)
    start = time.perf_counter()
    network = convert_model(source.model, dataset, config)
    convert_s = time.perf_counter() - start
    for note in network.metadata.get("conversion_notes", []):
        emit(Event("stage", f"conversion: {note}"))
    for line in choice_lines(network.metadata):
        emit(Event("stage", f"conversion: {line}"))
    optimization = None
    if config.optimization.enabled:
        from neurodeploy.jobs.optimize import optimize_network

        network, optimization = optimize_network(network, source.model, dataset, config, folder, emit, chain)
    if limit is not None:
        changes = changes + [c.as_dict() for c in materialize_pooling(network, limit)]
        network.metadata["fan_in_pass"] = {"max_fan_in": limit, "changes": changes}
        emit(Event("fan_in", data=network.metadata["fan_in_pass"]))
    network.metadata["ann_accuracy"] = ann_record(source.model, dataset, test)

    def transform(images: torch.Tensor) -> torch.Tensor:
        return pool_inputs(network, images)

    network = prepare_for_backends(network, backends, dataset, transform, config.run.encoding, emit,
                                   config.run.T)
    return PreparedNetwork(network, Split(transform(test.images), test.labels), ann_accuracy, source, transform,
                           convert_s, [m.record() for m in chain], optimization)


def convert_job(config: JobConfig, out: str | Path, emit: Listener) -> Network:
    """``neurodeploy convert``: the job's model -> IR (with the fan-in pass when ``--max-fan-in`` asks)
    written to ``out``; no simulation."""
    from neurodeploy.data import load_dataset
    from neurodeploy.ir import save_network

    dataset = load_dataset(config.model.data)
    prepared = prepare_network(config, dataset, [], Path(config.results_dir), emit)
    save_network(prepared.network, out)
    emit(Event("done", f"converted {prepared.model.label} ({len(prepared.network.populations)} populations) "
                       f"-> {out}"))
    return prepared.network


def test_items_hash(dataset: Dataset, test: Split) -> str:
    """The content hash of the test items a run simulates (the items a* was measured on)."""
    return Dataset(dataset.name, test, test, dataset.n_classes).content_hash(("test",))


def ann_correct(model: torch.nn.Module, test: Split, batch_size: int = 1000) -> list[int]:
    """1 where ``model`` classifies a test item right, else 0 (a* of any first n items is their mean)."""
    model.eval()
    flags = []
    with torch.no_grad():
        for start in range(0, len(test), batch_size):
            logits = model(test.images[start:start + batch_size])
            flags += (logits.argmax(1) == test.labels[start:start + batch_size]).int().tolist()
    return flags


def ann_record(model: torch.nn.Module, dataset: Dataset, test: Split) -> dict:
    """What an IR records of its source ANN: per test item whether it is classified right, a* over them,
    their count and content hash (so a run of the IR alone on the first n of them knows its a*)."""
    correct = ann_correct(model, test)
    return {"accuracy": sum(correct) / max(len(correct), 1), "n_items": len(test),
            "test_sha256": test_items_hash(dataset, test), "dataset": dataset.name, "correct": correct}


def recorded_ann_accuracy(network: Network, dataset: Dataset, test: Split) -> tuple[float | None, str]:
    """a* from the IR's record when it was measured on items these are the first of; else None and why."""
    record = network.metadata.get("ann_accuracy")
    if not isinstance(record, dict) or not isinstance(record.get("correct"), list):
        return None, "the network records no ANN accuracy (a*)"
    n = record.get("n_items")
    if not isinstance(n, int) or n < len(test) or len(record["correct"]) != n or \
            record.get("test_sha256") != test_items_hash(dataset, dataset.test.head(n)):
        return None, (f"the network's a* was measured on other items ({n} of {record.get('dataset')!r}) than these: "
                      "a* is reported absent")
    correct = record["correct"][:len(test)]
    accuracy = sum(correct) / max(len(correct), 1)
    return accuracy, f"a* {accuracy:.4f} on these {len(test)} items from the network's record"


def read_network(path: str | Path, nir_import: NIRImportSettings, emit: Listener) -> Network:
    """The IR in ``path`` (an IR archive or folder, or a NIR graph read with ``nir_import``); each assumption
    of the NIR import is one ``stage`` event (and recorded in ``network.metadata["nir_import"]``)."""
    import warnings

    from neurodeploy.ir import load_network
    from neurodeploy.nir import NIRWarning, is_nir_file, read_nir

    nir_import.check_network(str(path))
    if not is_nir_file(path):
        return load_network(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NIRWarning)
        network = read_nir(path, **vars(nir_import.options()))
    for warning in caught:
        if issubclass(warning.category, NIRWarning):
            emit(Event("stage", f"NIR import: {warning.message}"))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return network


def import_record(network: Network) -> dict:
    """``{"nir_import_resolved": ...}`` for config.json when the network was read from a NIR graph: the import
    options as used (the graph's metadata over the flags, the flags over the preset) and the notes; else {}."""
    record = network.metadata.get("nir_import")
    return {"nir_import_resolved": record} if record is not None else {}


def prepare_from_ir(config: JobConfig, dataset: Dataset, backends: list[Backend], emit: Listener
                    ) -> PreparedNetwork:
    """``--network``: a converted (or optimized) IR as written by convert, optimize or run, run without its
    model; the data's items are checked against its input before any work."""
    from neurodeploy.jobs.models import file_fingerprint

    path = config.model.network
    network = read_network(path, config.nir_import, emit)
    test = dataset.test.head(config.run.samples)

    def transform(images: torch.Tensor) -> torch.Tensor:
        return pool_inputs(network, images)

    inputs = [p for p in network.populations.values() if p.role == "input"]
    shape = tuple(transform(dataset.train.images[:1]).shape[1:])
    if len(inputs) != 1 or tuple(inputs[0].shape) != shape:
        raise DataError(f"{dataset.name}: items of shape {list(dataset.input_shape)} do not fit the input "
                        f"{[list(p.shape) for p in inputs]} of {path}")
    outputs = [p for p in network.populations.values() if p.role == "output"]
    if outputs and int(np.prod(outputs[0].shape)) < dataset.n_classes:
        raise DataError(f"{dataset.name}: {dataset.n_classes} classes, {path} has {int(np.prod(outputs[0].shape))} "
                        "outputs")
    ann_accuracy, note = recorded_ann_accuracy(network, dataset, test)
    emit(Event("stage", f"running {path} as written (no model): {note}"))
    network = prepare_for_backends(network, backends, dataset, transform, config.run.encoding, emit,
                                   config.run.T)
    source = CachedModel(None, {}, f"network {path}", {"kind": "network", "sha256": file_fingerprint(path)
                                                        if Path(path).is_file() else None}, str(path), "file")
    return PreparedNetwork(network, Split(transform(test.images), test.labels), ann_accuracy, source, transform,
                           0.0, [source.record()], None)


def prepare_for_backends(network: Network, backends: list[Backend], dataset: Dataset,
                         transform: Callable[[torch.Tensor], torch.Tensor], encoding: str, emit: Listener,
                         T: int | None = None) -> Network:
    """Each backend's passes (``Backend.prepare``) on the first :data:`BACKEND_CALIBRATION_ITEMS` training items
    (through ``transform``, the host-side input pooling), their labels and the run's steps ``T`` (what
    ``--substeps auto`` chooses K at), with a stage line for a choice a backend's
    ``prepare`` made on them (:func:`announce_choices`; one recorded before, e.g. in a network file, is not
    announced again)."""
    calibration = transform(dataset.train.images[:BACKEND_CALIBRATION_ITEMS])
    labels = dataset.train.labels[:BACKEND_CALIBRATION_ITEMS]
    for backend in backends:
        before = network.metadata.get("substeps_choice")
        network = backend.prepare(network, calibration, encoding, labels, T)
        if network.metadata.get("substeps_choice") is not before:
            announce_choices(network, emit)
    return network


def announce_choices(network: Network, emit: Listener) -> None:
    """A stage line for what a backend's ``prepare`` chose on calibration items (``--substeps auto``)."""
    choice = network.metadata.get("substeps_choice")
    if choice:
        tried = "; ".join(f"K = {k.replace(' ', ', v_reset ')}: {a:.4f}" for k, a in choice["accuracy"].items())
        emit(Event("stage", f"--substeps auto chose K = {choice['substeps']} ({choice['rule']}; pynn "
                            f"{choice['reference_accuracy']:.4f}, {tried}): board time {choice['substeps']} T ms "
                            f"per item, time_scale_factor {choice['time_scale_factor']}"))
