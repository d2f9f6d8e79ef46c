"""The main job as a Python API: get a trained model, convert it, simulate it, evaluate it.

``run_job`` is what ``neurodeploy run`` calls; each step is also usable on its own.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from neurodeploy.backends import ExitPolicy, RunOptions, get_backend
from neurodeploy.convert import convert
from neurodeploy.data import Dataset, Split, load_dataset
from neurodeploy.errors import NeurodeployError
from neurodeploy.evaluate.dynamic_confidence import validation_test_split
from neurodeploy.evaluate.report import plot_reports, print_summary, summarize, write_curves_csv, write_summary
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir import Network, save_network
from neurodeploy.passes.fan_in import apply_dense_pooling, materialize_pooling, plan_dense_pooling, pool_inputs
from neurodeploy.passes.ring_buffers import annotate_summed_weights
from neurodeploy.train import TrainConfig, build, evaluate_accuracy, load_model, save_model, train_model
from neurodeploy.train.quantized import finetune_quantized

#: the fan-in the pass enforces on SpiNNaker targets unless --max-fan-in says otherwise (the 2x2 input
#: pooling of Dutson et al.'s SpiNNaker dense MNIST model brings 784 to 196)
SPINNAKER_MAX_FAN_IN = 256


@dataclass
class JobConfig:
    """Everything ``neurodeploy run`` needs; defaults run dense MNIST on the embedded data."""

    backend: str = "gpu"
    arch: str = "dense_mnist"
    model: str | None = None
    data: str | None = None
    T: int = 100
    batch_size: int = 500
    samples: int | None = None
    normalization: str = "percentile"
    percentile: float | None = None
    granularity: str | None = None
    reset: str = "subtract"
    v_init: str | None = None
    seed: int = 0
    device: str | None = None
    profile: str | None = None  # backend default: gpu "ideal", neuron "exact"
    precision: str = "fp32"
    encoding: str = "analog"
    epochs: int = 15
    conversion: str = "rate"
    quant_bits: int = 2
    quant_epochs: int = 5
    chunk: int | None = None
    exit: str | None = None
    workers: int | None = None
    hardware_config: str | None = None
    neurons_per_core: int = 128
    calibration_samples: int = 2000
    results_dir: str = "results"
    run_id: str | None = None
    dc_alpha: str = "T"
    dc_tolerance: float = 0.0
    dc_validation_fraction: float = 0.5
    dc_rule: str = "stable"
    progress: bool = True
    backend_options: dict = field(default_factory=dict)
    optimize: bool = False
    optimize_method: str = "coarse_to_fine"
    optimize_evals: int = 250
    optimize_T: int | None = None
    optimize_items: int | None = None
    lambda_e: float = 200.0
    sparsity: bool = True
    max_fan_in: int | None = None
    fan_in_epochs: int = 3

    def __post_init__(self) -> None:
        # Dutson et al.'s pipeline: neuron-level scales and a non-zero initial membrane by default
        if self.granularity is None:
            self.granularity = "neuron" if self.optimize else "layer"
        if self.v_init is None:
            self.v_init = "half" if self.optimize else "zero"

    def run_options(self, exit_policy: ExitPolicy | None = None) -> RunOptions:
        return RunOptions(T=self.T, batch_size=self.batch_size, encoding=self.encoding, seed=self.seed,
                          progress=self.progress, exit_policy=exit_policy)


def model_cache_path(results_dir: str | Path, arch: str, dataset: Dataset, epochs: int, seed: int) -> Path:
    return Path(results_dir) / "models" / f"{arch}-{dataset.name}-n{len(dataset.train)}-e{epochs}-s{seed}.pt"


def obtain_model(config: JobConfig, dataset: Dataset, console: Console) -> tuple[torch.nn.Module, str]:
    """Loads ``config.model``, or the cached zoo model, or trains and caches it."""
    if config.model:
        model, info = load_model(config.model)
        return model, f"{info['arch']} from {config.model}"
    path = model_cache_path(config.results_dir, config.arch, dataset, config.epochs, config.seed)
    if path.exists():
        model, _ = load_model(path)
        return model, f"{config.arch} (cached {path})"
    console.print(f"training {config.arch} on {dataset.name} for {config.epochs} epochs (cached afterwards)")
    model = build(config.arch, dataset.input_shape, dataset.n_classes, seed=config.seed)
    record = train_model(model, dataset.train, TrainConfig(epochs=config.epochs, seed=config.seed),
                         progress=config.progress)
    save_model(path, model, config.arch, dataset.input_shape, dataset.n_classes, record)
    return model, f"{config.arch} (trained, saved to {path})"


def obtain_quantized_model(config: JobConfig, dataset: Dataset, console: Console) -> tuple[torch.nn.Module, str]:
    """The full-precision model of :func:`obtain_model` with ``quant_bits``-bit activations,
    fine-tuned for ``quant_epochs`` epochs (cached like the full-precision model)."""
    base, label = obtain_model(config, dataset, console)
    if config.model:
        return base, label
    path = model_cache_path(config.results_dir, config.arch, dataset, config.epochs, config.seed)
    path = path.with_name(f"{path.stem}-q{config.quant_bits}-e{config.quant_epochs}.pt")
    if path.exists():
        model, _ = load_model(path)
        return model, f"{config.arch} {config.quant_bits}-bit (cached {path})"
    console.print(f"fine-tuning {config.arch} with {config.quant_bits}-bit activations "
                  f"for {config.quant_epochs} epochs")
    model, record = finetune_quantized(base, dataset.train, config.quant_bits,
                                       TrainConfig(epochs=config.quant_epochs, lr=0.01, seed=config.seed),
                                       progress=config.progress)
    save_model(path, model, config.arch, dataset.input_shape, dataset.n_classes, record, config.quant_bits)
    return model, f"{config.arch} {config.quant_bits}-bit (fine-tuned, saved to {path})"


def model_arch(config: JobConfig) -> str:
    """The architecture name of the job's model: the model file's, or ``config.arch``."""
    return load_model(config.model)[1]["arch"] if config.model else config.arch


def obtain_sparse_model(config: JobConfig, dataset: Dataset, console: Console) -> tuple[torch.nn.Module, str]:
    """The model of :func:`obtain_model` after sparsity fine-tuning with the default
    :class:`SparsityConfig` (phase 1 of Dutson et al.), cached beside it."""
    from neurodeploy.train.sparsity import SparsityConfig, finetune_sparsity

    model, label = obtain_model(config, dataset, console)
    sparsity = SparsityConfig(seed=config.seed)
    base = Path(config.model) if config.model else model_cache_path(config.results_dir, config.arch, dataset,
                                                                    config.epochs, config.seed)
    path = Path(config.results_dir) / "models" / f"{base.stem}-sparse{sparsity.epochs}.pt"
    if path.exists():
        model, _ = load_model(path)
        return model, f"{label}, sparsity fine-tuned (cached {path})"
    console.print(f"sparsity fine-tuning for {sparsity.epochs} epochs (lambda_a {sparsity.lambda_a}, "
                  f"lambda_w {sparsity.lambda_w}, pruning below {sparsity.prune_threshold})")
    report = finetune_sparsity(model, dataset.train, sparsity, progress=config.progress)
    save_model(path, model, model_arch(config), dataset.input_shape, dataset.n_classes, {"sparsity": report})
    return model, f"{label}, sparsity fine-tuned (saved to {path})"


def obtain_for_conversion(config: JobConfig, dataset: Dataset, console: Console) -> tuple[torch.nn.Module, str]:
    """The model ``config.conversion`` needs: full precision for "rate", quantized for QCFS/QFFS;
    sparsity fine-tuned when the job optimizes (and ``config.sparsity``)."""
    if config.conversion != "rate":
        return obtain_quantized_model(config, dataset, console)
    if config.optimize and config.sparsity:
        return obtain_sparse_model(config, dataset, console)
    return obtain_model(config, dataset, console)


def optimization_split(dataset: Dataset, config: JobConfig):
    """The held-out part of the training split (never trained on, never the test split) on which the
    scales are optimized: the validation items of :func:`train_model` and of sparsity fine-tuning."""
    from neurodeploy.train.trainer import split_validation

    _, validation = split_validation(dataset.train, TrainConfig().val_fraction, config.seed)
    return validation.head(config.optimize_items)


def optimize_network(network: Network, model: torch.nn.Module, dataset: Dataset, config: JobConfig, folder: Path,
                     console: Console) -> tuple[Network, dict]:
    """Formal scale optimization of ``network`` (H0) on :func:`optimization_split`; the replay log in
    ``folder/optimize_log.jsonl`` makes an interrupted search resume. Returns the network and a report."""
    from neurodeploy.optimize import OptimizeConfig, optimize_scales

    items = optimization_split(dataset, config)
    settings = OptimizeConfig(method=config.optimize_method, max_evals=config.optimize_evals,
                              T=config.optimize_T or config.T, lambda_e=config.lambda_e)
    ann = evaluate_accuracy(model, items)
    console.print(f"optimizing scales ({settings.method}, {settings.max_evals} simulations of {len(items)} "
                  f"held-out training items, T={settings.T})")
    optimized, result = optimize_scales(network, items.images, items.labels, ann, settings,
                                        folder / "optimize_log.jsonl", config.device or "cpu", config.progress)
    report = {"method": settings.method, "optimization_items": len(items), "ann_accuracy": ann,
              **result.as_dict()}
    console.print(f"L_SNN {result.start_loss:.4f} -> {result.best_loss:.4f} in {result.evaluations} simulations "
                  f"({result.replayed} from the log), {result.wall_time_s:.1f} s")
    return optimized, report


def convert_model(model: torch.nn.Module, dataset: Dataset, config: JobConfig) -> Network:
    calibration = dataset.train.images[: config.calibration_samples]
    return convert(model, calibration, normalization=config.normalization, percentile=config.percentile,
                   granularity=config.granularity, reset=config.reset, v_init=config.v_init, seed=config.seed,
                   conversion=config.conversion)


def fan_in_limit(config: JobConfig) -> int | None:
    """``max_fan_in`` (0: no pass), or for SpiNNaker targets (where the pass is automatic)
    :data:`SPINNAKER_MAX_FAN_IN`; None means no fan-in pass."""
    if config.max_fan_in is not None:
        return config.max_fan_in or None  # 0 turns the pass off
    return SPINNAKER_MAX_FAN_IN if targets_spinnaker(config) else None


def obtain_fan_in_model(model: torch.nn.Module, label: str, config: JobConfig, dataset: Dataset, console: Console
                        ) -> tuple[torch.nn.Module, str, list[dict] | None]:
    """Step 1 of the fan-in pass: pools the inputs of dense layers above the limit and fine-tunes the
    model for ``fan_in_epochs`` epochs (cached by the weights it started from); returns the model, its
    label and the changes (with the test accuracy before and after), None when the job has no pass."""
    limit = fan_in_limit(config)
    if limit is None:
        return model, label, None
    plan, changes = plan_dense_pooling(model, dataset.input_shape, limit)
    report = [c.as_dict() for c in changes]
    if not plan:
        return model, label, report
    digest = hashlib.sha256(b"".join(t.cpu().numpy().tobytes() for t in model.state_dict().values())).hexdigest()
    path = Path(config.results_dir) / "models" / f"pooled-{digest[:12]}-fanin{limit}-e{config.fan_in_epochs}.pt"
    test = dataset.test.head(config.samples)
    before = evaluate_accuracy(model, test)
    if path.exists():
        pooled, _ = load_model(path)
        origin = f"cached {path}"
    else:
        console.print(f"fan-in pass: pooling before {len(plan)} dense layer(s), fine-tuning {config.fan_in_epochs} "
                      "epochs")
        pooled = apply_dense_pooling(model, dataset.input_shape, plan)
        record = train_model(pooled, dataset.train, TrainConfig(epochs=config.fan_in_epochs, lr=0.01,
                                                                 seed=config.seed), progress=config.progress)
        arch = model_arch(config)
        bits = config.quant_bits if config.conversion != "rate" else None
        save_model(path, pooled, arch, dataset.input_shape, dataset.n_classes, record, bits, pooling=plan)
        origin = f"saved to {path}"
    after = evaluate_accuracy(pooled, test)
    for entry in report:
        entry.update(test_accuracy_before=before, test_accuracy_after=after)
    console.print(f"fan-in pass: ANN test accuracy {before:.4f} -> {after:.4f} after pooling and fine-tuning")
    return pooled, f"{label}, input pooled for fan-in <= {limit} ({origin})", report


def targets_spinnaker(config: JobConfig) -> bool:
    """The run deploys to SpiNNaker or predicts it (gpu backend, spinnaker profile)."""
    return config.backend == "spinnaker" or (config.backend == "gpu" and config.profile == "spinnaker")


def prepare_for_spinnaker(network: Network, dataset: Dataset, config: JobConfig, console: Console) -> Network:
    """Stores each population's expected summed weight per step (for the ring buffers) from the rate
    model on the first 256 training items."""
    calibration = pool_inputs(network, dataset.train.images[:256]).numpy()
    # the board gets its input as spikes from a spike source (the mapping builds it so)
    annotate_summed_weights(network, calibration, "if" if config.backend == "spinnaker" else config.encoding)
    console.print("SpiNNaker ring buffers sized from firing rates on 256 training items")
    return network


def _run_folder(config: JobConfig) -> Path:
    run_id = config.run_id or datetime.datetime.now().strftime(f"%Y%m%d-%H%M%S-{config.backend}")
    return Path(config.results_dir) / run_id


def _fingerprint(config: JobConfig) -> str:
    keep = {k: v for k, v in asdict(config).items() if k not in ("progress", "run_id", "results_dir")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_job(config: JobConfig, console: Console | None = None) -> tuple[Path, dict]:
    """Runs the main job and writes ``results/<run-id>/``; returns the folder and the summary.

    The folder holds config.json, network.zip (the IR), result.npz, summary.json, curves.csv and the
    PNG plots. Finished batches are kept in ``partial/`` until the run completes, so running again
    with the same ``run_id`` and settings resumes an interrupted run.
    """
    console = console or Console()
    folder = _run_folder(config)
    fingerprint = _fingerprint(config)
    config_path = folder / "config.json"
    if config_path.exists() and json.loads(config_path.read_text()).get("fingerprint") != fingerprint:
        raise NeurodeployError(f"{folder} holds a run with other settings; choose another --run-id")
    folder.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps({"fingerprint": fingerprint, **asdict(config)}, indent=1))

    dataset = load_dataset(config.data)
    model, model_label = obtain_for_conversion(config, dataset, console)
    model, model_label, fan_in_changes = obtain_fan_in_model(model, model_label, config, dataset, console)
    test = dataset.test.head(config.samples)
    ann_accuracy = evaluate_accuracy(model, test)
    start = time.perf_counter()
    network = convert_model(model, dataset, config)
    convert_s = time.perf_counter() - start
    optimization = None
    if config.optimize:
        network, optimization = optimize_network(network, model, dataset, config, folder, console)
    finish_fan_in_pass(network, fan_in_changes, config, console)
    test = Split(pool_inputs(network, test.images), test.labels)
    if targets_spinnaker(config):
        network = prepare_for_spinnaker(network, dataset, config, console)
    save_network(network, folder / "network.zip")

    backend = get_backend(config.backend, **_backend_kwargs(config))
    if config.backend == "spinnaker":
        return folder, _map_on_spinnaker(backend, network, folder, config, console)
    device = getattr(backend, "device", None)
    if device is not None:
        reason = "" if device.type == "cuda" else " (no CUDA device found)" if not torch.cuda.is_available() else ""
        console.print(f"backend {config.backend} running on {device}{reason}")
    partial = folder / "partial"
    if partial.exists() and any(partial.iterdir()):
        console.print(f"resuming: {len(list(partial.glob('batch_*.npz')))} finished batches found in {partial}")
    options = config.run_options()
    result = backend.run(network, test.images, test.labels, options, checkpoint_dir=partial)
    result.metadata.update({
        "ann_accuracy": ann_accuracy, "model": model_label, "dataset": dataset.name,
        "activation_sparsity": network.metadata["activation_sparsity"],
        "weight_sparsity": network.metadata["weight_sparsity"], "convert_s": convert_s,
    })
    result.save(folder / "result.npz")
    for path in partial.glob("batch_*.npz"):
        path.unlink()
    partial.rmdir()
    summary = evaluate_into(folder, result, config)
    if fan_in_changes is not None or optimization is not None:
        if fan_in_changes is not None:
            summary["fan_in_pass"] = network.metadata["fan_in_pass"]
        if optimization is not None:
            summary["scale_optimization"] = optimization
        write_summary(folder / "summary.json", summary)
    if config.exit:
        summary["early_exit"] = run_early_exit(backend, network, test, result, summary, config, folder)
        write_summary(folder / "summary.json", summary)
    print_summary(summary, f"{model_label} on {dataset.name} ({result.n_items} test items), backend "
                  f"{config.backend}", console)
    console.print(f"results written to {folder}/")
    return folder, summary


def optimize_job(config: JobConfig, out: str | Path, console: Console | None = None) -> tuple[Network, dict]:
    """``neurodeploy optimize``: phases 1 and 2 of Dutson et al. without the test run. Obtains the
    (sparsity fine-tuned) model, applies the fan-in pass where the job has one (as ``run`` does),
    converts it, optimizes its scales and writes the IR to ``out``; the report and the replay log go to
    ``results/<run-id>/``."""
    console = console or Console()
    folder = _run_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.data)
    model, model_label = obtain_for_conversion(config, dataset, console)
    model, model_label, fan_in_changes = obtain_fan_in_model(model, model_label, config, dataset, console)
    network, report = optimize_network(convert_model(model, dataset, config), model, dataset, config, folder,
                                       console)
    finish_fan_in_pass(network, fan_in_changes, config, console)
    if fan_in_changes is not None:
        report["fan_in_pass"] = network.metadata["fan_in_pass"]
    report["model"] = model_label
    save_network(network, out)
    write_summary(folder / "optimization.json", report)
    console.print(f"optimized network written to {out}; report in {folder / 'optimization.json'}")
    return network, report


def finish_fan_in_pass(network: Network, changes: list[dict] | None, config: JobConfig, console: Console) -> None:
    """Step 2 of the fan-in pass on the converted ``network`` (in place): pool populations and host-side
    input pooling; records every change of both steps in ``network.metadata["fan_in_pass"]`` and prints
    them. ``changes`` are step 1's (None: the job has no pass, nothing to do)."""
    if changes is None:
        return
    limit = fan_in_limit(config)
    changes = changes + [c.as_dict() for c in materialize_pooling(network, limit)]
    network.metadata["fan_in_pass"] = {"max_fan_in": limit, "changes": changes}
    print_fan_in_changes(changes, limit, console)


