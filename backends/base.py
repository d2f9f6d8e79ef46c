"""The backend contract: what every backend offers, and what the base class does once for all of them.

A backend declares its options (:class:`Option`; validated when the backend is made, and shown by the
CLI as the backend's own flag group), what it needs of a network (:meth:`Backend.requirements`), the
passes it applies to one (:meth:`Backend.prepare`), optionally a mapping onto hardware
(:meth:`Backend.map`), and how it simulates one batch (:meth:`Backend.compile` and
:meth:`Backend.simulate_batch`). The base class's :meth:`Backend.run` checks the inputs and options,
batches and checkpoints the items and writes the result metadata, the same way for every backend. The
orchestrator (``neurodeploy.jobs``) only talks to this interface and never tests a backend's name.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from neurodeploy.errors import BackendError, ConfigError, DataError, ResultFormatError, did_you_mean
from neurodeploy.evaluate.result import ResultAssembler, SimulationResult
from neurodeploy.ir.network import Network

#: encodings of the input, see ``docs/semantics.md`` ("Input encodings")
ENCODINGS = ("analog", "if", "poisson")


@dataclass(frozen=True)
class ExitPolicy:
    """Dynamic Confidence early exit: stop an item at the first step whose confidence log-odds
    log(C_t / (1 - C_t)), C_t = max softmax(O_t / alpha), exceed ``threshold_log_odds``."""

    alpha: float
    threshold_log_odds: float

    @staticmethod
    def from_confidence(alpha: float, confidence: float) -> ExitPolicy:
        """From a confidence threshold c in (0, 1)."""
        if not 0.0 < confidence < 1.0:
            raise ConfigError(f"a confidence threshold lies in (0, 1), got {confidence}")
        return ExitPolicy(alpha, math.log(confidence / (1.0 - confidence)))


@dataclass
class RunOptions:
    """Options shared by all backends.

    T: number of time steps (dt = 1 ms each).
    batch_size: items simulated together (and the unit of checkpointing).
    encoding: "analog" (pixel value as input current every step), "if" (deterministic IF encoder)
        or "poisson" (Bernoulli spikes with p = |x| each step, signed).
    seed: seeds the Poisson encoder and any other randomness of the backend.
    progress: show a progress bar.
    exit_policy: stop items early by confidence (backends that cannot say so).
    record_neuron_counts: also return every neuron's spike count over the run
        (``SimulationResult.neuron_counts``), for spike-for-spike checks between backends.
    record_spikes: names of populations whose every neuron's spikes are returned step by step
        (``SimulationResult.recorded_spikes``, ``[N, T, R]``; ``neurodeploy.jobs.record`` writes them as Neo).
    """

    T: int = 100
    batch_size: int = 500
    encoding: str = "analog"
    seed: int = 0
    progress: bool = True
    exit_policy: ExitPolicy | None = None
    record_neuron_counts: bool = False
    record_spikes: tuple[str, ...] = ()

    def validate(self) -> RunOptions:
        """Raises ConfigError naming the first option out of range."""
        if not isinstance(self.T, int) or self.T < 1:
            raise ConfigError(f"T must be at least 1 step, got {self.T}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch size must be positive, got {self.batch_size}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"unknown encoding {self.encoding!r}; choose from {', '.join(ENCODINGS)}")
        return self


@dataclass(frozen=True)
class Option:
    """One option a backend declares: its name (a keyword of the backend's constructor and, with
    ``-`` for ``_``, a CLI flag), default, help text, and how a value is checked.

    kind: the Python type a value must have (``int`` values may be given for ``float``).
    choices: the allowed values, or None. minimum / maximum: bounds of a number (inclusive).
    cli: also offered on the command line (options of the Python API only are not).
    words: strings accepted besides values of ``kind`` (``--substeps auto`` beside the numbers of ticks).
    """

    name: str
    default: Any
    help: str
    kind: type = str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    cli: bool = True
    words: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, text: str) -> Any:
        """A command-line value: one of :attr:`words` as it is, else converted to :attr:`kind`."""
        return text if text in self.words else self.kind(text)

    def check(self, backend: str, value: Any) -> Any:
        """Returns ``value`` if it is valid for this option (None stands for "the default" where the
        default is None); raises ConfigError naming the backend, the option and what is allowed."""
        if value is None and self.default is None:
            return None
        if isinstance(value, str) and value in self.words:
            return value
        kinds = (int, float) if self.kind is float else (self.kind,)
        if not isinstance(value, kinds) or (self.kind is not bool and isinstance(value, bool)):
            words = "".join(f" or {word}" for word in self.words)
            raise ConfigError(f"{backend} backend: {self.flag} must be a {self.kind.__name__}{words}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{backend} backend: {self.flag} {value!r} is not one of "
                              f"{', '.join(map(str, self.words + self.choices))}{did_you_mean(value, self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{backend} backend: {self.flag} must be at least {self.minimum:g}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{backend} backend: {self.flag} must be at most {self.maximum:g}, got {value}")
        return value


@dataclass(frozen=True)
class Requirements:
    """What a backend needs of a network before it can run it.

    max_fan_in: synapses per neuron the target stores at most (None: no limit); the fan-in pass
        enforces it. It is known before conversion, because the pass pools and fine-tunes the model.
    input_encoding: the encoding the target receives its input in, when it cannot take another.
    """

    max_fan_in: int | None = None
    input_encoding: str | None = None


@dataclass
class Session:
    """A network built for a backend once, before its batches run: ``state`` is the backend's own
    (a compiled network, a lowered one), ``metadata`` what the result records about it."""

    state: Any
    metadata: dict = field(default_factory=dict)


class Backend:
    """Base class of every backend (see the module docstring).

    Subclasses set :attr:`name` and :attr:`options` and implement :meth:`compile` and
    :meth:`simulate_batch`; they may override :meth:`requirements`, :meth:`prepare`, :meth:`map`,
    :meth:`describe` and :meth:`predictor`. Options are validated in ``__init__`` and available as
    attributes (``self.profile``, ...).
    """

    name: ClassVar[str] = "backend"
    options: ClassVar[tuple[Option, ...]] = ()
    #: whether :attr:`RunOptions.exit_policy` (early exit inside the simulator) is implemented
    supports_early_exit: ClassVar[bool] = False
    #: whether :attr:`RunOptions.record_neuron_counts` is implemented
    supports_neuron_counts: ClassVar[bool] = False
    #: whether :attr:`RunOptions.record_spikes` is implemented
    supports_spike_recording: ClassVar[bool] = False
    #: the neuron features of converted networks (``neurodeploy.ir.population.CONVERSION_FEATURES``: spike caps,
    #: negative spikes) this backend implements; a job whose conversion gives neurons another is refused before any
    #: work (``neurodeploy.jobs.config.check_conversion_features``)
    neuron_features: ClassVar[frozenset[str]] = frozenset()
    #: top-level modules the backend imports when it runs (found without importing them), and the
    #: package extra that installs them (``pip install -c constraints-cpu.txt -e ".[EXTRA]"``)
    requires_modules: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None

    def __init__(self, **values: Any):
        for key, value in self.validate_options(values).items():
            setattr(self, key, value)
        self.folder: Path | None = None

    def use_folder(self, folder: str | Path) -> None:
        """Where this backend writes what it produces besides results: simulator logs (``run.log``),
        reports, mapping files. Without one, backends that need a folder make a temporary one."""
        self.folder = Path(folder)

    @classmethod
    def validate_options(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Every declared option's value (defaults filled in); raises ConfigError for an unknown option
        or a bad value, before any work is done."""
        known = {option.name: option for option in cls.options}
        unknown = sorted(set(values) - set(known))
        if unknown:
            flags = ", ".join(known[k].flag if k in known else "--" + k.replace("_", "-") for k in unknown)
            offered = ", ".join(option.flag for option in cls.options if option.cli) or "none"
            raise ConfigError(f"{cls.name} backend has no option {flags} (its options: {offered})")
        return {name: option.check(cls.name, values.get(name, option.default)) for name, option in known.items()}

    @classmethod
    def missing_modules(cls) -> list[str]:
        """The modules of :attr:`requires_modules` that are not installed (looked up, not imported)."""
        from importlib.util import find_spec

        return [module for module in cls.requires_modules if find_spec(module) is None]

    @classmethod
    def install_hint(cls) -> str:
        """The command that installs what the backend needs."""
        return f'pip install -c constraints-cpu.txt -e ".[{cls.extra}]"' if cls.extra else "nothing to install"

    @classmethod
    def check_installed(cls) -> None:
        """Raises BackendError naming the missing modules and the install command, before any work."""
        missing = cls.missing_modules()
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise BackendError(f"the {cls.name} backend needs {', '.join(missing)}, which {verb} not installed: "
                               f"{cls.install_hint()} (from the repository root)")

    def build_estimate(self, network) -> str | None:
        """A stage line saying what building ``network`` for this backend costs before it starts (the
        size and an estimated time), where the build takes long enough to need one; None otherwise."""
        return None

    def option_values(self) -> dict[str, Any]:
        """The command-line options as this backend resolved them (JSON types; e.g. the device chosen)."""
        values = {option.name: getattr(self, option.name) for option in self.options if option.cli}
        return {k: v if isinstance(v, str | int | float | bool | type(None)) else str(v) for k, v in values.items()}

    # --- what the orchestrator asks -------------------------------------------------------------

    def describe(self) -> str:
        """One line on where this backend runs (device, machine, profile)."""
        return self.name

    def check_target(self) -> None:
        """Checks, within seconds and before any other work, that the machine this backend runs on can
        be reached; raises BackendError naming the machine and the cause. Default: nothing to check."""

    def requirements(self) -> Requirements:
        """What this backend needs of a network (see :class:`Requirements`)."""
        return Requirements()

    def prepare(self, network: Network, calibration: torch.Tensor, encoding: str = "analog",
                labels: torch.Tensor | None = None, T: int | None = None) -> Network:
        """Passes this backend needs on the converted network, given calibration items from the
        training split ``[N, *input_shape]`` (already through any host-side input pooling), the
        encoding the run will use and, where the job has them, the calibration items' labels ``[N]`` and the run's
        steps ``T`` (a backend that chooses a setting by accuracy needs them); returns the network (changed in place
        or new). Default: none."""
        return network

    def map(self, network: Network, run_dir: str | Path) -> dict | None:
        """Places the network on the target machine and returns the mapping report, or None where the
        backend has no placement (simulators)."""
        return None

    def exact_reference(self) -> tuple[str, dict] | None:
        """The backend (name, options) whose spike counts this one claims to equal neuron for neuron on
        the same network and items (checked by the conformance tests), or None."""
        return None

    def predictor(self) -> tuple[str, dict] | None:
        """The backend (name, options) whose results predict this one's when this one returns no data
        (a virtual board); None where this backend's own results are the data."""
        return None

    def accuracy_reference(self) -> tuple[str, dict] | None:
        """The backend (name, options) whose accuracy this one's should keep on the same network and items (a
        board's arithmetic against the IR's own semantics with the same delays), or None where there is none.
        A job that runs this backend checks its accuracy against it and, where it loses, runs
        :meth:`factor_variants` to say why (``neurodeploy.jobs.diagnosis``)."""
        return None

    def factor_variants(self) -> dict[str, tuple[str, dict]]:
        """``{factor: (backend name, options)}``: for each way this backend differs from its
        :meth:`accuracy_reference`, a backend that applies that difference on its own (on the same prepared
        network; the variants run it without preparing it again). Empty where there is no reference."""
        return {}

    # --- running ------------------------------------------------------------------------------

    def compile(self, network: Network, options: RunOptions) -> Session:
        """Builds the network once for a run (compilation, lowering)."""
        raise NotImplementedError

    def simulate_batch(self, session: Session, inputs: torch.Tensor, labels: torch.Tensor, first: int,
                       options: RunOptions) -> SimulationResult:
        """Simulates one batch ``inputs [B, *input_shape]`` (items ``first .. first + B - 1`` of the run)."""
        raise NotImplementedError

    def run(self, network: Network, inputs: torch.Tensor, labels: torch.Tensor, options: RunOptions,
            checkpoint_dir: str | Path | None = None) -> SimulationResult:
        """Simulates every item of ``inputs [N, *input_shape]`` for ``options.T`` steps.

        With ``checkpoint_dir`` finished batches are kept there, and a run that finds them resumes.
        The result's metadata records the backend, its options, T, dt, the encoding, timings and what
        :meth:`compile` reported (pipeline delay, neuron and synapse counts, populations).
        """
        options.validate()
        if options.exit_policy is not None and not self.supports_early_exit:
            raise BackendError(f"early exit inside the simulator is not implemented by the {self.name} backend")
        if options.record_neuron_counts and not self.supports_neuron_counts:
            raise BackendError(f"per-neuron spike counts are not implemented by the {self.name} backend")
        recorded = recorded_populations(network, options.record_spikes, options.encoding)
        if recorded and not self.supports_spike_recording:
            raise BackendError(f"spike recording is not implemented by the {self.name} backend")
        start_step = readout_start(network)
        if start_step and options.exit_policy is not None:
            raise BackendError(f"the network reads its output from step {start_step} on (a delayed readout); early "
                               "exit inside the simulator uses the full readout: run without --exit")
        check_inputs(network, inputs, labels)
        start = time.perf_counter()
        session = self.compile(network, options)
        build_s = time.perf_counter() - start

        def simulate(x: torch.Tensor, y: torch.Tensor, first: int) -> SimulationResult:
            return self.simulate_batch(session, x, y, first, options)

        start = time.perf_counter()
        result = run_in_batches(simulate, inputs, labels, options.batch_size, checkpoint_dir, options.progress,
                                self.describe())
        if start_step:
            result.readout = delayed_readout(result.readout, start_step, in_place=result.readout.flags.writeable)
            session.metadata["readout_start"] = start_step
        run_s = time.perf_counter() - start
        timings = {"build_s": build_s, **session.metadata.pop("timings", {}), "run_s": run_s,
                   "per_item_s": run_s / max(len(labels), 1)}
        result.metadata = {
            "backend": self.name,
            "options": self.option_values(),
            "encoding": options.encoding, "T": options.T, "dt_ms": 1.0,
            **session.metadata, "timings": timings,
        }
        if recorded:
            result.metadata["recorded_populations"] = recorded
        if options.exit_policy is not None:
            result.metadata["exit_policy"] = {"alpha": options.exit_policy.alpha,
                                              "threshold_log_odds": options.exit_policy.threshold_log_odds}
        return result.validate()


