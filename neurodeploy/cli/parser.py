"""The command line's parser: shared flag groups, each backend's own options as its own group (built from
the options the backend declares), choices imported from the modules that own them, and usage errors
as one line with exit status 2. Only the chosen subcommand's flags are built, and each group imports
what owns its choices when it is built, so ``neurodeploy evaluate`` imports neither torch nor a
simulator."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from neurodeploy.errors import NeurodeployError

DESCRIPTION = ("Convert trained PyTorch networks into spiking neural networks, run them on a reference simulator "
               "(gpu), NEURON (neuron) or SpiNNaker (spinnaker), and measure them with anytime metrics.")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (and exit status 2)."""

    def error(self, message: str):
        sys.stderr.write(f"error: {self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _backend_options() -> dict[str, list]:
    """flag -> [(backend, Option)] over every loadable backend's command-line options."""
    from neurodeploy.backends import available_backends, backend_class

    flags: dict[str, list] = defaultdict(list)
    for name in sorted(available_backends()):
        try:
            cls = backend_class(name)
        except NeurodeployError:
            continue  # a backend whose package is broken offers no flags; `neurodeploy backends` says why
        for option in cls.options:
            if option.cli:
                flags[option.flag].append((name, option))
    return flags


def add_backend_option_groups(parser: argparse.ArgumentParser) -> None:
    """One group per backend with the options only it declares, one for options several declare (each
    backend checks the value against its own choices)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag, owners in _backend_options().items():
        names = [name for name, _ in owners]
        title = f"{names[0]} backend options" if len(names) == 1 else f"options of the {', '.join(names)} backends"
        group = groups.setdefault(title, parser.add_argument_group(title))
        first = owners[0][1]
        if len(owners) == 1:
            text = first.help + ("" if first.default is None else f" (default: {first.default})")
            choices = first.choices
        else:
            text = "; ".join(f"{name}: {o.help}" + ("" if o.default is None else f" (default: {o.default})")
                             for name, o in owners)
            choices = tuple(dict.fromkeys(c for _, o in owners for c in (o.choices or ())))
        kind = first.kind if first.kind in (int, float, str) else str
        metavar = None if choices else {int: "N", float: "X"}.get(kind, first.name.upper())
        group.add_argument(flag, dest=f"backend_option_{first.name}", type=kind, choices=choices or None,
                           metavar=metavar, default=None, help=text)


def _model_group(parser: argparse.ArgumentParser, epochs: bool = True) -> None:
    from neurodeploy.train.zoo import ARCHITECTURES

    group = parser.add_argument_group("model and data")
    group.add_argument("--arch", default="dense_mnist", choices=sorted(ARCHITECTURES),
                       help="zoo architecture trained here when no --model is given (default: %(default)s)")
    group.add_argument("--model", help="model file written by `neurodeploy train` (default: train --arch here)")
    group.add_argument("--data", help="dataset folder: torchvision's raw/ IDX layout or CIFAR python "
                       "(default: the embedded MNIST subset)")
    if epochs:
        group.add_argument("--epochs", type=int, default=15, help="training epochs when the model is trained here "
                           "(default: %(default)s)")
    group.add_argument("--seed", type=int, default=0, help="seeds training, conversion and the evaluation's random "
                       "splits (default: %(default)s)")


def _conversion_group(parser: argparse.ArgumentParser) -> None:
    from neurodeploy.convert.converter import CONVERSIONS, DEFAULT_PERCENTILE
    from neurodeploy.convert.statistics import GRANULARITIES
    from neurodeploy.ir.population import VINIT_NAMES
    from neurodeploy.jobs.config import RESETS

    group = parser.add_argument_group("conversion")
    group.add_argument("--conversion", default="rate", choices=CONVERSIONS,
                       help="rate: normalized ReLU net; qcfs/qffs: quantized activations, fine-tuned here "
                       "(default: %(default)s)")
    group.add_argument("--normalization", default="percentile", choices=sorted(DEFAULT_PERCENTILE),
                       help="activation scale: max, percentile of non-zero activations, or of all activations "
                       "(default: %(default)s)")
    group.add_argument("--percentile", type=float,
                       help="percentile p in (0, 100] (default: 99.9; 99.0 for percentile_all)")
    group.add_argument("--granularity", choices=GRANULARITIES,
                       help="one scale per layer or per channel (default: layer; neuron with --optimize)")
    group.add_argument("--reset", default="subtract", choices=RESETS,
                       help="after a spike: subtract the threshold or set v to 0 (default: %(default)s)")
    group.add_argument("--v-init", choices=VINIT_NAMES, help="initial membrane: 0, theta/2, or uniform in "
                       "[0, theta) (seeded) (default: zero; half with --optimize)")
    group.add_argument("--calibration-samples", type=int, default=2000,
                       help="training items for activation statistics (default: %(default)s)")
    group.add_argument("--quant-bits", type=int, default=2, help="activation bits for qcfs/qffs (default: %(default)s)")
    group.add_argument("--quant-epochs", type=int, default=5,
                       help="quantization fine-tuning epochs for qcfs/qffs (default: %(default)s)")
    group.add_argument("--max-fan-in", type=int,
                       help="fan-in pass: pool dense inputs (fine-tuning the model) and split pooling into pool "
                       "populations until no neuron has more synapses; 0 turns it off (default: what the backend "
                       "requires: 256 for SpiNNaker targets, none otherwise)")
    group.add_argument("--fan-in-epochs", type=int, default=3,
                       help="fine-tuning epochs after the fan-in pooling (default: %(default)s)")


def _simulation_group(parser: argparse.ArgumentParser, samples_default: int | None, T_default: int,
                      early_exit: bool = False) -> None:
    from neurodeploy.backends.base import ENCODINGS

    group = parser.add_argument_group("simulation")
    group.add_argument("-T", "--steps", dest="T", type=int, default=T_default,
                       help="time steps of 1 ms (default: %(default)s)")
    group.add_argument("--samples", type=int, default=samples_default,
                       help="use only the first N test items (default: " +
                       ("all" if samples_default is None else "%(default)s") + ")")
    group.add_argument("--batch-size", type=int, default=500,
                       help="items simulated together, and checkpointed (default: %(default)s)")
    group.add_argument("--encoding", default="analog", choices=ENCODINGS,
                       help="input: analog current, deterministic IF spikes, or Poisson spikes (default: %(default)s)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    if early_exit:
        group.add_argument("--exit", help="early exit in the simulator: confidence (threshold picked on the DC "
                           "validation part) or confidence:C; reruns the DC test part with exit and reports the saving")


def _dynamic_confidence_group(parser: argparse.ArgumentParser) -> None:
    from neurodeploy.evaluate.dynamic_confidence import PICK_RULES

    group = parser.add_argument_group("Dynamic Confidence (early exit)")
    group.add_argument("--dc-alpha", default="T", help="temperature: T, fit, bits:B or a positive number "
                       "(default: %(default)s)")
    group.add_argument("--dc-tolerance", type=float, default=0.0,
                       help="accuracy loss allowed when picking the threshold (default: %(default)s)")
    group.add_argument("--dc-validation-fraction", type=float, default=0.5,
                       help="fraction of the test items used to pick the threshold, in (0, 1) (default: %(default)s)")
    group.add_argument("--dc-rule", default="stable", choices=PICK_RULES,
                       help="threshold pick rule: stable or fastest (default: %(default)s)")


def _optimization_group(parser: argparse.ArgumentParser, switch: bool) -> None:
    from neurodeploy.optimize.optimizer import METHODS

    group = parser.add_argument_group("anytime optimizations (Dutson et al.)")
    if switch:
        group.add_argument("--optimize", action="store_true",
                           help="sparsity fine-tuning, per-channel scales optimized for L_SNN on held-out training "
                           "items, half-threshold initial membrane")
    group.add_argument("--optimize-method", default="coarse_to_fine", choices=METHODS,
                       help="staged SUBPLEX over tied channel groups, or SUBPLEX over every channel "
                       "(default: %(default)s)")
    group.add_argument("--optimize-evals", type=int, default=250, help="simulations (default: %(default)s)")
    group.add_argument("--optimize-T", type=int, help="steps per optimization simulation (default: -T)")
    group.add_argument("--optimize-items", type=int, default=800,
                       help="held-out training items simulated per evaluation (default: %(default)s)")
    group.add_argument("--lambda-e", type=float, default=200.0,
                       help="weight of (1 - peak accuracy) in L_SNN (paper: 200 MNIST, 50 CIFAR) "
                       "(default: %(default)s)")
    group.add_argument("--no-sparsity", action="store_true", help="skip sparsity fine-tuning (phase 1)")


def _output_group(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--results-dir", default="results", help="folder of run folders and the model cache "
                       "(default: %(default)s)")
    group.add_argument("--run-id", help="run folder name; an unfinished run of that name resumes (default: date, "
                       "time and backend)")


def _backend_flag(parser: argparse.ArgumentParser) -> None:
    from neurodeploy.backends import available_backends

    parser.add_argument("--backend", default="gpu", choices=sorted(available_backends()),
                        help="where the network runs (default: %(default)s; `neurodeploy backends` lists them)")


HELP = {
    "run": "train or load a model, convert it, simulate it and evaluate it",
    "optimize": "sparsity fine-tuning + conversion + formal scale optimization; writes the optimized IR",
    "compare": "run one converted network on several backends and compare them",
    "train": "train a zoo architecture and write a model file",
    "convert": "convert a model file into an IR file",
    "info": "print populations, neurons, synapses and fan-in/out of an IR file",
    "evaluate": "evaluate and overlay saved results (result.npz)",
    "export": "write an IR file in an interchange format (NIR) for other simulators and chips",
    "backends": "list installed backends and their options",
}


def _run_flags(run: argparse.ArgumentParser) -> None:
    _backend_flag(run)
    _model_group(run)
    _conversion_group(run)
    _simulation_group(run, None, 100, early_exit=True)
    _dynamic_confidence_group(run)
    _optimization_group(run, switch=True)
    _output_group(run)
    add_backend_option_groups(run)


def _optimize_flags(optimize: argparse.ArgumentParser) -> None:
    optimize.add_argument("--out", required=True, help="IR file to write: a .zip archive or a folder")
    _backend_flag(optimize)
    _model_group(optimize)
    _conversion_group(optimize)
    optimize.add_argument("-T", "--steps", dest="T", type=int, default=100,
                          help="time steps of the anytime metrics (default: %(default)s)")
    optimize.add_argument("--no-progress", action="store_true", help="no progress bars")
    _optimization_group(optimize, switch=False)
    _output_group(optimize)
    add_backend_option_groups(optimize)


def _compare_flags(compare: argparse.ArgumentParser) -> None:
    compare.add_argument("--backends", default="gpu:pynn,neuron",
                         help="comma-separated backends, NAME or NAME:PROFILE; the first is the reference "
                         "(default: %(default)s)")
    _model_group(compare)
    _conversion_group(compare)
    _simulation_group(compare, 20, 50)
    _dynamic_confidence_group(compare)
    _output_group(compare)
    add_backend_option_groups(compare)


def _train_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument("--out", required=True, help="model file to write (.pt)")
    _model_group(train)
    group = train.add_argument_group("training")
    group.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=64, help="SGD batch size (default: %(default)s)")
    group.add_argument("--init", help="start from this model file instead of training from scratch")
    group.add_argument("--quantize-bits", type=int,
                       help="then fine-tune with B-bit quantized activations (QCFS/QFFS)")
    group.add_argument("--quant-epochs", type=int, default=5, help="quantization fine-tuning epochs "
                       "(default: %(default)s)")
    group.add_argument("--finetune-sparsity", action="store_true",
                       help="then fine-tune for activation and weight sparsity and prune (Dutson et al. phase 1)")
    group.add_argument("--sparsity-epochs", type=int, default=6, help="sparsity epochs (default: %(default)s)")
    group.add_argument("--lambda-a", type=float, default=10.0, help="activation penalty weight (default: %(default)s)")
    group.add_argument("--lambda-w", type=float, default=50.0, help="weight penalty weight (default: %(default)s)")
    group.add_argument("--prune", type=float, default=5e-3,
                       help="weights with |w| below this become 0 (default: %(default)s)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")



def _convert_flags(convert: argparse.ArgumentParser) -> None:
    convert.add_argument("model", help="model file written by `neurodeploy train`")
    convert.add_argument("--out", required=True, help="IR file: a .zip archive or a folder")
    convert.add_argument("--data", help="dataset folder for calibration (default: the embedded MNIST subset)")
    convert.add_argument("--seed", type=int, default=0, help="seeds the conversion (default: %(default)s)")
    convert.add_argument("--results-dir", default="results", help="model cache folder's parent "
                         "(default: %(default)s)")
    convert.add_argument("--no-progress", action="store_true", help="no progress bars")
    _conversion_group(convert)



def _info_flags(info: argparse.ArgumentParser) -> None:
    info.add_argument("ir", help="IR file (.zip archive or folder)")


def _export_flags(export: argparse.ArgumentParser) -> None:
    from neurodeploy.ir.nir import DIALECTS

    export.add_argument("ir", help="IR file written by convert, optimize or run (.zip archive or folder)")
    export.add_argument("out", help="file to write (.nir)")
    export.add_argument("--to", default="nir", choices=("nir",), help="format (default: %(default)s)")
    export.add_argument("--dialect", default="nir", choices=DIALECTS,
                        help="nir: every node and the metadata of docs/nir.md; sinabs: only what sinabs.from_nir "
                        "imports (default: %(default)s)")
    export.add_argument("--fold-thresholds", action="store_true",
                        help="threshold 1 everywhere, thresholds folded into the weights (importers that take one "
                        "threshold or unit spikes)")
    export.add_argument("--delays", action="store_true",
                        help="one-step Delay nodes on every projection (the pynn profile's timing)")
    export.add_argument("--reference", type=int, default=0, metavar="N",
                        help="embed a reference trace of the first N test items of --data, so the receiver can "
                        "check itself (default: none)")
    export.add_argument("--data", help="dataset folder for --reference (default: the embedded MNIST subset)")
    export.add_argument("-T", "--steps", dest="T", type=int, default=50,
                        help="steps of the reference trace (default: %(default)s)")


def _evaluate_flags(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("results", nargs="+", help="result.npz files")
    evaluate.add_argument("--labels", help="comma-separated labels (default: backend and folder names)")
    evaluate.add_argument("--ann-accuracy", type=float, help="a* when the result does not record it")
    evaluate.add_argument("--out", default="evaluation", help="folder for the JSON and plots (default: %(default)s)")
    evaluate.add_argument("--seed", type=int, default=0, help="seeds the DC validation split (default: %(default)s)")
    _dynamic_confidence_group(evaluate)



FLAGS = {"run": _run_flags, "optimize": _optimize_flags, "compare": _compare_flags, "train": _train_flags,
         "convert": _convert_flags, "info": _info_flags, "evaluate": _evaluate_flags, "export": _export_flags,
         "backends": lambda p: None}


def build_parser(command: str | None = None) -> Parser:
    """The parser with every subcommand listed and the flags of ``command`` (None: of all of them)."""
    from neurodeploy import __version__

    parser = Parser(prog="neurodeploy", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"neurodeploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, help_text in HELP.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if command in (None, name) or command not in HELP:
            FLAGS[name](subparser)
    return parser


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a flag), if any."""
    return next((word for word in argv if not word.startswith("-")), None)
