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

Sub-stepping (:data:`SUBSTEPS`): ``machine_time_step`` is ``1 / k`` ms, so one IR step (1 ms) is k ticks; the cells'
constants are those of dt = 1/k ms (:meth:`DeltaCell.for_tau`, :meth:`ExpCell.for_tau`), a bias or analog input
current enters as ``1 / k`` of itself per tick, weights are unchanged (a spike still moves its target by w), every
projection's delay is one tick, and the run is slowed by ``time_scale_factor = k`` so that every tick keeps the 1 ms
of wall-clock time a tick has at dt = 1 ms: a board run of T steps lasts k T ms instead of T ms
(``docs/spinnaker-hardware.md``, "Sub-stepping").
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
#: what the SpiNNaker path (the spinnaker backend and the gpu backend's profiles that predict it) carries of
#: ``neurodeploy.ir.network.BEYOND_IF``: recurrent projections of one step (ordinary projections for sPyNNaker).
#: Not yet: the IR's leak, v_leak, v_reset and tau_syn (the cells' own tau_m, cm and tau_syn are set to emulate
#: the non-leaky IF neuron), delays of more than one step, spike-count readouts, the delayed reset
CARRIES = ("recurrence",)
#: how refusals name the cells
CELLS = "the SpiNNaker path (IF_curr_delta / IF_curr_exp set to emulate the non-leaky IF neuron)"


def check_carried(network) -> None:
    """Raises BackendError, in one line, when ``network`` (an IR ``Network``) uses what the SpiNNaker path
    does not carry (:data:`CARRIES`); called before any work."""
    missing = network.beyond(CARRIES)
    if missing:
        where, what = missing[0]
        raise BackendError(f"{where} uses {', '.join(what)}, which {CELLS} does not implement; use the gpu "
                           "backend's ideal or pynn profile, or the neuron backend")

#: ticks per IR step the SpiNNaker path offers: ``machine_time_step = 1000 / k`` microseconds must be a whole
#: number of microseconds (sPyNNaker's unit) and the tick ``1 / k`` ms exact in S16.15
SUBSTEPS = (1, 2, 4, 8)


def machine_time_step_us(substeps: int) -> int:
    """sPyNNaker's ``machine_time_step`` (microseconds) for ``substeps`` ticks per 1 ms IR step."""
    if substeps not in SUBSTEPS:
        raise BackendError(f"substeps = {substeps}: choose one of {', '.join(map(str, SUBSTEPS))}")
    return 1000 // substeps


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


def quantize_weights(weights: np.ndarray, shift: int, limit: int = RING_BUFFER_MAX) -> tuple[np.ndarray, int]:
    """The weights a receptor with ``shift`` really applies (magnitudes rounded to 16-bit integers of
    ``2^(shift - 15)``; signs kept), and how many magnitudes exceeded 16 bits and were clipped (sPyNNaker
    masks them to 16 bits; clipping is the kinder reading, and a shift from the summed weight never
    lets one synapse get there). ``limit``: the largest integer magnitude (``LOCAL_ONLY_WEIGHT_MAX`` for
    the int16 weights of local-only connectors)."""
    scale = weight_scale(shift)
    units = np.rint(np.abs(weights) * scale)
    clipped = int((units > limit).sum())
    return np.sign(weights) * np.minimum(units, limit) / scale, clipped


def ring_buffer_limit(shift: int) -> float:
    """The largest summed weight one receptor's ring buffer holds in a step (it saturates there)."""
    return RING_BUFFER_MAX / weight_scale(shift)