def recorded_populations(network: Network, names: tuple[str, ...], encoding: str = "analog") -> list[dict]:
    """(name, role, size) of each population of ``names``, in that order; raises ConfigError for a name the
    network does not have, or a population without spikes (a membrane readout, the input under analog
    ``encoding``: a current, not spikes)."""
    recorded = []
    for name in names:
        if name not in network.populations:
            raise ConfigError(f"the network has no population {name!r}{did_you_mean(name, network.populations)}")
        pop = network.populations[name]
        if pop.role == "output" and pop.neuron is not None and pop.neuron.readout != "spikes":
            raise ConfigError(f"population {name!r} is the membrane readout: it emits no spikes to record")
        if pop.role == "input" and encoding == "analog":
            raise ConfigError(f"population {name!r} is the input, which enters as a current under --encoding analog: "
                              "no spikes to record (record it with --encoding if or poisson)")
        recorded.append({"name": name, "role": pop.role, "size": int(pop.size)})
    return recorded


def readout_start(network: Network) -> int:
    """The step k after which the network's output is read (``network.metadata["readout_start"]``, set by
    the converter's delayed readout; 0: from the start)."""
    value = network.metadata.get("readout_start", 0) or 0
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"network metadata readout_start must be a whole number of steps >= 0, not {value!r}")
    return int(value)


