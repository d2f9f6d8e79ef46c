"""``neurodeploy`` command line: run, optimize, train, convert, info, evaluate, compare, backends."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from neurodeploy.errors import NeurodeployError

# Pipes and log files get a wide console so tables are not squeezed; terminals use their own width.
console = Console(width=None if sys.stdout.isatty() else 160)


def _add_conversion_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="dataset folder (IDX raw/ layout or CIFAR python); default: embedded MNIST")
    parser.add_argument("--normalization", default="percentile", choices=["max", "percentile", "percentile_all"],
                        help="activation scale: max, percentile of non-zero activations, or of all activations")
    parser.add_argument("--percentile", type=float, help="percentile p (default 99.9; 99.0 for percentile_all)")
    parser.add_argument("--granularity", choices=["layer", "neuron"],
                        help="one scale per layer, or per channel/neuron (default: layer; neuron with optimization)")
    parser.add_argument("--reset", default="subtract", choices=["subtract", "zero"])
    parser.add_argument("--v-init", choices=["zero", "half", "uniform"],
                        help="initial membrane: 0, theta/2, or uniform in [0, theta) (seeded); default: zero, "
                        "half with optimization")
    parser.add_argument("--calibration-samples", type=int, default=2000,
                        help="training items used for activation statistics")
    parser.add_argument("--conversion", default="rate", choices=["rate", "qcfs", "qffs"],
                        help="rate: normalized ReLU net; qcfs/qffs: quantized activations (run fine-tunes them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-fan-in", type=int,
                        help="fan-in pass: pool the inputs of dense layers (fine-tuning the model) and split pooling "
                             "into pool populations until no neuron has more synapses; default: 256 for SpiNNaker "
                             "targets, none otherwise; 0 turns the pass off")
    parser.add_argument("--fan-in-epochs", type=int, default=3, help="fine-tuning epochs after the fan-in pooling")


def _add_quantization_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quant-bits", type=int, default=2, help="activation bits for qcfs/qffs")
    parser.add_argument("--quant-epochs", type=int, default=5, help="quantization fine-tuning epochs for qcfs/qffs")


def _conversion_settings(args) -> dict:
    """The JobConfig fields of the conversion, quantization and fan-in flags (run, optimize, compare)."""
    return {"data": args.data, "normalization": args.normalization, "percentile": args.percentile,
            "granularity": args.granularity, "reset": args.reset, "v_init": args.v_init, "seed": args.seed,
            "calibration_samples": args.calibration_samples, "conversion": args.conversion,
            "quant_bits": args.quant_bits, "quant_epochs": args.quant_epochs, "max_fan_in": args.max_fan_in,
            "fan_in_epochs": args.fan_in_epochs}


def _add_optimization_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimize-method", default="coarse_to_fine", choices=["coarse_to_fine", "subplex"],
                        help="coarse_to_fine (staged SUBPLEX over tied channel groups) or subplex (every channel)")
    parser.add_argument("--optimize-evals", type=int, default=250, help="simulations of the optimization set")
    parser.add_argument("--optimize-T", type=int, help="steps per optimization simulation (default: -T)")
    parser.add_argument("--optimize-items", type=int, help="use only N held-out training items (default: all 800)")
    parser.add_argument("--lambda-e", type=float, default=200.0,
                        help="weight of (1 - peak accuracy) in L_SNN (paper: 200 MNIST, 50 CIFAR)")
    parser.add_argument("--no-sparsity", action="store_true", help="skip sparsity fine-tuning (phase 1)")


def _optimization_settings(args) -> dict:
    return {"optimize_method": args.optimize_method, "optimize_evals": args.optimize_evals,
            "optimize_T": args.optimize_T, "optimize_items": args.optimize_items, "lambda_e": args.lambda_e,
            "sparsity": not args.no_sparsity}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurodeploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train or load a model, convert it, simulate it and evaluate it")
    run.add_argument("--backend", default="gpu", help="backend name (see `neurodeploy backends`)")
    run.add_argument("--arch", default="dense_mnist", help="zoo architecture when no --model is given")
    run.add_argument("--model", help="model file written by `neurodeploy train`")
    run.add_argument("--T", "-T", type=int, default=100, help="time steps")
    run.add_argument("--batch-size", type=int, default=500)
    run.add_argument("--samples", type=int, help="use only the first N test items")
    run.add_argument("--epochs", type=int, default=15, help="training epochs when the model is trained here")
    run.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    run.add_argument("--profile", choices=["ideal", "pynn", "spinnaker", "exact", "standard"],
                     help="gpu backend semantics (default ideal): zero delay; one-step delay per projection (PyNN "
                          "machines); or SpiNNaker's cell and arithmetic (hard reset, leak, S16.15, 16-bit ring "
                          "buffers), which predicts the board's accuracy. neuron backend cell (default exact): "
                          "the exact NL-IAF NMODL cell, or PyNN's standard IF_curr_exp")
    run.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    run.add_argument("--encoding", default="analog", choices=["analog", "if", "poisson"])
    run.add_argument("--results-dir", default="results")
    run.add_argument("--run-id", help="folder name under --results-dir; an unfinished run of that name resumes")
    run.add_argument("--dc-alpha", default="T", help="Dynamic Confidence temperature: T, fit, bits:B or a number")
    run.add_argument("--dc-tolerance", type=float, default=0.0, help="accuracy loss allowed when picking c")
    run.add_argument("--dc-validation-fraction", type=float, default=0.5,
                     help="fraction of the test items used to pick the DC threshold")
    run.add_argument("--dc-rule", default="stable", choices=["stable", "fastest"],
                     help="threshold pick rule (see neurodeploy.evaluate.dynamic_confidence.choose_threshold)")
    run.add_argument("--exit", help="early exit in the simulator: 'confidence' (threshold picked on the DC "
                     "validation part) or 'confidence:C'; reruns the DC test part with exit and reports the saving")
    run.add_argument("--workers", type=int, help="neuron backend: worker processes (default: all cores)")
    run.add_argument("--hardware-config", help="spinnaker backend: a .cfg from hardware_configs/spinnaker/ "
                     "(default: the virtual SpiNN-5 board)")
    run.add_argument("--neurons-per-core", type=int, default=128, help="spinnaker backend: at most 256")
    run.add_argument("--chunk", type=int, help="steps per chunk (1 = step-major streaming; default from memory budget)")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--optimize", action="store_true",
                     help="Dutson et al.'s three phases: sparsity fine-tuning, neuron-level scales optimized for "
                     "L_SNN on held-out training items, half-threshold initial membrane")
    _add_conversion_flags(run)
    _add_quantization_flags(run)
    _add_optimization_flags(run)

    optimize = sub.add_parser("optimize", help="sparsity fine-tuning + conversion + formal scale optimization; "
                              "writes the optimized IR")
    optimize.add_argument("--arch", default="dense_mnist")
    optimize.add_argument("--model", help="model file written by `neurodeploy train`")
    optimize.add_argument("--out", required=True, help="IR file to write: a .zip archive or a folder")
    optimize.add_argument("--T", "-T", type=int, default=100, help="time steps of the anytime metrics")
    optimize.add_argument("--epochs", type=int, default=15)
    optimize.add_argument("--results-dir", default="results")
    optimize.add_argument("--run-id", help="folder for the report and the replay log; the same id resumes")
    optimize.add_argument("--device")
    optimize.add_argument("--no-progress", action="store_true")
    _add_conversion_flags(optimize)
    _add_quantization_flags(optimize)
    _add_optimization_flags(optimize)

    train = sub.add_parser("train", help="train a zoo architecture and write a model file")
    train.add_argument("--arch", default="dense_mnist")
    train.add_argument("--data")
    train.add_argument("--epochs", type=int, default=15)
    train.add_argument("--lr", type=float, default=0.05)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="model file to write (.pt)")
    train.add_argument("--quantize-bits", type=int, help="then fine-tune with B-bit quantized activations (QCFS/QFFS)")
    train.add_argument("--init", help="start from this model file instead of training from scratch")
    train.add_argument("--finetune-sparsity", action="store_true",
                       help="then fine-tune for activation and weight sparsity and prune (Dutson et al. phase 1)")
    train.add_argument("--sparsity-epochs", type=int, default=6)
    train.add_argument("--lambda-a", type=float, default=10.0, help="activation penalty weight")
    train.add_argument("--lambda-w", type=float, default=50.0, help="weight penalty weight")
    train.add_argument("--prune", type=float, default=5e-3, help="weights with |w| below this become 0")
    train.add_argument("--quant-epochs", type=int, default=5)
    train.add_argument("--no-progress", action="store_true")

    conv = sub.add_parser("convert", help="convert a model file into an IR file")
    conv.add_argument("model", help="model file written by `neurodeploy train`")
    conv.add_argument("--out", required=True, help="IR file: a .zip archive or a folder")
    _add_conversion_flags(conv)

    info = sub.add_parser("info", help="print populations, neurons, synapses and fan-in/out of an IR file")
    info.add_argument("ir")

    evaluate = sub.add_parser("evaluate", help="evaluate and overlay saved results (result.npz)")
    evaluate.add_argument("results", nargs="+")
    evaluate.add_argument("--labels", help="comma-separated labels (default: backend/folder names)")
    evaluate.add_argument("--ann-accuracy", type=float, help="a* when the result does not record it")
    evaluate.add_argument("--out", default="evaluation", help="folder for the table, JSON, CSV and plots")
    evaluate.add_argument("--dc-alpha", default="T")
    evaluate.add_argument("--dc-tolerance", type=float, default=0.0)
    evaluate.add_argument("--dc-validation-fraction", type=float, default=0.5)
    evaluate.add_argument("--dc-rule", default="stable", choices=["stable", "fastest"])
    evaluate.add_argument("--seed", type=int, default=0)

    compare = sub.add_parser("compare", help="run one converted network on several backends and compare them")
    compare.add_argument("--backends", default="gpu:pynn,neuron",
                         help="comma-separated; the first is the reference; gpu:PROFILE picks a profile")
    compare.add_argument("--arch", default="dense_mnist")
    compare.add_argument("--model")
    compare.add_argument("--samples", type=int, default=20)
    compare.add_argument("--T", "-T", type=int, default=50)
    compare.add_argument("--batch-size", type=int, default=500)
    compare.add_argument("--epochs", type=int, default=15)
    compare.add_argument("--workers", type=int)
    compare.add_argument("--results-dir", default="results")
    compare.add_argument("--run-id")
    compare.add_argument("--no-progress", action="store_true")
    _add_conversion_flags(compare)
    _add_quantization_flags(compare)

    sub.add_parser("backends", help="list installed backends")
    return parser


def cmd_run(args) -> None:
    from neurodeploy.pipeline import JobConfig, run_job

    config = JobConfig(
        backend=args.backend, arch=args.arch, model=args.model, T=args.T, batch_size=args.batch_size,
        samples=args.samples, device=args.device, profile=args.profile, precision=args.precision,
        encoding=args.encoding, epochs=args.epochs, results_dir=args.results_dir, run_id=args.run_id,
        dc_alpha=args.dc_alpha, dc_tolerance=args.dc_tolerance, dc_validation_fraction=args.dc_validation_fraction,
        dc_rule=args.dc_rule, progress=not args.no_progress, chunk=args.chunk, exit=args.exit,
        workers=args.workers, hardware_config=args.hardware_config, neurons_per_core=args.neurons_per_core,
        optimize=args.optimize, **_conversion_settings(args), **_optimization_settings(args),
    )
    run_job(config, console)


def cmd_optimize(args) -> None:
    from neurodeploy.pipeline import JobConfig, optimize_job

    config = JobConfig(
        arch=args.arch, model=args.model, T=args.T, device=args.device, epochs=args.epochs,
        results_dir=args.results_dir, run_id=args.run_id or f"optimize-{Path(args.out).stem}",
        progress=not args.no_progress, optimize=True, **_conversion_settings(args), **_optimization_settings(args),
    )
    optimize_job(config, args.out, console)


def cmd_compare(args) -> None:
    from neurodeploy.pipeline import JobConfig, compare_backends

    config = JobConfig(
        arch=args.arch, model=args.model, T=args.T, batch_size=args.batch_size, samples=args.samples,
        epochs=args.epochs, results_dir=args.results_dir,
        run_id=args.run_id or f"compare-{args.backends.replace(',', '_').replace(':', '-')}",
        progress=not args.no_progress, workers=args.workers, **_conversion_settings(args),
    )
    compare_backends(config, args.backends.split(","), console)


def cmd_train(args) -> None:
    from neurodeploy.data import load_dataset
    from neurodeploy.train import TrainConfig, build, evaluate_accuracy, load_model, save_model, train_model

    dataset = load_dataset(args.data)
    if args.init:
        model, info = load_model(args.init)
        args.arch, record = info["arch"], dict(info.get("record", {}))
    else:
        model = build(args.arch, dataset.input_shape, dataset.n_classes, seed=args.seed)
        config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
        record = train_model(model, dataset.train, config, progress=not args.no_progress)
    if args.finetune_sparsity:
        from neurodeploy.train.sparsity import SparsityConfig, finetune_sparsity

        sparsity = SparsityConfig(epochs=args.sparsity_epochs, lambda_a=args.lambda_a, lambda_w=args.lambda_w,
                                  prune_threshold=args.prune, seed=args.seed)
        record["sparsity"] = finetune_sparsity(model, dataset.train, sparsity, progress=not args.no_progress)
        _print_sparsity(record["sparsity"])
    if args.quantize_bits:
        from neurodeploy.train.quantized import finetune_quantized

        model, record = finetune_quantized(model, dataset.train, args.quantize_bits,
                                           TrainConfig(epochs=args.quant_epochs, lr=0.01, seed=args.seed),
                                           progress=not args.no_progress)
    record["test_accuracy"] = evaluate_accuracy(model, dataset.test)
    save_model(args.out, model, args.arch, dataset.input_shape, dataset.n_classes, record, args.quantize_bits)
    console.print(f"{args.arch}: best validation accuracy {record['val_accuracy']:.4f} (epoch "
                  f"{record['best_epoch']}), test accuracy {record['test_accuracy']:.4f}; wrote {args.out}")


def _print_sparsity(report: dict) -> None:
    table = Table(title="sparsity fine-tuning (validation part of the training split)")
    for column in ("", "accuracy", "S_a", "S_w", "S_c"):
        table.add_column(column)
    for when in ("before", "after"):
        r = report[when]
        table.add_row(when, f"{r['accuracy']:.4f}", f"{r['activation_sparsity']:.4f}", f"{r['weight_sparsity']:.4f}",
                      f"{r['combined_sparsity']:.4f}")
    console.print(table)


def cmd_convert(args) -> None:
    from neurodeploy.convert import convert
    from neurodeploy.data import load_dataset
    from neurodeploy.ir import save_network
    from neurodeploy.pipeline import JobConfig, finish_fan_in_pass, obtain_fan_in_model
    from neurodeploy.train import load_model

    model, info = load_model(args.model)
    dataset = load_dataset(args.data)
    job = JobConfig(model=args.model, data=args.data, seed=args.seed, conversion=args.conversion,
                    max_fan_in=args.max_fan_in, fan_in_epochs=args.fan_in_epochs)
    model, _, changes = obtain_fan_in_model(model, info["arch"], job, dataset, console)
    network = convert(model, dataset.train.images[: args.calibration_samples], args.normalization,
                      args.percentile, args.granularity or "layer", args.reset, args.v_init or "zero", args.seed,
                      conversion=args.conversion)
    finish_fan_in_pass(network, changes, job, console)
    save_network(network, args.out)
    console.print(f"converted {info['arch']} ({len(network.populations)} populations) -> {args.out}")


def cmd_info(args) -> None:
    from neurodeploy.ir import load_network, network_summary

    network = load_network(args.ir)
    table = Table(title=f"{args.ir}")
    rows = network_summary(network)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    neurons = sum(r["neurons"] for r in rows if r["role"] != "input")
    console.print(f"{neurons} neurons, {sum(r['synapses_in'] for r in rows)} synapses; "
                  f"metadata: {network.metadata}")


def cmd_evaluate(args) -> None:
    from neurodeploy.evaluate.report import plot_reports, print_comparison, summarize, write_summary
    from neurodeploy.evaluate.result import SimulationResult

    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(args.results):
        raise NeurodeployError(f"{len(labels)} labels for {len(args.results)} results")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i, path in enumerate(args.results):
        result = SimulationResult.load(path)
        ann = args.ann_accuracy if args.ann_accuracy is not None else result.metadata.get("ann_accuracy")
        if ann is None:
            raise NeurodeployError(f"{path} records no ANN accuracy; pass --ann-accuracy")
        summary, arrays = summarize(result, ann, args.dc_alpha, args.dc_tolerance, args.dc_validation_fraction,
                                    args.seed, dc_rule=args.dc_rule)
        label = labels[i] if labels else f"{result.metadata.get('backend', '?')}:{Path(path).parent.name}"
        runs.append((label, summary, arrays))
    print_comparison([s for _, s, _ in runs], [label for label, _, _ in runs], console)
    write_summary(out / "evaluation.json", {label: summary for label, summary, _ in runs})
    plot_reports(out, runs)
    console.print(f"evaluation written to {out}/")


def cmd_backends(args) -> None:
    from neurodeploy.backends import available_backends

    for name, target in sorted(available_backends().items()):
        console.print(f"{name:12s} {target}")


COMMANDS = {"run": cmd_run, "optimize": cmd_optimize, "compare": cmd_compare,
            "train": cmd_train, "convert": cmd_convert, "info": cmd_info,
            "evaluate": cmd_evaluate, "backends": cmd_backends}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except NeurodeployError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; run again with the same --run-id to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
