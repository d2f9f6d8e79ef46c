"""SpiNNaker as a target (sPyNNaker 1!7.4.x): its number formats, ring-buffer rule, cell constants and
limits, the one place the spinnaker backend, the reference simulator's ``spinnaker`` profile and the
fan-in pass read them from, so all compute the same numbers (``docs/semantics.md``, "SpiNNaker").

S16.15: membrane parameters and state are signed 32-bit accums, range about +/-65536, resolution
2^-15. Ring buffers: each neuron accumulates the integer weights of the spikes arriving in a step in a
16-bit buffer per receptor (excitatory, inhibitory) that saturates at 65535; a weight w is stored as
``rint(|w| * 2^(15 - shift))`` and the buffer enters the neuron as ``buffer * 2^(shift - 15)``, where the
population's ``shift`` comes from its maximum expected summed weight (sPyNNaker's rule:
``population_vertex.get_ring_buffer_shifts``). IF_curr_delta: ``V <- a - e (a - V)`` with
``a = R * I``, ``R = tau_m / cm``, ``e = exp(-dt / tau_m)`` (dt = 1 ms), all in S16.15.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from neurodeploy.errors import BackendError

#: the fan-in the fan-in pass enforces on SpiNNaker targets unless the user says otherwise (the 2x2
#: input pooling of Dutson et al.'s SpiNNaker dense MNIST model brings 784 to 196)
MAX_FAN_IN = 256
#: neurons per core: at most 256 for ordinary synapses; 128 leaves room for the synaptic matrices
MAX_NEURONS_PER_CORE = 256
DEFAULT_NEURONS_PER_CORE = 128
#: membrane time constant (ms) of the IF_curr_delta cell: large, so the leak is small, and inside S16.15
DEFAULT_TAU_M = 1000.0

S1615_MAX = 65535.0 + (2**15 - 1) / 2**15
S1615_RESOLUTION = 2.0**-15
RING_BUFFER_MAX = 2**16 - 1


def check_s1615(population: str, parameter: str, values: np.ndarray) -> None:
    """Raises BackendError when any value of ``parameter`` is outside the S16.15 range."""
    values = np.asarray(values, np.float64)
    bad = np.flatnonzero(~(np.abs(values) <= S1615_MAX))
    if bad.size:
        index = int(bad[0])
        raise BackendError(
            f"population {population!r}: {parameter} of neuron {index} is {values[index]:.6g}, outside the S16.15 "
            f"range of SpiNNaker (|x| <= {S1615_MAX:.5f}); rescale the population (threshold, bias and incoming "
            "weights together)"
        )


def round_s1615(values):
    """Rounds to the nearest S16.15 value and saturates at the range: numpy arrays and numbers give a
    new float64 array; a torch tensor is rounded in place (and returned)."""
    if isinstance(values, np.ndarray | float | int):
        return np.clip(np.rint(np.asarray(values, np.float64) / S1615_RESOLUTION) * S1615_RESOLUTION,
                       -S1615_MAX, S1615_MAX)
    return values.div_(S1615_RESOLUTION).round_().mul_(S1615_RESOLUTION).clamp_(-S1615_MAX, S1615_MAX)


def lost_to_resolution(values: np.ndarray) -> float:
    """Fraction of non-zero values smaller than the S16.15 resolution (they would round to 0)."""
    values = np.asarray(values, np.float64)
    nonzero = values[values != 0]
    return float((np.abs(nonzero) < S1615_RESOLUTION / 2).mean()) if nonzero.size else 0.0


def ring_buffer_shift(max_summed_weight: float) -> int:
    """sPyNNaker's left shift for a receptor whose summed weight per step reaches ``max_summed_weight``:
    the smallest power of two above it (and at least 0)."""
    if max_summed_weight <= 0:
        return 0
    shift = int(math.ceil(max(0.0, math.log2(max_summed_weight))))
    return shift + 1 if 2.0**shift <= max_summed_weight else shift


def weight_scale(shift: int) -> float:
    """Integer ring-buffer units per unit of weight for a receptor with ``shift``."""
    return 2.0 ** (15 - shift)


def quantize_weights(weights: np.ndarray, shift: int) -> tuple[np.ndarray, int]:
    """The weights a receptor with ``shift`` really applies (magnitudes rounded to 16-bit integers of
    ``2^(shift - 15)``; signs kept), and how many magnitudes exceeded 16 bits and were clipped (sPyNNaker
    masks them to 16 bits; clipping is the kinder reading, and a shift from the summed weight never
    lets one synapse get there)."""
    scale = weight_scale(shift)
    units = np.rint(np.abs(weights) * scale)
    clipped = int((units > RING_BUFFER_MAX).sum())
    return np.sign(weights) * np.minimum(units, RING_BUFFER_MAX) / scale, clipped


def ring_buffer_limit(shift: int) -> float:
    """The largest summed weight one receptor's ring buffer holds in a step (it saturates there)."""
    return RING_BUFFER_MAX / weight_scale(shift)


@dataclass(frozen=True)
class DeltaCell:
    """The S16.15 constants of IF_curr_delta for a membrane time constant ``tau_m`` (ms, dt = 1 ms).

    ``cm`` is chosen so that the input gain ``R (1 - e)`` is 1: an input of w (nA) for one step moves V by
    w, as in the IR; what remains is the leak ``decay = e`` per step.
    """

    tau_m: float
    cm: float
    decay: float
    gain: float

    @staticmethod
    def for_tau(tau_m: float) -> DeltaCell:
        if not 1.0 <= tau_m <= 16384.0:
            raise BackendError(f"tau_m = {tau_m} ms is outside what S16.15 IF_curr_delta handles here (1..16384 ms)")
        decay = float(round_s1615(math.exp(-1.0 / tau_m)))
        cm = float(round_s1615(tau_m * (1.0 - decay)))
        resistance = float(round_s1615(tau_m / cm))
        return DeltaCell(tau_m, cm, decay, resistance * (1.0 - decay))