def print_fan_in_changes(changes: list[dict], limit: int, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"fan-in pass (max fan-in {limit})")
    for column in ("where", "fan-in before", "after", "action"):
        table.add_column(column)
    for change in changes:
        table.add_row(change["where"], str(change["fan_in_before"]), str(change["fan_in_after"]), change["action"])
    console.print(table if changes else f"fan-in pass: every fan-in is at most {limit}, nothing changed")


def _map_on_spinnaker(backend, network: Network, folder: Path, config: JobConfig, console: Console) -> dict:
    """Maps the network (the product of a virtual board) and prints the mapping report."""
    from rich.table import Table

    report = backend.map(network, folder, T=config.T)
    if "fan_in_pass" in network.metadata:
        report["fan_in_pass"] = network.metadata["fan_in_pass"]
        write_summary(folder / "mapping.json", report)
    table = Table(title=f"SpiNNaker mapping on the {report['target']} ({config.hardware_config or 'default config'})")
    table.add_column("population")
    table.add_column("cores")
    table.add_column("max fan-in")
    for name, cores in report["cores_per_population"].items():
        table.add_row(name, str(cores), str(report["max_fan_in"].get(name, "")))
    console.print(table)
    console.print(f"{report['cores']} cores on {report['chips']} chips, {report['n_synapses']} synapses, "
                  f"{report['neurons_per_core']} neurons per core; sPyNNaker reports in {report['reports']}")
    if report["virtual"]:
        console.print("a virtual board maps the network and produces no spikes: no accuracy is measured")
    return report


