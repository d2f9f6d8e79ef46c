"""Populations (groups of neurons with one shape and one neuron spec) and their neuron model."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from neurodeploy.errors import IRValidationError

Role = Literal["input", "hidden", "output"]
ResetMode = Literal["subtract", "zero"]
ResetTiming = Literal["immediate", "next_step"]
Readout = Literal["membrane", "spikes"]
ROLES: tuple[str, ...] = get_args(Role)
RESETS: tuple[str, ...] = get_args(ResetMode)
RESET_TIMINGS: tuple[str, ...] = get_args(ResetTiming)
READOUTS: tuple[str, ...] = get_args(Readout)
#: Named initial membranes, relative to the threshold: 0, theta / 2, i.i.d. uniform in [0, theta).
VINIT_NAMES = ("zero", "half", "uniform")
#: What a conversion may give hidden neurons beyond the IF neuron and not every backend implements, by the names
#: backends declare them with (``Backend.neuron_features``): "spike caps" (``spike_cap``; QFFS) and "negative
#: spikes" (``negative_spikes``; QFFS, and rate conversion with ``negative_spikes=True``).
CONVERSION_FEATURES = ("spike caps", "negative spikes")


@dataclass
class NeuronSpec:
    """Integrate-and-fire neuron of ``docs/semantics.md``, "Neuron model" (discrete time, unit time step).

    Per-neuron parameters are a scalar, per channel ``[C]`` or per neuron (population shape). Times are in
    steps, potentials in the unit of membrane potential.

    threshold: spike threshold theta (after normalization this is 1).
    reset: "subtract" (v -= theta) or "zero" (hard reset: v = ``v_reset``) after a spike.
    v_init: "zero" | "half" | "uniform" (relative to theta; uniform draws from [0, theta) with
        ``v_init_seed``), or an absolute value (scalar or array broadcastable to the population).
    leak_tau: membrane time constant in steps: per step v <- beta v + (1 - beta) v_leak + i with
        beta = exp(-1 / leak_tau); None = non-leaky (beta = 1).
    v_leak: the potential a leaky membrane decays towards.
    v_reset: the membrane after a spike with reset "zero".
    tau_syn: synaptic current time constant in steps: i <- exp(-1 / tau_syn) i + input each step, and the
        membrane integrates i; None = no synaptic current (i = input).
    reset_timing: "immediate" (the reset acts in the step of the spike) or "next_step" (reset "subtract"
        only: theta is subtracted in the next step, after the leak: snnTorch's delayed reset).
    spike_cap: QFFS cap on the net number of spikes per neuron, None = no cap.
    negative_spikes: QFFS negative spikes (a neuron with positive net count and v < 0 emits -theta).
    readout: output populations only: "membrane" (never spikes, O(t) = v(t)) or "spikes" (counts).
    """

    threshold: float | np.ndarray = 1.0
    reset: ResetMode = "subtract"
    v_init: str | float | np.ndarray = "zero"
    v_init_seed: int = 0
    leak_tau: float | np.ndarray | None = None
    v_leak: float | np.ndarray = 0.0
    v_reset: float | np.ndarray = 0.0
    tau_syn: float | np.ndarray | None = None
    reset_timing: ResetTiming = "immediate"
    spike_cap: int | None = None
    negative_spikes: bool = False
    readout: Readout = "membrane"

    def conversion_features(self) -> list[str]:
        """The :data:`CONVERSION_FEATURES` this neuron uses, in that order."""
        return [name for name, used in zip(CONVERSION_FEATURES, (self.spike_cap is not None, self.negative_spikes),
                                           strict=True) if used]

    def dynamics(self) -> list[str]:
        """What the neuron uses beyond the non-leaky IF neuron of converted networks, by the names backends
        refuse them with: "leak" (leak_tau), "per-neuron leak_tau", "v_leak", "v_reset", "tau_syn",
        "next-step reset". Empty for converted networks' neurons."""
        used = []
        if self.leak_tau is not None:
            used.append("leak" if np.ndim(self.leak_tau) == 0 else "per-neuron leak_tau")
        for name, flag in (("v_leak", _nonzero(self.v_leak)), ("v_reset", _nonzero(self.v_reset)),
                           ("tau_syn", self.tau_syn is not None),
                           ("next-step reset", self.reset_timing == "next_step")):
            if flag:
                used.append(name)
        return used


def _nonzero(value) -> bool:
    return bool(np.any(np.asarray(value) != 0))


def initial_membrane(neuron: NeuronSpec, shape: tuple[int, ...]) -> np.ndarray:
    """The initial membrane of every neuron, float32 array of ``shape``; every backend uses this so
    "uniform" draws are identical everywhere (numpy PCG64 seeded with ``v_init_seed``)."""
    theta = per_neuron(neuron.threshold, shape)
    if isinstance(neuron.v_init, str):
        if neuron.v_init == "zero":
            return np.zeros(shape, np.float32)
        if neuron.v_init == "half":
            return (0.5 * theta).astype(np.float32)
        uniform = np.random.default_rng(int(neuron.v_init_seed)).random(shape)
        return (uniform * theta).astype(np.float32)
    return per_neuron(neuron.v_init, shape).astype(np.float32)


def per_neuron(value, shape: tuple[int, ...]) -> np.ndarray:
    """A scalar, per-channel ``[C]`` or per-neuron value as a float64 array of ``shape``."""
    array = np.asarray(value, np.float64)
    if array.ndim == 1 and len(shape) > 1 and array.shape[0] == shape[0]:
        array = array.reshape((-1,) + (1,) * (len(shape) - 1))
    return np.broadcast_to(array, shape).copy()


@dataclass
class Population:
    """A group of neurons.

    name: unique name in the network.
    shape: neuron layout without the batch dimension, e.g. ``(128,)`` or ``(32, 28, 28)``.
    role: "input" (driven by the encoder, no neuron spec), "hidden" (spiking) or "output" (readout).
    neuron: the neuron spec (None for the input population).
    bias: constant input current per step, per neuron (``shape``) or per channel (``[C]``), or None.
    """

    name: str
    shape: tuple[int, ...]
    role: Role
    neuron: NeuronSpec | None = None
    bias: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.shape, str | bytes) or not hasattr(self.shape, "__iter__"):
            raise IRValidationError(f"population {self.name!r}: shape must be a list of whole numbers, got "
                                    f"{self.shape!r:.60}")
        dims = []
        for dim in self.shape:
            if isinstance(dim, bool | np.bool_) or not isinstance(dim, numbers.Integral | np.integer):
                raise IRValidationError(f"population {self.name!r}: shape {list(self.shape)!r:.60} holds {dim!r:.30}, "
                                        "not a whole number")
            dims.append(int(dim))
        self.shape = tuple(dims)

    @property
    def size(self) -> int:
        """Number of neurons."""
        return int(np.prod(self.shape))
