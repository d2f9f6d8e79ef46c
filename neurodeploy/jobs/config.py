"""Job settings: typed, nested, and validated when made, before any training, conversion or simulation.

A :class:`JobConfig` holds one section per concern (model, conversion, fan-in, optimization, run,
evaluation) and the backend's name and options; it holds no backend-specific field: each backend
declares and checks its own options (``neurodeploy.backends.base.Option``). Every check raises
:class:`~neurodeploy.errors.ConfigError` naming the setting by its command-line flag. Choices come from
the modules that own them.
"""

from __future__ import annotations

import os
import re
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from neurodeploy.backends import available_backends, backend_class
from neurodeploy.backends.base import ENCODINGS, Backend
from neurodeploy.convert.converter import CONVERSIONS, DEFAULT_PERCENTILE, V_INIT_CHOICES, conversion_features
from neurodeploy.convert.fx_graph import MAX_POOL_STRATEGIES
from neurodeploy.convert.statistics import GRANULARITIES
from neurodeploy.errors import ConfigError, NeurodeployError
from neurodeploy.evaluate.dynamic_confidence import PICK_RULES, parse_alpha
from neurodeploy.ir.population import ResetMode
from neurodeploy.jobs.checks import choice, existing, number, whole
from neurodeploy.optimize.optimizer import METHODS
from neurodeploy.optimize.parameters import NEURON_FEATURES as OPTIMIZER_FEATURES
from neurodeploy.train.zoo import ARCHITECTURES

RESETS = typing.get_args(ResetMode)
#: run ids are folder names under the results folder: no separators, no leading dot
RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
#: longest run id: a folder name (NAME_MAX of common filesystems; a smaller limit is checked on the folder)
MAX_RUN_ID = 255


def _is_trained_model(path: Path) -> bool:
    """Whether ``path`` is a PyTorch model file (a torch.export program, TorchScript or torch.save archive,
    by content) rather than an IR (a zip whose members include network.json, a folder or a .nir file)."""
    import zipfile

    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    markers = ("data.pkl", "constants.pkl", "archive_format", "serialized_exported_program.json")
    return not any(name.rsplit("/", 1)[-1] == "network.json" for name in names) and any(
        name.endswith(markers) for name in names)


@dataclass(frozen=True)
class ModelSettings:
    """Which trained ANN: a model file, or a zoo architecture trained (and cached) here.

    arch: zoo architecture (``neurodeploy.train.zoo``); model: a model file recognised by content (a
    torch.export program, a project model file, or a pickled module with trust_pickle; then arch is its
    own); model_class / model_kwargs / weights: a class (``FILE.py:Class`` or ``package.module:Class``),
    its keyword arguments as JSON and a state_dict file (``neurodeploy.jobs.user_models``); network: a
    converted IR run without a model; data: dataset folder or ``.npz`` file (None: the embedded MNIST
    subset); epochs: training epochs; seed: seeds training, conversion and the evaluation's random splits.
    """

    arch: str = "dense_mnist"
    model: str | None = None
    data: str | None = None
    epochs: int = 15
    seed: int = 0
    model_class: str | None = None
    model_kwargs: str | None = None
    weights: str | None = None
    trust_pickle: bool = False
    network: str | None = None

    def __post_init__(self) -> None:
        choice("--arch", self.arch, tuple(ARCHITECTURES))
        existing("--model", self.model, folder=False)
        if self.model and Path(self.model).suffix == ".py":
            raise ConfigError(f"--model {self.model}: Python source, not a trained model; give the class and its "
                              f"state_dict as --model-class {self.model}:ClassName --weights state.pt (--model takes "
                              "a torch.export .pt2, a model file of `neurodeploy train` or, with --trust-pickle, a "
                              "pickled module)")
        data_is_file = self.data is not None and Path(self.data).suffix in (".npz",)
        existing("--data", self.data, folder=not data_is_file)
        whole("--epochs", self.epochs, 1)
        whole("--seed", self.seed, 0)
        if self.model_class or self.weights or self.model_kwargs:
            from neurodeploy.jobs.user_models import check_class_spec, parse_kwargs

            if not (self.model_class and self.weights):
                raise ConfigError("--model-class and --weights go together (a class and its state_dict)")
            if self.model:
                raise ConfigError("--model and --model-class are two ways to give the model: use one")
            check_class_spec(self.model_class)
            parse_kwargs(self.model_kwargs)
            existing("--weights", self.weights, folder=False)
        if self.network is not None:
            if self.model or self.model_class:
                raise ConfigError("--network runs a converted network without a model: leave out --model and "
                                  "--model-class")
            if not Path(self.network).exists():
                raise ConfigError(f"--network {self.network}: no such file or folder")
            if _is_trained_model(Path(self.network)):
                raise ConfigError(f"--network {self.network}: a trained model, not a converted network; run it with "
                                  f"--model {self.network} (--network takes the network.zip that convert, optimize "
                                  "or run wrote, or a .nir file)")

    @property
    def given(self) -> bool:
        """Whether the user gave the model (a file, or a class and weights) rather than an architecture."""
        return bool(self.model or self.model_class)


