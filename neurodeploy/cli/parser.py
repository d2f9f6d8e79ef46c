"""The command line's parser: shared flag groups, each backend's own options as its own group (built from
the options the backend declares), choices imported from the modules that own them, and usage errors
as one line with exit status 2. Only the chosen subcommand's flags are built, and each group imports
what owns its choices when it is built, so ``neurodeploy evaluate`` imports neither torch nor a
simulator."""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections import defaultdict

from neurodeploy.errors import NeurodeployError, did_you_mean

DESCRIPTION = ("Convert trained PyTorch networks into spiking neural networks, run them on a reference simulator "
               "(gpu), NEURON (neuron), NEST (nest) or SpiNNaker (spinnaker), and measure them with anytime metrics.")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (and exit status 2), with "did you mean" for a
    mistyped flag or choice (Python 3.11's argparse has no ``suggest_on_error``)."""

    def error(self, message: str):
        sys.stderr.write(f"error: {self.prog}: {message}{self._suggestion(message)} (see {self.prog} --help)\n")
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but a word no parser knows is reported by the chosen subcommand's parser, so the
        line names ``neurodeploy run --help`` rather than the top level's help (argparse reports leftovers
        from the top-level parser)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            commands = next((action.choices for action in self._actions
                             if isinstance(action, argparse._SubParsersAction)), {})
            reporter = commands.get(getattr(parsed, "command", None), self)
            reporter.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _flags(self) -> list[str]:
        """Every option string of this parser and of its subcommands' parsers (those built)."""
        flags = list(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    flags += sub._option_string_actions
        return [flag for flag in flags if flag.startswith("--")]

    def _suggestion(self, message: str) -> str:
        """"; did you mean ...?" for an unrecognized flag or an invalid choice in ``message``, else ""."""
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            given = [word.split("=")[0] for word in unknown.group(1).split() if word.startswith("--")]
            return "".join(did_you_mean(word, self._flags()).replace("; did", f"; {word}: did") for word in given)
        invalid = re.search(r"invalid choice: '?([^'\s]*)'? \(choose from (.*)\)", message)
        if invalid:
            choices = [choice.strip().strip("'") for choice in invalid.group(2).split(",")]
            return did_you_mean(invalid.group(1), choices)
        return ""


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
        if all(option == first for _, option in owners):  # one option (or the same one, shared): its help once
            text = first.help + ("" if first.default is None else f" (default: {first.default})")
            choices = first.choices
        else:
            text = "; ".join(f"{name}: {o.help}" + ("" if o.default is None else f" (default: {o.default})")
                             for name, o in owners)
            choices = tuple(dict.fromkeys(c for _, o in owners for c in (o.choices or ())))
        kind = first.kind if first.kind in (int, float, str) else str
        if first.words:  # words besides the values of its kind (--substeps auto)
            kind, choices = _word_or_kind(first), first.words + tuple(choices or ())
        metavar = None if choices else {int: "N", float: "X"}.get(kind, first.name.upper())
        group.add_argument(flag, dest=f"backend_option_{first.name}", type=kind, choices=choices or None,
                           metavar=metavar, default=None, help=text)


def _word_or_kind(option):
    """argparse's type for an option with words besides its kind; its name is what argparse's refusal says
    ("invalid int or auto value: 'often'")."""
    def parse(text: str):
        return option.parse(text)

    parse.__name__ = " or ".join((option.kind.__name__, *option.words))
    return parse


def _model_group(parser: argparse.ArgumentParser, epochs: bool = True) -> None:
    from neurodeploy.train.zoo import ARCHITECTURES

    group = parser.add_argument_group("model")
    group.add_argument("--arch", default="dense_mnist", choices=sorted(ARCHITECTURES),
                       help="zoo architecture trained here when no --model is given (default: %(default)s)")
    group.add_argument("--model", metavar="FILE",
                       help="trained model, recognised by content: a torch.export program (.pt2), a model file of "
                       "`neurodeploy train`, or a whole pickled module with --trust-pickle (default: train --arch "
                       "here, cached in the model cache)")
    _own_model_flags(group)
    if epochs:
        group.add_argument("--epochs", type=int, default=15, metavar="N",
                           help="training epochs when the model is trained here (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0, metavar="N",
                       help="seeds training, conversion and the evaluation's random splits (default: %(default)s)")
    _data_flag(parser.add_argument_group("data"))


def _own_model_flags(group, network: bool = False) -> None:
    group.add_argument("--model-class", metavar="FILE.py:CLASS",
                       help="your model's class (FILE.py:Class or package.module:Class; importing it runs that "
                       "code), with --weights (default: none)")
    group.add_argument("--model-kwargs", metavar="JSON",
                       help="keyword arguments of --model-class as a JSON object (default: none)")
    group.add_argument("--weights", metavar="FILE",
                       help="state_dict for --model-class (torch.save(model.state_dict(), FILE)), read with "
                       "weights_only=True (default: none)")
    group.add_argument("--trust-pickle", action="store_true",
                       help="allow --model to be a whole pickled module (torch.save(model)): unpickling EXECUTES "
                       "code from the file; only for files you trust (default: refused)")


def _network_flag(group) -> None:
    group.add_argument("--network", metavar="IR",
                       help="run a converted or optimized network (network.zip of convert, optimize or run), or a "
                       "NIR graph (.nir, any writer: see the NIR import flags), as written, without a model; a* from "
                       "its record (default: none)")


def _nir_import_group(parser: argparse.ArgumentParser) -> None:
    from neurodeploy.nir.vocabulary import LEAK_RULES, NIR_RESETS, WRITERS

    group = parser.add_argument_group("NIR import (a .nir graph written elsewhere; the graph's own metadata wins)")
    group.add_argument("--nir-from", choices=tuple(WRITERS), default=None,
                       help="the library that wrote the graph: sets --nir-dt, --nir-reset and --nir-leak as it "
                       "means them (sinabs: dt 1, subtract, exp; snntorch: dt 1e-4, subtract-next, euler; norse: dt "
                       "1e-3, zero, euler; docs/nir.md) (default: nir, NIR's own semantics)")
    group.add_argument("--nir-dt", type=float, default=None, metavar="SECONDS",
                       help="seconds per simulation step, for leaky and delay nodes (default: --nir-from's; none "
                       "for nir: a leaky graph then asks for it)")
    group.add_argument("--nir-reset", choices=NIR_RESETS, default=None,
                       help="after a spike: zero = to the node's v_reset (NIR), subtract = v -= v_threshold in "
                       "the step of the spike (sinabs), subtract-next = in the next step, after the leak (snnTorch's "
                       "reset_delay) (default: --nir-from's)")
    group.add_argument("--nir-leak", choices=LEAK_RULES, default=None,
                       help="decay per step: exp = exp(-dt/tau), euler = 1 - dt/tau (snnTorch, Norse) (default: "
                       "--nir-from's)")


def _data_flag(group, purpose: str = "") -> None:
    group.add_argument("--data", metavar="DIR|FILE.npz",
                       help=f"dataset{purpose}: a folder in torchvision's raw/ IDX layout (MNIST) or CIFAR-10 python, "
                       "an .npz of x_train, y_train, x_test, y_test (any item shape), or a folder of those four .npy "
                       "files (default: the embedded MNIST subset, 2,000 test digits)")


def _readout_start(text: str) -> int | str:
    """``--readout-start``: "auto" or a whole number of steps >= 0."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor a whole number of steps") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} steps: the readout starts at step 0 or later")
    return value


def _conversion_group(parser: argparse.ArgumentParser) -> None:
    from neurodeploy.convert.converter import CONVERSIONS, DEFAULT_PERCENTILE, V_INIT_CHOICES
    from neurodeploy.convert.fx_graph import MAX_POOL_STRATEGIES
    from neurodeploy.convert.statistics import GRANULARITIES
    from neurodeploy.jobs.config import RESETS

    group = parser.add_argument_group("conversion")
    group.add_argument("--conversion", default="rate", choices=CONVERSIONS,
                       help="rate: normalized ReLU net; qcfs/qffs: quantized activations, fine-tuned here "
                       "(default: %(default)s)")
    group.add_argument("--normalization", default="percentile", choices=sorted(DEFAULT_PERCENTILE),
                       help="activation scale: max, percentile of non-zero activations, or of all activations "
                       "(default: %(default)s)")
    group.add_argument("--percentile", type=float, metavar="P",
                       help="percentile p in (0, 100] (default: 99.9; 99.0 for percentile_all)")
    group.add_argument("--granularity", choices=GRANULARITIES,
                       help="one scale per layer or per channel (default: layer; neuron with --optimize)")
    group.add_argument("--reset", default="subtract", choices=RESETS,
                       help="after a spike: subtract the threshold or set v to 0 (default: %(default)s)")
    group.add_argument("--v-init", choices=V_INIT_CHOICES, help="initial membrane: 0, theta/2, uniform in "
                       "[0, theta) (seeded), or calibrated: one v0/theta per layer chosen on calibration items for "
                       "the run's -T, which deep nets need at low T (default: zero; half with --optimize or "
                       "qcfs/qffs)")
    group.add_argument("--max-pool", choices=MAX_POOL_STRATEGIES,
                       help="max pooling strategy: avg (replaced by average pooling of the same window, not "
                       "retrained) or spiking (an exact maximum of rates built from ReLU populations) (default: "
                       "max pooling is refused with a message)")
    group.add_argument("--readout-start", type=_readout_start, default=0, metavar="K|auto",
                       help="delayed readout: read the output from step K on, so the steps while deep layers "
                       "settle do not count; auto chooses K on calibration items (default: %(default)s)")
    group.add_argument("--negative-spikes", action="store_true",
                       help="rate conversion: every hidden neuron also takes back spikes (a negative spike when its "
                       "membrane falls below 0 while its net count is positive), so early overshoots of deep "
                       "chains do not stay; gpu backend only (default: off)")
    group.add_argument("--headroom", type=float, default=1.0, metavar="H",
                       help="rate conversion: every activation scale is the calibration statistic times H >= 1, so "
                       "unseen items' larger activations are not clipped at one spike per step; rates fall by 1/H "
                       "(default: %(default)s)")
    group.add_argument("--calibration-samples", type=int, default=2000, metavar="N",
                       help="training items for activation statistics (default: %(default)s)")
    group.add_argument("--quant-bits", type=int, default=2, metavar="B",
                       help="activation bits for qcfs/qffs (default: %(default)s)")
    group.add_argument("--quant-epochs", type=int, default=5, metavar="N",
                       help="quantization fine-tuning epochs for qcfs/qffs (default: %(default)s)")
    group.add_argument("--max-fan-in", type=int, metavar="N",
                       help="fan-in pass: pool dense inputs (fine-tuning the model) and split pooling into pool "
                       "populations until no neuron has more synapses; 0 turns it off (default: what the backend "
                       "requires: 256 for SpiNNaker targets, none otherwise)")
    group.add_argument("--fan-in-epochs", type=int, default=3, metavar="N",
                       help="fine-tuning epochs after the fan-in pooling (default: %(default)s)")


def _simulation_group(parser: argparse.ArgumentParser, samples_default: int | None, T_default: int,
                      early_exit: bool = False) -> None:
    from neurodeploy.backends.base import ENCODINGS

    group = parser.add_argument_group("simulation")
    group.add_argument("-T", "--steps", dest="T", type=int, default=T_default, metavar="T",
                       help="time steps of 1 ms simulated per item (default: %(default)s)")
    group.add_argument("--samples", type=int, default=samples_default, metavar="N",
                       help="use only the first N test items (default: " +
                       ("all" if samples_default is None else "%(default)s") + ")")
    group.add_argument("--batch-size", type=int, default=500, metavar="N",
                       help="items simulated together, and checkpointed (default: %(default)s)")
    group.add_argument("--memory-budget", type=float, default=None, metavar="GIB",
                       help="refuse a run whose result and batch are estimated to need more memory than GIB GiB "
                       "(items x T x what is stored per step, plus a batch; default: 8, at most 80%% of the "
                       "machine's memory)")
    group.add_argument("--encoding", default="analog", choices=ENCODINGS,
                       help="input: analog current, deterministic IF spikes, or Poisson spikes (default: %(default)s)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars (-q implies it)")
    if early_exit:
        group.add_argument("--exit", metavar="POLICY",
                           help="early exit in the simulator: confidence (threshold picked on the DC validation part) "
                           "or confidence:C; reruns the DC test part with exit and reports the saving (default: no "
                           "early exit)")


def _dynamic_confidence_group(parser: argparse.ArgumentParser) -> None:
    from neurodeploy.evaluate.dynamic_confidence import PICK_RULES

    group = parser.add_argument_group("Dynamic Confidence (early exit)")
    group.add_argument("--dc-alpha", default="T", metavar="ALPHA",
                       help="softmax temperature of the confidence: T (the number of steps), fit (temperature "
                       "scaling on the validation part), bits:B (2^B - 1, QFFS) or a positive number "
                       "(default: %(default)s)")
    group.add_argument("--dc-tolerance", type=float, default=0.0, metavar="X",
                       help="accuracy loss allowed when picking the threshold (default: %(default)s)")
    group.add_argument("--dc-validation-fraction", type=float, default=0.5, metavar="F",
                       help="fraction of the test items used to pick the threshold, in (0, 1) (default: %(default)s)")
    group.add_argument("--dc-rule", default="stable", choices=PICK_RULES,
                       help="threshold pick rule: stable or fastest (default: %(default)s)")


def _optimization_group(parser: argparse.ArgumentParser, switch: bool) -> None:
    from neurodeploy.optimize.optimizer import METHODS

    group = parser.add_argument_group("anytime optimizations (Dutson et al.)")
    if switch:
        group.add_argument("--optimize", action="store_true",
                           help="sparsity fine-tuning, per-channel scales and initial membranes optimized for L_SNN "
                           "on held-out training items from a half-threshold start, within --accuracy-budget")
    group.add_argument("--optimize-method", default="coarse_to_fine", choices=METHODS,
                       help="staged SUBPLEX over tied channel groups, or SUBPLEX over every channel "
                       "(default: %(default)s)")
    group.add_argument("--optimize-evals", type=int, default=250, metavar="N",
                       help="simulations the search may run (default: %(default)s)")
    group.add_argument("--optimize-T", type=int, metavar="T", help="steps per optimization simulation (default: -T)")
    group.add_argument("--optimize-items", type=int, default=800, metavar="N",
                       help="held-out training items simulated per evaluation (default: %(default)s)")
    group.add_argument("--lambda-e", type=float, default=200.0, metavar="X",
                       help="weight of (1 - peak accuracy) in L_SNN (paper: 200 MNIST, 50 CIFAR) "
                       "(default: %(default)s)")
    group.add_argument("--fixed-v-init", action="store_true",
                       help="keep the initial membrane of --v-init (default: search one per hidden population, as "
                       "a fraction of the threshold, starting there)")
    group.add_argument("--no-sparsity", action="store_true", help="skip sparsity fine-tuning (phase 1)")
    group.add_argument("--accuracy-budget", type=float, default=0.5, metavar="PP",
                       help="validation accuracy (percentage points, held-out training items) the optimizations "
                       "may lose against the original ANN, decided item by item on a paired 90%% interval: phase 1 "
                       "keeps the sparsest model whose interval lies wholly at or above -PP, phase 2 excludes points "
                       "whose interval lies wholly below -PP (default: %(default)s)")
    group.add_argument("--lambda-a", type=float, metavar="X",
                       help="phase 1 activation penalty weight (default: searched with --lambda-w as s x (10, 50), "
                       "the sparsest model within the budget)")
    group.add_argument("--lambda-w", type=float, metavar="X",
                       help="phase 1 weight penalty weight (default: chosen with --lambda-a under the budget)")
    group.add_argument("--prune", type=float, metavar="X",
                       help="phase 1: weights with |w| below this become 0 (default: chosen under the budget)")


def _output_group(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--results-dir", default="results", metavar="DIR",
                       help="folder of run folders (default: %(default)s)")
    group.add_argument("--run-id", metavar="ID",
                       help="run folder name; an unfinished run of that name resumes (default: date, time and "
                       "backend)")
    _cache_flag(group)


def _cache_flag(group) -> None:
    group.add_argument("--cache-dir", metavar="DIR",
                       help="model cache shared by all runs (default: $NEURODEPLOY_CACHE, else the user cache "
                       "folder, platformdirs.user_cache_dir('neurodeploy'))")


def _backend_flag(parser: argparse.ArgumentParser) -> None:
    from neurodeploy.backends import available_backends

    group = parser.add_argument_group("backend")
    group.add_argument("--backend", default="gpu", choices=sorted(available_backends()),
                       help="where the network runs (default: %(default)s; `neurodeploy backends` lists them)")


def add_verbosity_flags(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """-v/--verbose and -q/--quiet; given after the subcommand they override the top-level ones."""
    group = parser.add_argument_group("output detail").add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=0 if top_level else argparse.SUPPRESS,
                       help="also show the simulator libraries' log records (PyNN, sPyNNaker; -vv: debug records), "
                       "in this process and, after the run, from the run folder's run.log (default: off)")
    group.add_argument("-q", "--quiet", action="store_true", default=False if top_level else argparse.SUPPRESS,
                       help="print only the summary table, the folder written and errors: no stage lines, progress "
                       "bars or warnings (default: off)")


HELP = {
    "run": "train or load a model, convert it, simulate it and evaluate it",
    "diagnose": "which population and which of a board's differences lose a board prediction's accuracy",
    "optimize": "sparsity fine-tuning + conversion + formal scale optimization; writes the optimized IR",
    "compare": "run one converted network on several backends and compare them",
    "train": "train a zoo architecture and write a model file",
    "convert": "convert a model file into an IR file",
    "info": "print populations, neurons, synapses and fan-in/out of an IR file",
    "evaluate": "evaluate and overlay saved runs (run folders or result.npz files)",
    "export": "write an IR file in an interchange format (NIR) for other simulators and chips",
    "backends": "list installed backends and their options",
}

#: one or two examples per subcommand, shown at the end of its --help
EXAMPLES = {
    "run": [("dense MNIST: train 15 epochs, convert, simulate 100 steps on the 2,000 test digits (minutes on a CPU)",
             "neurodeploy run"),
            ("a quick look: 200 items, 50 steps, 2 training epochs; then your own model on NEURON",
             "neurodeploy run --samples 200 -T 50 --epochs 2\n"
             "  neurodeploy run --model mine.pt --backend neuron --samples 100 --workers 2")],
    "diagnose": [("the virtual SpiNNaker board's prediction against the pynn profile, each factor on its own",
                  "neurodeploy diagnose --backend spinnaker --model mine.pt2 --samples 300 -T 100"),
                 ("the gpu backend's IF_curr_exp profile of a zoo network",
                  "neurodeploy diagnose --backend gpu --profile spinnaker_exp --arch resnet_small")],
    "optimize": [("optimize the scales of dense MNIST (50 simulations) and write the IR",
                  "neurodeploy optimize --out net.zip --optimize-evals 50")],
    "compare": [("zero delay against one step of delay per projection (results/compare-*/*.png)",
                 "neurodeploy compare --backends gpu:ideal,gpu:pynn --samples 200 -T 50"),
                ("the reference simulator against NEURON's exact and standard cells",
                 "neurodeploy compare --backends gpu:pynn,neuron,neuron:standard --samples 20")],
    "train": [("train dense MNIST for 5 epochs; then a 2-bit quantized conv net for QCFS",
               "neurodeploy train --out mnist.pt --epochs 5\n"
               "  neurodeploy train --out conv.pt --arch conv_mnist --quantize-bits 2")],
    "convert": [("convert with max normalization and look at the result",
                 "neurodeploy convert mnist.pt --out net.zip --normalization max\n  neurodeploy info net.zip")],
    "info": [("populations, neurons and synapses of an IR file", "neurodeploy info results/<run-id>/network.zip")],
    "evaluate": [("overlay two runs (folders or result.npz files): table, evaluation.json, curves.csv, plots",
                  "neurodeploy evaluate results/run-a results/run-b --labels a,b --out evaluation"),
                 ("a result that records no ANN accuracy",
                  "neurodeploy evaluate results/x/result.npz --ann-accuracy 0.97")],
    "export": [("NIR for sinabs, with a reference trace of 10 items the receiver can check",
                "neurodeploy export results/<run-id>/network.zip net.nir --dialect sinabs --reference 10")],
    "backends": [("what is installed, and each backend's options", "neurodeploy backends")],
}

FIRST_STEPS = """first steps:
  neurodeploy run                                        # train, convert, simulate, evaluate dense MNIST
  neurodeploy run --samples 200 -T 50 --epochs 2         # a quick look
  neurodeploy run --model mine.pt --backend neuron       # your own model (neurodeploy train --help) on NEURON
  neurodeploy compare --backends gpu:ideal,gpu:pynn      # one network, two timing conventions
  neurodeploy evaluate results/a results/b               # overlay saved runs
Each run writes results/<run-id>/: summary.json, curves.csv, result.npz, network.zip, config.json and plots.
`neurodeploy COMMAND --help` explains a command's flags, with examples."""


def _epilog(name: str) -> str:
    lines = ["examples:"]
    for what, command in EXAMPLES[name]:
        lines += [f"  # {what}", f"  {command}"]
    return "\n".join(lines)


def _run_flags(run: argparse.ArgumentParser) -> None:
    _backend_flag(run)
    _model_group(run)
    _network_flag(run._action_groups[-2])
    _nir_import_group(run)
    _conversion_group(run)
    _simulation_group(run, None, 100, early_exit=True)
    _dynamic_confidence_group(run)
    _optimization_group(run, switch=True)
    _output_group(run)
    run._action_groups[-1].add_argument(
        "--record", action="append", default=None, metavar="POP[:ITEMS]",
        help="also write every spike of population POP (as `neurodeploy info network.zip` lists them; a wrong name is "
        "answered with the list) for test items ITEMS (e.g. 0-9 or 3,5; default: all) to spikes.mat in the run folder, "
        "as Neo (neo.io.NeoMatlabIO); repeatable or a comma list (relu_3:0-9,relu_6:3,5)")
    add_backend_option_groups(run)


def _diagnose_flags(diagnose: argparse.ArgumentParser) -> None:
    _backend_flag(diagnose)
    _model_group(diagnose)
    _network_flag(diagnose._action_groups[-2])
    _conversion_group(diagnose)
    _simulation_group(diagnose, 300, 100)
    _output_group(diagnose)
    add_backend_option_groups(diagnose)


def _optimize_flags(optimize: argparse.ArgumentParser) -> None:
    optimize.add_argument("--out", required=True, metavar="PATH",
                          help="IR file to write: a .zip archive or a folder (required)")
    _backend_flag(optimize)
    _model_group(optimize)
    _conversion_group(optimize)
    group = optimize.add_argument_group("simulation")
    group.add_argument("-T", "--steps", dest="T", type=int, default=100, metavar="T",
                       help="time steps of the anytime metrics (default: %(default)s)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars (-q implies it)")
    _optimization_group(optimize, switch=False)
    _output_group(optimize)
    add_backend_option_groups(optimize)


def _compare_flags(compare: argparse.ArgumentParser) -> None:
    group = compare.add_argument_group("backends")
    group.add_argument("--backends", default="gpu:pynn,neuron", metavar="LIST",
                       help="comma-separated backends, NAME or NAME:PROFILE; the first is the reference "
                       "(default: %(default)s)")
    _model_group(compare)
    _network_flag(compare._action_groups[-2])
    _nir_import_group(compare)
    _conversion_group(compare)
    _simulation_group(compare, 20, 50)
    _dynamic_confidence_group(compare)
    _output_group(compare)
    add_backend_option_groups(compare)


def _train_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument("--out", required=True, metavar="FILE", help="model file to write (.pt) (required)")
    _model_group(train)
    group = train.add_argument_group("training")
    group.add_argument("--lr", type=float, default=0.05, metavar="X", help="SGD learning rate (default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=64, metavar="N", help="SGD batch size (default: %(default)s)")
    group.add_argument("--init", metavar="FILE",
                       help="start from this model file instead of training from scratch (default: from scratch)")
    group.add_argument("--quantize-bits", type=int, metavar="B",
                       help="then fine-tune with B-bit quantized activations for QCFS/QFFS (default: no "
                       "quantization)")
    group.add_argument("--quant-epochs", type=int, default=5, metavar="N",
                       help="quantization fine-tuning epochs (default: %(default)s)")
    group.add_argument("--finetune-sparsity", action="store_true",
                       help="then fine-tune for activation and weight sparsity and prune (Dutson et al. phase 1)")
    group.add_argument("--sparsity-epochs", type=int, default=6, metavar="N",
                       help="sparsity fine-tuning epochs (default: %(default)s)")
    group.add_argument("--lambda-a", type=float, default=10.0, metavar="X",
                       help="activation penalty weight (default: %(default)s)")
    group.add_argument("--lambda-w", type=float, default=50.0, metavar="X",
                       help="weight penalty weight (default: %(default)s)")
    group.add_argument("--prune", type=float, default=5e-3, metavar="X",
                       help="weights with |w| below this become 0 (default: %(default)s)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars (-q implies it)")


def _convert_flags(convert: argparse.ArgumentParser) -> None:
    convert.add_argument("model", nargs="?", help="trained model, recognised by content: a torch.export program, "
                         "a model file of `neurodeploy train`, or a pickled module with --trust-pickle (or give "
                         "--model-class and --weights instead)")
    _own_model_flags(convert.add_argument_group("your own model"))
    convert.add_argument("--out", required=True, metavar="PATH", help="IR file: a .zip archive or a folder (required)")
    group = convert.add_argument_group("data")
    _data_flag(group, " for calibration")
    group.add_argument("--seed", type=int, default=0, metavar="N", help="seeds the conversion (default: %(default)s)")
    group.add_argument("-T", "--steps", dest="T", type=int, default=100, metavar="T",
                       help="steps the network will run: --readout-start auto and --v-init calibrated choose for "
                       "this T (default: %(default)s)")
    group = convert.add_argument_group("output")
    group.add_argument("--results-dir", default="results", metavar="DIR",
                       help="folder of run folders (default: %(default)s)")
    _cache_flag(group)
    group.add_argument("--no-progress", action="store_true", help="no progress bars (-q implies it)")
    _conversion_group(convert)


def _info_flags(info: argparse.ArgumentParser) -> None:
    info.add_argument("ir", help="IR file (.zip archive or folder) or NIR graph (.nir)")
    _nir_import_group(info)


def _export_flags(export: argparse.ArgumentParser) -> None:
    from neurodeploy.ir.nir import DIALECTS

    export.add_argument("ir", help="IR file written by convert, optimize or run (.zip archive or folder), or a NIR "
                        "graph written elsewhere")
    export.add_argument("out", help="file to write (.nir)")
    group = export.add_argument_group("format")
    group.add_argument("--to", default="nir", choices=("nir",), help="format (default: %(default)s)")
    group.add_argument("--dialect", default="nir", choices=DIALECTS,
                       help="nir: every node and the metadata of docs/nir.md; sinabs: only what sinabs.from_nir "
                       "imports (default: %(default)s)")
    group.add_argument("--fold-thresholds", action="store_true",
                       help="threshold 1 everywhere, thresholds folded into the weights (importers that take one "
                       "threshold or unit spikes)")
    group.add_argument("--delays", action="store_true",
                       help="one-step Delay nodes on every projection (the pynn profile's timing)")
    group = export.add_argument_group("reference trace")
    group.add_argument("--reference", type=int, default=0, metavar="N",
                       help="embed a reference trace of the first N test items of --data, so the receiver can "
                       "check itself (default: %(default)s, none)")
    _data_flag(group, " for --reference")
    group.add_argument("-T", "--steps", dest="T", type=int, default=50, metavar="T",
                       help="steps of the reference trace (default: %(default)s)")
    _nir_import_group(export)


def _evaluate_flags(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("results", nargs="+", metavar="RUN",
                          help="run folders (holding result.npz), compare folders (one run per backend) or "
                          "result .npz files; the others are checked against the first: different items, labels or "
                          "data set are refused, a different T is a warning")
    group = evaluate.add_argument_group("evaluation")
    group.add_argument("--labels", metavar="A,B,...",
                       help="comma-separated labels, one per run (default: backend and folder names)")
    group.add_argument("--ann-accuracy", type=float, metavar="A",
                       help="a* for runs that do not record it (default: what each run records)")
    group.add_argument("--allow-mismatch", action="store_true",
                       help="evaluate runs over different items or data sets anyway, with a warning (default: "
                       "refused)")
    group.add_argument("--seed", type=int, default=0, metavar="N",
                       help="seeds the DC validation split (default: %(default)s)")
    group.add_argument("--out", default="evaluation", metavar="DIR",
                       help="folder for evaluation.json, curves.csv and the plots (default: %(default)s)")
    _dynamic_confidence_group(evaluate)


FLAGS = {"run": _run_flags, "diagnose": _diagnose_flags, "optimize": _optimize_flags, "compare": _compare_flags,
         "train": _train_flags,
         "convert": _convert_flags, "info": _info_flags, "evaluate": _evaluate_flags, "export": _export_flags,
         "backends": lambda p: None}


def build_parser(command: str | None = None) -> Parser:
    """The parser with every subcommand listed and the flags of ``command`` (None: of all of them)."""
    from neurodeploy import __version__

    parser = Parser(prog="neurodeploy", description=textwrap.fill(DESCRIPTION, 100), epilog=FIRST_STEPS,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"neurodeploy {__version__}")
    add_verbosity_flags(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND",
                                title="commands")
    for name, help_text in HELP.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text, epilog=_epilog(name),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
        if command in (None, name) or command not in HELP:
            FLAGS[name](subparser)
            add_verbosity_flags(subparser, top_level=False)
    return parser


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a flag), if any."""
    return next((word for word in argv if not word.startswith("-")), None)