def delayed_readout(readout: np.ndarray, start: int, in_place: bool = False) -> np.ndarray:
    """Delayed readout (``docs/semantics.md``): O'(t) = O(t) - O(k) for t > k, O(t) for t <= k, with
    ``readout [N, T, C]`` holding O(1) .. O(T) and k = ``start``; ``in_place`` changes ``readout`` itself
    (a run's result, so that it is not held twice)."""
    if start <= 0 or start >= readout.shape[1]:
        return readout
    out = readout if in_place else readout.copy()
    out[:, start:] -= out[:, start - 1: start]  # step k itself is not changed, so reading it while writing is safe
    return out


def check_inputs(network: Network, inputs: torch.Tensor, labels: torch.Tensor) -> None:
    """Raises DataError when inputs do not fit the network's input population."""
    expected = network.input.shape
    if tuple(inputs.shape[1:]) != tuple(expected):
        hint = (" (its fan-in pass moved the input's pooling to the host: pass the items through "
                "neurodeploy.passes.fan_in.pool_inputs first)" if network.metadata.get("input_pooling") else "")
        raise DataError(f"inputs have shape {tuple(inputs.shape[1:])} per item, the network expects {expected}{hint}")
    if labels.shape[0] != inputs.shape[0]:
        raise DataError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels")
    if inputs.shape[0] == 0:
        raise DataError("no items to simulate")
    if not torch.isfinite(inputs).all():
        raise DataError("inputs contain NaN or infinite values")