@dataclass(frozen=True)
class ConversionSettings:
    """ANN -> SNN conversion (``docs/semantics.md``, "Conversion").

    granularity and v_init None: "layer" and "zero", or "neuron" and "half" when the job optimizes
    (Dutson et al.'s pipeline); v_init None is "half" for qcfs/qffs, which take only "half" or
    "calibrated" (one v0 / theta per population chosen on calibration items for the run's T);
    ``JobConfig.resolved_conversion`` fills them in. percentile None: the
    normalization's default (99.9 for ``percentile``, 99.0 for ``percentile_all``). max_pool: None (max
    pooling refused), "avg" or "spiking"; readout_start: the delayed readout's first step k, or "auto"
    (chosen on calibration items for the run's T); negative_spikes (rate conversion): hidden neurons take
    back overshoot spikes; headroom (rate conversion, >= 1): every scale is the calibration statistic
    times it; see :func:`neurodeploy.convert.convert`.
    """

    conversion: str = "rate"
    normalization: str = "percentile"
    percentile: float | None = None
    granularity: str | None = None
    reset: str = "subtract"
    v_init: str | None = None
    calibration_samples: int = 2000
    quant_bits: int = 2
    quant_epochs: int = 5
    max_pool: str | None = None
    readout_start: int | str = 0
    negative_spikes: bool = False
    headroom: float = 1.0

    def __post_init__(self) -> None:
        choice("--conversion", self.conversion, CONVERSIONS)
        if not isinstance(self.negative_spikes, bool):
            raise ConfigError(f"--negative-spikes is on or off (True or False), not {self.negative_spikes!r}")
        number("--headroom", self.headroom, 1.0)
        for flag, given in (("--negative-spikes", self.negative_spikes), ("--headroom", self.headroom != 1.0)):
            if given and self.conversion != "rate":
                raise ConfigError(f"{flag} is a choice of --conversion rate; --conversion {self.conversion} sets its "
                                  "own neurons and scale (qffs has negative spikes, qcfs none)")
        if self.max_pool is not None:
            choice("--max-pool", self.max_pool, MAX_POOL_STRATEGIES)
        if self.readout_start != "auto":
            whole("--readout-start", self.readout_start, 0)
        choice("--normalization", self.normalization, tuple(DEFAULT_PERCENTILE))
        number("--percentile", self.percentile, 0.0, 100.0, low_open=True, optional=True)
        if self.granularity is not None:
            choice("--granularity", self.granularity, GRANULARITIES)
        choice("--reset", self.reset, RESETS)
        if self.v_init is not None:
            choice("--v-init", self.v_init, V_INIT_CHOICES)
            if self.conversion != "rate" and self.v_init not in ("half", "calibrated"):
                raise ConfigError(f"--v-init {self.v_init}: --conversion {self.conversion} starts every membrane at "
                                  "theta/2 (its shift); use half or calibrated")
        whole("--calibration-samples", self.calibration_samples, 1)
        whole("--quant-bits", self.quant_bits, 1, 8)
        whole("--quant-epochs", self.quant_epochs, 1)

    @property
    def resolved_percentile(self) -> float:
        return DEFAULT_PERCENTILE[self.normalization] if self.percentile is None else float(self.percentile)

    @property
    def flag(self) -> str:
        """The command-line flags that choose these neurons (``--conversion qffs``, ``--negative-spikes``)."""
        return "--negative-spikes" if self.negative_spikes else f"--conversion {self.conversion}"