@dataclass(frozen=True)
class DeltaCell:
    """The S16.15 constants of IF_curr_delta for a membrane time constant ``tau_m`` (ms) and a tick of ``dt``
    ms (1, or ``1 / k`` with k sub-steps).

    ``cm`` is chosen so that the input gain ``R (1 - e)`` is 1: an input of w (nA) for one tick moves V by
    w, as in the IR; what remains is the leak ``decay = e`` per tick. A bias b per IR step is the current
    ``b dt`` (:meth:`offset_for`).
    """

    tau_m: float
    cm: float
    decay: float
    gain: float
    dt: float = 1.0

    @staticmethod
    def for_tau(tau_m: float, dt: float = 1.0) -> DeltaCell:
        if not 1.0 <= tau_m <= 16384.0:
            raise BackendError(f"tau_m = {tau_m} ms is outside what S16.15 IF_curr_delta handles here (1..16384 ms)")
        decay = float(round_s1615(math.exp(-dt / tau_m)))
        cm = float(round_s1615(tau_m * (1.0 - decay)))
        resistance = float(round_s1615(tau_m / cm))
        return DeltaCell(tau_m, cm, decay, resistance * (1.0 - decay), dt)

    def offset_for(self, bias):
        """``i_offset`` (nA, unrounded: sPyNNaker rounds it to S16.15) for a bias ``bias`` per IR step: the
        tick's share ``bias * dt`` (numbers and numpy arrays)."""
        return np.asarray(bias, np.float64) * self.dt


#: synaptic time constant (ms) of the IF_curr_exp cell: exp(-1 / (1/32)) = exp(-32) is 0 in sPyNNaker's u0.32
#: decay, so a spike's current acts in its arrival step only, as a delta synapse's
DEFAULT_TAU_SYN = 1.0 / 32
#: the longest IF_curr_exp membrane time constant per ms of tick that :meth:`ExpCell.for_tick` uses (R in S16.15)
EXP_TAU_M_PER_MS = 1900.0
#: magnitude limit of local-only (ConvolutionConnector, PoolDenseConnector) weights: int16 after scaling
LOCAL_ONLY_WEIGHT_MAX = 2**15 - 1
U032_ONE = 2**32