def parse_exit(spec: str) -> float | None:
    """``confidence`` -> None (pick the threshold on validation data); ``confidence:C`` -> C."""
    kind, _, value = spec.partition(":")
    if kind != "confidence":
        raise NeurodeployError(f"--exit {spec!r}: the only exit rule is 'confidence' or 'confidence:C'")
    if not value:
        return None
    try:
        threshold = float(value)
    except ValueError:
        raise NeurodeployError(f"--exit {spec!r}: {value!r} is not a number") from None
    if not 0.0 < threshold < 1.0:
        raise NeurodeployError(f"--exit {spec!r}: a confidence threshold lies in (0, 1)")
    return threshold


def run_early_exit(backend, network: Network, test, full: SimulationResult, summary: dict, config: JobConfig,
                   folder: Path) -> dict:
    """Runs the Dynamic Confidence test part again with early exit in the simulator and compares its
    wall time with the full-T run of the same items (saved as ``result_exit.npz``)."""
    dc = summary["dynamic_confidence"]
    given = parse_exit(config.exit)
    policy = ExitPolicy(dc["alpha"], dc["threshold_log_odds"]) if given is None else \
        ExitPolicy.from_confidence(dc["alpha"], given)
    _, test_index = validation_test_split(full.n_items, config.dc_validation_fraction, config.seed)
    index = torch.as_tensor(test_index)
    exited = backend.run(network, test.images[index], test.labels[index], config.run_options(policy))
    exited.metadata["ann_accuracy"] = full.metadata["ann_accuracy"]
    exited.save(folder / "result_exit.npz")
    full_part = backend.run(network, test.images[index], test.labels[index], config.run_options())
    step_saving = 1.0 - float(exited.stop_times.mean()) / config.T
    wall, wall_full = exited.metadata["timings"]["run_s"], full_part.metadata["timings"]["run_s"]
    return {
        "threshold": float(1.0 / (1.0 + np.exp(-policy.threshold_log_odds))),
        "threshold_source": "validation" if given is None else "given",
        "alpha": policy.alpha,
        "n_items": exited.n_items,
        "mean_latency": float(exited.stop_times.mean()),
        "accuracy": float(exited.exit_correct().mean()),
        "full_T_accuracy": float(full_part.accuracy_curve()[-1]),
        "step_saving": step_saving,
        "wall_time_s": wall,
        "full_T_wall_time_s": wall_full,
        "wall_saving": 1.0 - wall / wall_full,
    }