def check_conversion_features(cls: type[Backend], conversion: ConversionSettings) -> None:
    """Raises ConfigError, in one line naming the flag and the backends that would run it, when ``conversion``
    gives neurons a feature (spike caps, negative spikes: :func:`~neurodeploy.convert.converter.conversion_features`)
    that the backend class ``cls`` does not declare in ``Backend.neuron_features``; known before converting, so a
    job checks it before loading data or training."""
    needed = conversion_features(conversion.conversion, conversion.negative_spikes)
    missing = [feature for feature in needed if feature not in cls.neuron_features]
    if not missing:
        return
    able = []
    for name in sorted(available_backends()):
        try:
            if set(needed) <= backend_class(name).neuron_features:
                able.append(name)
        except NeurodeployError:  # a backend that cannot be loaded is no advice
            continue
    advice = f"backends that do: {', '.join(able)}" if able else "no available backend does"
    raise ConfigError(f"{conversion.flag} gives neurons {' and '.join(needed)}; the {cls.name} backend does not "
                      f"implement {' and '.join(missing)} ({advice})")


def check_optimizable(conversion: ConversionSettings) -> None:
    """Raises ConfigError, in one line, when ``conversion`` gives neurons a feature the scale optimizer does not take
    (``neurodeploy.optimize.parameters.NEURON_FEATURES``); known before converting, so checked before any work."""
    needed = conversion_features(conversion.conversion, conversion.negative_spikes)
    missing = [feature for feature in needed if feature not in OPTIMIZER_FEATURES]
    if missing:
        raise ConfigError(f"{conversion.flag} gives neurons {' and '.join(missing)}, which the scale optimizer "
                          "(--optimize, optimize) does not take: it scales rate-converted networks without them")


@dataclass(frozen=True)
class FanInSettings:
    """The fan-in pass (``neurodeploy.passes.fan_in``). max_fan_in: None = what the backend requires
    (none for simulators, 256 for SpiNNaker), 0 = off, N = at most N synapses per neuron; epochs:
    fine-tuning epochs after pooling."""

    max_fan_in: int | None = None
    epochs: int = 3

    def __post_init__(self) -> None:
        whole("--max-fan-in", self.max_fan_in, 0, optional=True)
        whole("--fan-in-epochs", self.epochs, 1)


#: OptimizationSettings fields -> the flag that sets them
OPTIMIZATION_FLAGS = {"method": "--optimize-method", "evals": "--optimize-evals", "T": "--optimize-T",
                      "items": "--optimize-items", "lambda_e": "--lambda-e", "sparsity": "--no-sparsity",
                      "accuracy_budget": "--accuracy-budget", "v_init": "--fixed-v-init"}


@dataclass(frozen=True)
class OptimizationSettings:
    """Dutson et al.'s anytime optimizations (``neurodeploy.optimize``): enabled, the search method,
    simulations, steps per simulation (None: the run's T), held-out training items simulated per
    evaluation, lambda_e, and whether phase 1 (sparsity fine-tuning) runs.

    accuracy_budget: validation accuracy, in percentage points, that the optimizations may lose against
    the original ANN: phase 1 takes the sparsest model within it (``neurodeploy.train.sparsity.
    BudgetedSparsity``) and phase 2 keeps the SNN's peak accuracy within it (a hard constraint).
    lambda_a, lambda_w, prune: phase 1's penalty weights and pruning threshold when given (None: chosen
    by the budget search).
    v_init: phase 2 also searches one initial membrane per hidden population, starting at ``--v-init``
    (False: the initial membrane stays as converted).
    Without ``enabled`` every other field must keep its default: a flag that would change nothing is refused.
    """

    enabled: bool = False
    method: str = "coarse_to_fine"
    evals: int = 250
    T: int | None = None
    items: int = 800
    lambda_e: float = 200.0
    sparsity: bool = True
    accuracy_budget: float = 0.5
    lambda_a: float | None = None
    lambda_w: float | None = None
    prune: float | None = None
    v_init: bool = True

    def __post_init__(self) -> None:
        choice("--optimize-method", self.method, METHODS)
        whole("--optimize-evals", self.evals, 1)
        whole("--optimize-T", self.T, 1, optional=True)
        whole("--optimize-items", self.items, 1)
        number("--lambda-e", self.lambda_e, 0.0)
        number("--accuracy-budget", self.accuracy_budget, 0.0, 100.0)
        given = [flag for flag, value in (("--lambda-a", self.lambda_a), ("--lambda-w", self.lambda_w),
                                          ("--prune", self.prune)) if value is not None]
        for flag in given:
            number(flag, getattr(self, flag[2:].replace("-", "_")), 0.0)
        if given and not (self.enabled and self.sparsity):
            raise ConfigError(f"{given[0]} sets phase 1 (sparsity fine-tuning) of --optimize: "
                              + ("drop --no-sparsity" if self.enabled else "add --optimize"))
        if not self.enabled:  # a setting that would change nothing is a mistake to report, not to ignore
            fields = OptimizationSettings.__dataclass_fields__
            changed = [flag for name, flag in OPTIMIZATION_FLAGS.items() if getattr(self, name) != fields[name].default]
            if changed:
                raise ConfigError(f"{changed[0]} applies only with --optimize")

    @property
    def budget_fraction(self) -> float:
        """The accuracy budget as a fraction of the items (0.5 pp -> 0.005)."""
        return self.accuracy_budget / 100.0