@dataclass(frozen=True)
class ExpCell:
    """The constants of IF_curr_exp (``tau_refrac = 0``, a tick of ``dt`` ms: 1, or ``1 / k`` with k sub-steps),
    the cell of local-only connectors, as sPyNNaker 1!7.4.x computes them on the chip: membrane
    ``decay = e = exp(-dt / tau_m)`` and ``resistance = R = tau_m / cm`` in S16.15; synaptic
    ``decay_bits = exp(-dt / tau_syn)`` and ``init_bits = (tau_syn / dt) (1 - decay)`` in u0.32 (``1 - decay``
    taken as ``2^32 - 1 - decay_bits``). ``tau_syn`` defaults to ``dt / 32``, so a spike's current lasts one tick.

    One step (tick) per neuron: the ring buffer's summed input x of each receptor (S16.15, see
    :func:`weight_scale`) enters its synaptic current as ``I += floor(x * init)`` (:meth:`synaptic_input`);
    the membrane takes ``V <- e V + R (1 - e) (I_exc - I_inh + i_offset)`` (the closed form
    ``a - e (a - V)``, ``a = R I``); a spike at ``V >= v_thresh`` resets V to 0; then ``I <- floor(I *
    decay)``, which is 0 for ``tau_syn <= 1/32`` ms. ``cm`` makes ``gain = R (1 - e) init`` 1 (a
    weight w moves V by w); ``bias_gain = R (1 - e)`` is what one unit of ``i_offset`` adds per step,
    so a bias b per IR step is sent as ``i_offset = b dt / bias_gain`` (:meth:`offset_for`).
    """

    tau_m: float
    tau_syn: float
    cm: float
    decay: float
    resistance: float
    syn_decay_bits: int
    init_bits: int
    bias_gain: float
    gain: float
    dt: float = 1.0

    @staticmethod
    def for_tau(tau_m: float, tau_syn: float | None = None, dt: float = 1.0) -> ExpCell:
        tau_syn = float(round_s1615(DEFAULT_TAU_SYN * dt if tau_syn is None else tau_syn))
        syn_decay_bits = int(round(math.exp(-dt / tau_syn) * U032_ONE)) if tau_syn > 0 else 0
        if tau_syn <= 0 or syn_decay_bits:
            raise BackendError(f"tau_syn = {tau_syn} ms: the IF_curr_exp cell here needs 0 < tau_syn <= {0.04 * dt:g} "
                               f"ms, so that the synaptic current decays to 0 within one {dt:g} ms tick")
        init_bits = (int(round(tau_syn / dt / S1615_RESOLUTION)) * (U032_ONE - 1 - syn_decay_bits)) >> 15
        decay = float(round_s1615(math.exp(-dt / tau_m)))
        cm = float(round_s1615(tau_m * (1.0 - decay) * init_bits / U032_ONE))
        resistance = tau_m / cm if cm > 0 else math.inf
        if not 1.0 <= tau_m <= 16384.0 or resistance > S1615_MAX:
            raise BackendError(f"tau_m = {tau_m} ms is outside what S16.15 IF_curr_exp handles here (R = tau_m / cm "
                               f"must stay below {S1615_MAX:.0f}: tau_m below about 1985 ms with tau_syn = "
                               f"{tau_syn} ms)")
        resistance = float(round_s1615(resistance))
        bias_gain = resistance * (1.0 - decay)
        return ExpCell(tau_m, tau_syn, cm, decay, resistance, syn_decay_bits, init_bits, bias_gain,
                       bias_gain * init_bits / U032_ONE, dt)

    @staticmethod
    def for_tick(tau_m: float, dt: float = 1.0) -> ExpCell:
        """:meth:`for_tau` with ``tau_m`` capped at ``EXP_TAU_M_PER_MS * dt``: with ``tau_syn = dt / 32`` the
        resistance ``R ~ 32 tau_m / dt`` that makes a weight w move V by w leaves S16.15 above about 1985 dt ms, so
        a sub-stepped IF_curr_exp leaks more per IR step (``k / tau_m``: 0.1 % at dt = 1/2, 0.2 % at 1/4)."""
        return ExpCell.for_tau(min(tau_m, EXP_TAU_M_PER_MS * dt), dt=dt)

    def synaptic_input(self, summed: np.ndarray) -> np.ndarray:
        """The synaptic current ``floor(x * init)`` (S16.15) of one receptor's summed ring-buffer input
        ``summed`` (non-negative S16.15 values)."""
        bits = np.rint(np.asarray(summed, np.float64) / S1615_RESOLUTION).astype(np.int64)
        return ((bits * self.init_bits) >> 32) * S1615_RESOLUTION

    def offset_for(self, bias):
        """``i_offset`` (S16.15) for a membrane bias ``bias`` per IR step, i.e. ``bias * dt`` per tick (numbers and
        numpy arrays)."""
        return round_s1615(np.asarray(bias, np.float64) * self.dt / self.bias_gain)

# --- energy (SpiNNaker 1), the figures of sPyNNaker's own energy report (spinn_machine, VersionSpin1) --------
#: router energy per transmitted bit (Painkras et al., "SpiNNaker: A 1-W 18-core system-on-chip for
#: massively-parallel neural network simulation", IEEE JSSC 48(8), 2013)
JOULES_PER_ROUTER_BIT = 25e-12
#: a multicast spike packet is 40 bits (1 nJ per router it passes); 72 bits with a 32-bit payload (1.8 nJ)
PACKET_BITS = 40
PACKET_WITH_PAYLOAD_BITS = 72
JOULES_PER_PACKET = JOULES_PER_ROUTER_BIT * PACKET_BITS
JOULES_PER_PACKET_WITH_PAYLOAD = JOULES_PER_ROUTER_BIT * PACKET_WITH_PAYLOAD_BITS
#: power of a chip with every core idle (a 48-chip board measured at 16.82 W idle, SDRAM included)
WATTS_PER_IDLE_CHIP = 0.35
#: extra power of one core running (806 active cores on a 48-chip board added 27.5 W)
WATTS_PER_ACTIVE_CORE = 0.034
#: cores per chip; one runs the monitor, so at most 17 run application vertices
CORES_PER_CHIP = 18
APPLICATION_CORES_PER_CHIP = 17