def evaluate_into(folder: Path, result: SimulationResult, config: JobConfig) -> dict:
    summary, arrays = summarize(result, result.metadata["ann_accuracy"], config.dc_alpha, config.dc_tolerance,
                                config.dc_validation_fraction, config.seed, dc_rule=config.dc_rule)
    write_summary(folder / "summary.json", summary)
    write_curves_csv(folder / "curves.csv", arrays)
    plot_reports(folder, [(config.backend, summary, arrays)])
    return summary


def _backend_kwargs(config: JobConfig) -> dict:
    kwargs = dict(config.backend_options)
    if config.profile is not None and config.backend not in ("gpu", "neuron"):
        raise NeurodeployError(f"--profile {config.profile} applies to the gpu and neuron backends, not "
                               f"{config.backend!r}")
    if config.backend == "gpu":
        kwargs.update(device=config.device, profile=config.profile or "ideal", precision=config.precision,
                      chunk=config.chunk)
    elif config.backend == "neuron":
        kwargs.update(workers=config.workers, profile=config.profile or "exact")
    elif config.backend == "spinnaker":
        kwargs.update(hardware_config=config.hardware_config, neurons_per_core=config.neurons_per_core)
    return kwargs


def parse_backend_spec(spec: str) -> tuple[str, dict]:
    """``gpu``, ``gpu:pynn``, ``neuron:standard`` (a profile) or ``neuron`` -> (backend name,
    constructor kwargs)."""
    name, _, profile = spec.partition(":")
    if profile and name not in ("gpu", "neuron"):
        raise NeurodeployError(f"{spec!r}: only the gpu (gpu:ideal, gpu:pynn, gpu:spinnaker) and neuron "
                               "(neuron:exact, neuron:standard) backends have profiles")
    return name, ({"profile": profile} if profile else {})