@dataclass(frozen=True)
class RunSettings:
    """The simulation: T steps, items per batch, the first ``samples`` test items (None: all), the
    input encoding, early exit ("confidence" or "confidence:C"), progress bars, the budget (GiB) of
    the run's estimated memory (None: :data:`neurodeploy.jobs.memory.DEFAULT_BUDGET_GIB`), and the spike
    recordings asked for (``--record POP[:ITEMS]`` values, :mod:`neurodeploy.jobs.record`)."""

    T: int = 100
    batch_size: int = 500
    samples: int | None = None
    encoding: str = "analog"
    exit: str | None = None
    progress: bool = True
    memory_budget: float | None = None
    record: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        whole("-T/--steps", self.T, 1)
        object.__setattr__(self, "record", tuple(self.record))
        if self.record:
            from neurodeploy.jobs.record import check_installed

            self.record_requests  # noqa: B018  (parses, raising ConfigError)
            check_installed()
        if self.memory_budget is not None:
            number("--memory-budget", self.memory_budget, 0.0, 1e6, low_open=True)
        whole("--batch-size", self.batch_size, 1)
        whole("--samples", self.samples, 1, optional=True)
        choice("--encoding", self.encoding, ENCODINGS)
        if self.exit is not None:
            self.exit_threshold  # noqa: B018  (parses, raising ConfigError)

    @property
    def record_requests(self) -> list:
        """The spike recordings asked for (:func:`neurodeploy.jobs.record.parse_record`)."""
        from neurodeploy.jobs.record import parse_record

        return parse_record(self.record)

    @property
    def exit_threshold(self) -> float | None:
        """``confidence`` -> None (pick the threshold on validation data); ``confidence:C`` -> C."""
        kind, _, value = self.exit.partition(":")
        if kind != "confidence":
            raise ConfigError(f"--exit {self.exit!r}: the only exit rule is 'confidence' or 'confidence:C'")
        if not value:
            return None
        try:
            threshold = float(value)
        except ValueError:
            raise ConfigError(f"--exit {self.exit!r}: {value!r} is not a number") from None
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"--exit {self.exit!r}: a confidence threshold lies in (0, 1)")
        return threshold


@dataclass(frozen=True)
class EvaluationSettings:
    """Dynamic Confidence (``docs/semantics.md``, "Dynamic Confidence"): the temperature policy, the
    accuracy loss allowed when picking the threshold, the fraction of test items used to pick it, and
    the pick rule."""

    dc_alpha: str | float = "T"
    dc_tolerance: float = 0.0
    dc_validation_fraction: float = 0.5
    dc_rule: str = "stable"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dc_alpha", parse_alpha(self.dc_alpha))
        number("--dc-tolerance", self.dc_tolerance, 0.0, 1.0)
        number("--dc-validation-fraction", self.dc_validation_fraction, 0.0, 1.0, low_open=True, high_open=True)
        choice("--dc-rule", self.dc_rule, PICK_RULES)


#: NIRImportSettings fields -> the flag that sets them
NIR_FLAGS = {"writer": "--nir-from", "dt": "--nir-dt", "reset": "--nir-reset", "leak": "--nir-leak"}