def run_in_batches(
    simulate_batch: Callable[[torch.Tensor, torch.Tensor, int], SimulationResult],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    description: str = "simulating",
) -> SimulationResult:
    """Runs ``simulate_batch(x, y, first_item_index)`` over batches and joins the results.

    With ``checkpoint_dir`` every finished batch is written there as ``batch_<first item>.npz``, and
    batches already present (from an interrupted run with the same batch size) are loaded instead of
    simulated again, so a long run resumes where it stopped. Batches are joined as they finish
    (:class:`ResultAssembler`): the run holds its result plus one batch, and a run of one batch only
    that batch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {batch_size}")
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    assembler = ResultAssembler(inputs.shape[0])
    bar = tqdm(total=inputs.shape[0], desc=description, unit="item", disable=not progress, leave=False)
    for start in range(0, inputs.shape[0], batch_size):
        stop = min(start + batch_size, inputs.shape[0])
        path = folder / f"batch_{start:07d}.npz" if folder is not None else None
        part = None
        if path is not None and path.exists():
            try:
                part = SimulationResult.load(path)
            except ResultFormatError:
                part = None  # a batch cut off mid-write: simulate it again
            if part is not None and (part.n_items != stop - start or not assembler.fits(part)):
                part = None
        if part is None:
            part = simulate_batch(inputs[start:stop], labels[start:stop], start)
            if path is not None:
                part.save(path)  # atomic: a temporary name renamed over the batch file
        assembler.add(start, part)
        del part  # the assembler holds its rows: the batch's own arrays can go before the next one
        bar.update(stop - start)
    bar.close()
    result = assembler.result()
    result.labels = np.asarray(result.labels, dtype=np.int64)
    return result