def compare_backends(config: JobConfig, specs: list[str], console: Console | None = None) -> tuple[Path, dict]:
    """Converts once and runs the same items on every backend in ``specs`` (the first is the
    reference); writes per-backend results, compare.json and overlaid plots into results/<run-id>/."""
    from neurodeploy.evaluate.compare import comparison_summary
    from neurodeploy.evaluate.report import print_comparison

    console = console or Console()
    folder = _run_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.data)
    model, model_label = obtain_for_conversion(config, dataset, console)
    # one IR for every backend: when one of them is SpiNNaker's, all get its fan-in pass and ring buffers
    deploys_spinnaker = any(targets_spinnaker(JobConfig(backend=name, profile=kwargs.get("profile")))
                            for name, kwargs in map(parse_backend_spec, specs))
    fan_in_config = replace(config, backend="spinnaker") if deploys_spinnaker else config
    model, model_label, fan_in_changes = obtain_fan_in_model(model, model_label, fan_in_config, dataset, console)
    test = dataset.test.head(config.samples)
    ann_accuracy = evaluate_accuracy(model, test)
    network = convert_model(model, dataset, config)
    finish_fan_in_pass(network, fan_in_changes, fan_in_config, console)
    test = Split(pool_inputs(network, test.images), test.labels)
    if deploys_spinnaker:
        network = prepare_for_spinnaker(network, dataset, config, console)
    save_network(network, folder / "network.zip")
    runs, results = [], []
    for spec in specs:
        name, kwargs = parse_backend_spec(spec)
        backend_config = replace(config, backend=name)
        backend = get_backend(name, **{**_backend_kwargs(backend_config), **kwargs})
        options = replace(config.run_options(), record_neuron_counts=True)
        result = backend.run(network, test.images, test.labels, options)
        result.metadata.update(ann_accuracy=ann_accuracy, model=model_label, dataset=dataset.name)
        label = spec.replace(":", "-")
        result.save(folder / f"result_{label}.npz")
        summary, arrays = summarize(result, ann_accuracy, config.dc_alpha, config.dc_tolerance,
                                    config.dc_validation_fraction, config.seed, dc_rule=config.dc_rule)
        runs.append((spec, summary, arrays))
        results.append(result)
    report = {"reference": specs[0], "n_items": results[0].n_items, "T": config.T, "backends": {}}
    for (spec, summary, _), result in zip(runs, results, strict=True):
        timings = result.metadata.get("timings", {})
        report["backends"][spec] = {
            "snn_accuracy": summary["snn_accuracy"], "peak_accuracy": summary["peak_accuracy"],
            "wall_time_per_item_s": timings.get("per_item_s"), "build_s": timings.get("build_s"),
            "run_s": timings.get("run_s"), "pipeline_delay": result.metadata.get("pipeline_delay"),
            "agreement_with_reference": comparison_summary(results[0], result),
        }
    write_summary(folder / "compare.json", report)
    plot_reports(folder, runs)
    print_comparison([s for _, s, _ in runs], specs, console)
    _print_agreement(report, console)
    console.print(f"comparison written to {folder}/")
    return folder, report


def _print_agreement(report: dict, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"agreement with {report['reference']} ({report['n_items']} items, T={report['T']})")
    for column in ("backend", "predictions equal (mean / min over steps)", "spike counts equal per population",
                   "neurons with equal counts", "max |readout diff|", "wall per item", "build"):
        table.add_column(column)
    for spec, entry in report["backends"].items():
        agreement = entry["agreement_with_reference"]
        counts = ", ".join(f"{name} {v['equal_fraction']:.4%}" for name, v in agreement["spike_counts"].items())
        neurons = agreement.get("neuron_counts", {}).get("all")
        predictions = f"{agreement['prediction_agreement_mean']:.4f} / {agreement['prediction_agreement_min']:.4f}"
        table.add_row(spec, predictions, counts, "n/a" if neurons is None else f"{neurons['equal_fraction']:.4%}",
                      f"{agreement['max_readout_difference']:.3g}",
                      f"{entry['wall_time_per_item_s'] * 1e3:.2f} ms", f"{entry['build_s']:.2f} s")
    console.print(table)