@dataclass(frozen=True)
class NIRImportSettings:
    """How ``--network`` reads a NIR graph that does not state its time step or reset (docs/nir.md,
    "Import options"): writer, a preset (``neurodeploy.nir.vocabulary.WRITERS``); dt, seconds per step;
    reset, "zero" (to v_reset) or "subtract"; leak, "exp" or "euler". None: the preset's value. The graph's
    own metadata wins where it states them."""

    writer: str | None = None
    dt: float | None = None
    reset: str | None = None
    leak: str | None = None

    def __post_init__(self) -> None:
        from neurodeploy.nir.vocabulary import LEAK_RULES, NIR_RESETS, WRITERS

        for flag, value, choices in (("--nir-from", self.writer, tuple(WRITERS)),
                                     ("--nir-reset", self.reset, NIR_RESETS), ("--nir-leak", self.leak, LEAK_RULES)):
            if value is not None:
                choice(flag, value, choices)
        number("--nir-dt", self.dt, 0.0, low_open=True, optional=True)

    @property
    def given(self) -> list[str]:
        """The flags given (not left at None)."""
        return [flag for name, flag in NIR_FLAGS.items() if getattr(self, name) is not None]

    def check_network(self, path: str | None) -> None:
        """The flags apply to a NIR file given with --network (or the IR argument of info and export)."""
        from neurodeploy.nir.reader import is_nir_file

        if self.given and (path is None or not is_nir_file(path)):
            where = "--network FILE.nir" if path is None else f"a NIR file, and {path} is not one"
            raise ConfigError(f"{self.given[0]} applies only to a NIR graph: give {where}")

    def options(self):
        """The reader's :class:`neurodeploy.nir.vocabulary.ImportOptions`."""
        from neurodeploy.nir.vocabulary import ImportOptions

        return ImportOptions(self.writer, self.dt, self.reset, self.leak)


@dataclass(frozen=True)
class JobConfig:
    """Everything a job needs; the defaults run dense MNIST on the embedded data on the gpu backend.

    backend_options: the backend's own options (validated by the backend class; defaults filled in).
    nir_import: how ``--network`` reads a NIR graph written elsewhere (only with a NIR file).
    results_dir / run_id: the run folder ``results_dir/run_id`` (run_id None: a time-stamped name).
    cache_dir: the model cache shared by all run folders (None: ``NEURODEPLOY_CACHE``, else the platform's
    user cache folder; ``neurodeploy.jobs.models.cache_folder``).
    """

    backend: str = "gpu"
    backend_options: dict = field(default_factory=dict)
    model: ModelSettings = field(default_factory=ModelSettings)
    conversion: ConversionSettings = field(default_factory=ConversionSettings)
    fan_in: FanInSettings = field(default_factory=FanInSettings)
    optimization: OptimizationSettings = field(default_factory=OptimizationSettings)
    run: RunSettings = field(default_factory=RunSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    nir_import: NIRImportSettings = field(default_factory=NIRImportSettings)
    results_dir: str | os.PathLike = "results"
    run_id: str | None = None
    cache_dir: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        self.nir_import.check_network(self.model.network)
        cls = backend_class(self.backend)
        options = cls.validate_options(self.backend_options)
        cls.check_installed()  # a missing extra is found here, before the first stage line
        object.__setattr__(self, "backend_options", options)
        self.check_neuron_features(cls)
        if self.model.network is None and self.optimization.enabled:
            check_optimizable(self.conversion)
        for name in ("results_dir", "cache_dir"):  # a pathlib.Path from Python is the same folder as its string
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        if self.run_id is not None and len(self.run_id) > MAX_RUN_ID:
            raise ConfigError(f"--run-id: {len(self.run_id)} characters, more than the {MAX_RUN_ID} a folder name may "
                              "have")
        if self.run_id is not None and not RUN_ID.fullmatch(self.run_id):
            raise ConfigError(f"--run-id {self.run_id!r}: use letters, digits, '_', '-' and '.' (a folder name, "
                              "not a path)")

    def check_neuron_features(self, cls: type[Backend]) -> None:
        """Raises ConfigError when this job converts a network with neuron features the backend class ``cls``
        does not implement (:func:`check_conversion_features`). A given ``--network`` is not converted: its
        lowering checks its neurons."""
        if self.model.network is None:
            check_conversion_features(cls, self.conversion)

    @property
    def resolved_conversion(self) -> ConversionSettings:
        """The conversion settings with the job's defaults filled in: granularity "layer" and v_init
        "zero", or "neuron" and "half" when the job optimizes (Dutson et al.'s pipeline). Resolved on
        use, so a config made with ``dataclasses.replace`` resolves by its own optimization setting."""
        optimizing, c = self.optimization.enabled, self.conversion
        return replace(c, granularity=c.granularity or ("neuron" if optimizing else "layer"),
                       v_init=c.v_init or ("half" if optimizing or c.conversion != "rate" else "zero"),
                       percentile=c.resolved_percentile)

    def with_backend(self, name: str, options: dict) -> JobConfig:
        """The same job on another backend (validated anew)."""
        return replace(self, backend=name, backend_options=options)

    def as_dict(self) -> dict:
        """Every resolved setting (JSON types)."""
        return {**asdict(self), "conversion": asdict(self.resolved_conversion)}
