"""The subcommands: each turns its arguments into validated settings, calls a job, and leaves the
showing to ``render``."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurodeploy.cli.render import comparison_table, console, metadata_table, render, sparsity_table
from neurodeploy.errors import ConfigError, NeurodeployError
from neurodeploy.jobs.events import Event


def cmd_run(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from neurodeploy.cli import settings
    from neurodeploy.jobs.config import JobConfig
    from neurodeploy.jobs.folders import run_folder
    from neurodeploy.jobs.run import run_job

    config = JobConfig(backend=args.backend, backend_options=settings.backend_options(args),
                       model=settings.model(args), **settings.conversion(args),
                       optimization=settings.optimization(args, args.optimize), run=settings.run(args),
                       evaluation=settings.evaluation(args), nir_import=settings.nir_import(args),
                       results_dir=args.results_dir, run_id=args.run_id, cache_dir=args.cache_dir)
    args.run_id = run_folder(config).name  # fixed now, so that an interrupted run can name the id that resumes it
    run_job(replace(config, run_id=args.run_id), render)


def cmd_diagnose(args: argparse.Namespace) -> None:
    from neurodeploy.cli import settings
    from neurodeploy.jobs.config import JobConfig
    from neurodeploy.jobs.diagnosis import diagnose_job

    config = JobConfig(backend=args.backend, backend_options=settings.backend_options(args),
                       model=settings.model(args), **settings.conversion(args), run=settings.run(args),
                       results_dir=args.results_dir, run_id=args.run_id,
                       cache_dir=args.cache_dir)
    diagnose_job(config, render)


def cmd_optimize(args: argparse.Namespace) -> None:
    from neurodeploy.cli import settings
    from neurodeploy.jobs.config import JobConfig, RunSettings
    from neurodeploy.jobs.optimize import optimize_job

    config = JobConfig(backend=args.backend, backend_options=settings.backend_options(args),
                       model=settings.model(args),
                       **settings.conversion(args), optimization=settings.optimization(args, True),
                       run=RunSettings(T=args.T, progress=not args.no_progress), results_dir=args.results_dir,
                       run_id=args.run_id or f"optimize-{Path(args.out).stem}", cache_dir=args.cache_dir)
    args.run_id = config.run_id
    optimize_job(config, args.out, render)


def cmd_compare(args: argparse.Namespace) -> None:
    from neurodeploy.cli import settings
    from neurodeploy.jobs.compare import compare_backends
    from neurodeploy.jobs.config import JobConfig

    specs = args.backends.split(",")
    config = JobConfig(model=settings.model(args), **settings.conversion(args), run=settings.run(args),
                       evaluation=settings.evaluation(args), nir_import=settings.nir_import(args),
                       results_dir=args.results_dir, cache_dir=args.cache_dir,
                       run_id=args.run_id or f"compare-{args.backends.replace(',', '_').replace(':', '-')}")
    compare_backends(config, specs, settings.backend_options(args), render)


def cmd_train(args: argparse.Namespace) -> None:
    from neurodeploy.cli import settings
    from neurodeploy.data import load_dataset
    from neurodeploy.jobs.checks import number, whole
    from neurodeploy.train import TrainConfig, build, evaluate_accuracy, load_model, save_model, train_model

    model_settings = settings.model(args)
    number("--lr", args.lr, 0, low_open=True)
    for flag, value in (("--lambda-a", args.lambda_a), ("--lambda-w", args.lambda_w), ("--prune", args.prune)):
        number(flag, value, 0)
    whole("--batch-size", args.batch_size, 1)
    whole("--quantize-bits", args.quantize_bits, 1, 8, optional=True)
    whole("--quant-epochs", args.quant_epochs, 1)
    whole("--sparsity-epochs", args.sparsity_epochs, 1)
    if args.init is not None and not Path(args.init).is_file():
        raise ConfigError(f"--init {args.init}: no such file")
    progress = not args.no_progress
    dataset = load_dataset(model_settings.data)
    if args.init:
        model, info = load_model(args.init)
        arch, record = info["arch"], dict(info.get("record", {}))
    else:
        arch = model_settings.arch
        model = build(arch, dataset.input_shape, dataset.n_classes, seed=args.seed)
        config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
        record = train_model(model, dataset.train, config, progress=progress)
    if args.finetune_sparsity:
        from neurodeploy.train.sparsity import SparsityConfig, finetune_sparsity

        sparsity = SparsityConfig(epochs=args.sparsity_epochs, lambda_a=args.lambda_a, lambda_w=args.lambda_w,
                                  prune_threshold=args.prune, seed=args.seed)
        record["sparsity"] = finetune_sparsity(model, dataset.train, sparsity, progress=progress)
        console.print(sparsity_table(record["sparsity"]))
    if args.quantize_bits:
        from neurodeploy.train.quantized import finetune_quantized

        model, record = finetune_quantized(model, dataset.train, args.quantize_bits,
                                           TrainConfig(epochs=args.quant_epochs, lr=0.01, seed=args.seed),
                                           progress=progress)
    record["test_accuracy"] = evaluate_accuracy(model, dataset.test)
    save_model(args.out, model, arch, dataset.input_shape, dataset.n_classes, record, args.quantize_bits)
    console.print(f"{arch}: best validation accuracy {record['val_accuracy']:.4f} (epoch "
                  f"{record['best_epoch']}), test accuracy {record['test_accuracy']:.4f}; wrote {args.out}")


def cmd_convert(args: argparse.Namespace) -> None:
    from neurodeploy.cli import settings
    from neurodeploy.jobs.config import JobConfig, RunSettings
    from neurodeploy.jobs.prepare import convert_job

    if not args.model and not args.model_class:
        raise ConfigError("convert needs the model: a file (torch.export program, model file, pickled module with "
                          "--trust-pickle) or --model-class FILE.py:Class --weights FILE")
    if args.model and not Path(args.model).is_file():  # named as given (positional), not as run's --model
        raise ConfigError(f"{args.model}: no such file (the model to convert)")
    config = JobConfig(model=settings.model(args), **settings.conversion(args),
                       run=RunSettings(T=args.T, progress=not args.no_progress), results_dir=args.results_dir,
                       cache_dir=args.cache_dir)
    convert_job(config, args.out, render)


def cmd_info(args: argparse.Namespace) -> None:
    from rich.table import Table

    from neurodeploy.cli import settings
    from neurodeploy.ir import network_summary
    from neurodeploy.jobs.prepare import read_network

    network = read_network(args.ir, settings.nir_import(args), render)
    table = Table(title=f"{args.ir}")
    rows = network_summary(network)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    neurons = sum(r["neurons"] for r in rows if r["role"] != "input")
    console.print(f"{neurons} neurons, {sum(r['synapses_in'] for r in rows)} synapses")
    console.print(metadata_table(network.metadata))


def _result_paths(paths: list[str]) -> list[tuple[Path, str]]:
    """(result file, default label) of every RUN argument: a result.npz file, a run folder holding
    result.npz, or a compare folder holding result_<backend>.npz files (one run per file)."""
    found = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            if (path / "result.npz").is_file():
                found.append((path / "result.npz", path.name))
                continue
            per_backend = sorted(path.glob("result_*.npz"))
            if not per_backend:
                raise ConfigError(f"{path}: a folder, but it holds no result.npz (nor result_<backend>.npz files of "
                                  "neurodeploy compare)")
            found += [(file, file.stem[len("result_"):] + ("" if len(paths) == 1 else f":{path.name}"))
                      for file in per_backend]
        elif path.is_file():
            found.append((path, path.parent.name if path.name == "result.npz" else path.stem.removeprefix("result_")))
        else:
            raise ConfigError(f"{path}: no such run folder or result file")
    return found


def _check_comparable(results: list, labels: list[str]) -> tuple[list[str], list[str]]:
    """(refusals, warnings): how the runs differ from the first in items (count or labels) and data set
    (refused unless --allow-mismatch), and in T (a warning: curves are overlaid up to each run's T)."""
    import numpy as np

    refusals, warnings = [], []
    first, name = results[0], labels[0]
    for result, label in zip(results[1:], labels[1:], strict=True):
        if result.n_items != first.n_items:
            refusals.append(f"{label} has {result.n_items} items, {name} {first.n_items}")
        elif not np.array_equal(result.labels, first.labels):
            differ = np.flatnonzero(result.labels != first.labels)
            refusals.append(f"{label} and {name} have {first.n_items} items each, but their labels differ at "
                            f"{differ.size} positions (first: item {int(differ[0])}): different items or order")
        data, data_first = result.metadata.get("dataset"), first.metadata.get("dataset")
        if data != data_first:
            refusals.append(f"{label} ran on data set {data!r}, {name} on {data_first!r}")
        if result.T != first.T:
            warnings.append(f"{label} ran {result.T} steps, {name} {first.T}: curves are overlaid up to each run's T, "
                            "and T-dependent numbers (accuracy at T, P_l, P_p, DC savings) are not comparable")
    return refusals, warnings


def _ann_operations(result, path: Path) -> None:
    """Adds the ANN's operation count (for the energy estimate) from the run folder's network.zip when
    the result does not record it (runs made before it was recorded)."""
    network_file = path.parent / "network.zip"
    if "ann_operations" in result.metadata or not network_file.is_file():
        return
    try:
        from neurodeploy.evaluate.energy import ann_operations
        from neurodeploy.ir import load_network
    except ImportError:  # reading an IR needs torch; without it the ANN's energy is not estimated
        return
    result.metadata["ann_operations"] = ann_operations(load_network(network_file))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from neurodeploy.cli.render import print_warning
    from neurodeploy.evaluate.dynamic_confidence import PICK_RULES, parse_alpha
    from neurodeploy.evaluate.plots import plot_reports
    from neurodeploy.evaluate.result import SimulationResult
    from neurodeploy.evaluate.summary import summarize, write_curves_table, write_json
    from neurodeploy.jobs.checks import choice, number, whole
    from neurodeploy.safe_io import check_output_folder

    alpha = parse_alpha(args.dc_alpha)
    number("--dc-tolerance", args.dc_tolerance, 0.0, 1.0)
    number("--dc-validation-fraction", args.dc_validation_fraction, 0.0, 1.0, low_open=True, high_open=True)
    choice("--dc-rule", args.dc_rule, PICK_RULES)
    whole("--seed", args.seed, 0)
    check_output_folder(args.out, "--out")
    found = _result_paths(args.results)
    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(found):
        raise ConfigError(f"{len(labels)} labels for {len(found)} runs ({', '.join(str(p) for p, _ in found)})")
    results = [SimulationResult.load(path) for path, _ in found]
    if not labels:
        labels = [name if file.name != "result.npz" else f"{result.metadata.get('backend', '?')}:{name}"
                  for result, (file, name) in zip(results, found, strict=True)]
    if len(set(labels)) != len(labels):
        labels = [f"{label} ({i + 1})" for i, label in enumerate(labels)]
    refusals, warnings = _check_comparable(results, labels)
    if refusals and not args.allow_mismatch:
        raise NeurodeployError("the runs cover different items or data sets: " + "; ".join(refusals) +
                               " (pass --allow-mismatch to overlay them anyway)")
    for message in refusals + warnings:
        print_warning(message)
    runs = []
    for (path, _), result, label in zip(found, results, labels, strict=True):
        ann = args.ann_accuracy if args.ann_accuracy is not None else result.metadata.get("ann_accuracy")
        if ann is None:
            raise NeurodeployError(f"{path} records no ANN accuracy; pass --ann-accuracy")
        _ann_operations(result, path)
        summary, arrays = summarize(result, ann, alpha, args.dc_tolerance, args.dc_validation_fraction, args.seed,
                                    dc_rule=args.dc_rule)
        runs.append((label, summary, arrays))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        from neurodeploy.safe_io import os_reason

        raise ConfigError(f"--out {out}: cannot create the folder ({os_reason(err)})") from None
    console.print(comparison_table([s for _, s, _ in runs], labels))
    write_json(out / "evaluation.json", {label: summary for label, summary, _ in runs})
    write_curves_table(out / "curves.csv", runs)
    plots = plot_reports(out, runs)
    render(Event("done", f"evaluation written to {out}/: evaluation.json (summaries), curves.csv (per-step "
                         f"accuracy, events and confidence of every run side by side), {len(plots)} plots (*.png)"))


def cmd_export(args: argparse.Namespace) -> None:
    from neurodeploy.cli import settings
    from neurodeploy.jobs.checks import whole
    from neurodeploy.jobs.prepare import read_network
    from neurodeploy.nir import write_nir

    whole("--reference", args.reference, 0)
    whole("-T/--steps", args.T, 1)
    if Path(args.out).resolve() == Path(args.ir).resolve():
        raise ConfigError(f"{args.out}: the file to write is the network read; name another file (.nir)")
    network = read_network(args.ir, settings.nir_import(args), render)
    reference = None
    if args.reference:
        from neurodeploy.data import load_dataset
        from neurodeploy.passes.fan_in import pool_inputs

        reference = pool_inputs(network, load_dataset(args.data).test.images[: args.reference])
    path = write_nir(network, args.out, fold_thresholds=args.fold_thresholds, delays=args.delays,
                     reference=reference, T=args.T if args.reference else None, dialect=args.dialect)
    trace = f", with a reference trace of {args.reference} items x {args.T} steps" if args.reference else ""
    console.print(f"wrote {path} (NIR, dialect {args.dialect}{trace})", highlight=False)


def cmd_backends(args: argparse.Namespace) -> None:
    from neurodeploy.backends import available_backends, backend_class
    from neurodeploy.ir.population import CONVERSION_FEATURES

    for name, target in sorted(available_backends().items()):
        try:
            cls = backend_class(name)
        except NeurodeployError as err:
            console.print(f"{name:10s} cannot be loaded: {err}", highlight=False, markup=False)
            continue
        options = ", ".join(o.flag for o in cls.options if o.cli) or "no options"
        missing = cls.missing_modules()
        state = f"missing {', '.join(missing)}: {cls.install_hint()}" if missing else "installed"
        features = ", ".join(f for f in CONVERSION_FEATURES if f in cls.neuron_features) or "none"
        console.print(f"{name:10s} {state}\n{'':10s} {target}  ({options})\n{'':10s} conversion features: {features}",
                      highlight=False, markup=False)


COMMANDS = {"run": cmd_run, "diagnose": cmd_diagnose, "optimize": cmd_optimize, "compare": cmd_compare,
            "train": cmd_train, "convert": cmd_convert, "info": cmd_info, "evaluate": cmd_evaluate,
            "export": cmd_export,
            "backends": cmd_backends}
