"""Runs in a fresh process: NEURON's cell profiles for the shared PyNN runner (``backends/pynn/runner.py``),
and :func:`simulate_items`, which builds the lowered network in NEURON through PyNN and simulates items.

Profile "exact" (the discrete-time artificial cell of nmodl/nliaf.mod): step k is evaluated at t = k - 0.25 ms,
synapses of d steps delay d - 0.5 ms (0.5 ms for one step), and the output membrane is sampled at t = k ms,
after step k. Leak, v_leak, the synaptic current and the delayed reset are the cell's "general" mode, with the
per-step factors of the lowering (``LoweredPopulation``), so it computes the IR's update exactly.
An input spike of step k (IF-encoded input) leaves its source at t = k - 0.25 ms, like a neuron's spike.

Profile "standard" (PyNN's IF_curr_exp, integrated with dt = 0.1 ms): one IR step is 1 ms, v is in
units of the IR's membrane (1 mV = 1), cm = 1 nF and tau_m = 1e6 ms (no leak within a run), reset to
0 mV (hard reset), tau_refrac = 0, synapses delay 1 ms. A spike of amplitude A must move the target's
membrane by A x weight; NEURON holds the exponential synaptic current i_n = w exp(-n dt / tau_syn)
over each dt, so one event delivers w dt / (1 - exp(-dt / tau_syn)) pC and the PyNN weight is
A x weight x cm (1 - exp(-dt / tau_syn)) / dt nA. Bias and input drive become i_offset (nA = mV/ms),
from t = 0. Spike times are continuous, so counts approximate the exact cell's; a spike in (k - 1, k] ms
belongs to step k, and an input spike of step k leaves its source at t = k - 1 ms.

Both profiles read spikes and membranes straight from NEURON vectors (``NetCon.record`` into one pair of
vectors per population, ``Vector.record`` of the output membrane every 1 ms), which NEURON empties at
each reset; PyNN's recorder would build a Neo object per neuron and item (two thirds of the run time of
a dense MNIST network, measured).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from neurodeploy.backends.neuron.mechanisms import ensure_pynn_mechanisms, load_nliaf
from neurodeploy.backends.pynn.lowering import LoweredNetwork, LoweredPopulation
from neurodeploy.backends.pynn.runner import PyNNRunner, build_network, delay_ms, log_to_file

DELAY_MS = 0.5
TIMESTEP_MS = 0.25
HUGE_THRESHOLD = 1e30
STANDARD_DT_MS = 0.1
STANDARD_TAU_SYN_MS = 0.1
STANDARD_TAU_M_MS = 1e6


def standard_weight_scale(dt: float = STANDARD_DT_MS, tau_syn: float = STANDARD_TAU_SYN_MS, cm: float = 1.0) -> float:
    """PyNN weight (nA) of IF_curr_exp per unit of membrane change (mV) of one synaptic event."""
    return cm * (1.0 - math.exp(-dt / tau_syn)) / dt


def _nliaf_type(h):
    from neuron import hclass
    from pyNN.neuron.cells import NativeCellType

    class NLIAFCell(hclass(h.NLIAF)):
        """A PyNN-compatible wrapper of the NLIAF artificial cell (it is its own synapse)."""

        def __init__(self, **parameters):
            for name, value in parameters.items():
                setattr(self, name, value)
            self.source = self
            self.source_section = None
            self.spike_times = h.Vector(0)
            self.traces = defaultdict(list)  # PyNN's recorder keeps state-variable vectors here
            self.recording_time = 0
            self.rec = h.NetCon(self, None)
            self.excitatory = self.inhibitory = self

        def __new__(cls, *args, **kwargs):
            return super().__new__(cls)

        def memb_init(self):
            """The membrane starts at v0 in the mechanism's INITIAL block; nothing to do here."""

    class NLIAFType(NativeCellType):
        default_parameters = {"v0": 0.0, "theta": 1.0, "bias": 0.0, "drive": 0.0, "drive_start": 2.0,
                              "reset_zero": 0.0, "general": 0.0, "decay": 1.0, "leak_drive": 0.0, "has_syn": 0.0,
                              "syn_decay": 0.0, "v_reset": 0.0, "reset_next": 0.0}
        default_initial_values = {}
        recordable = ["spikes", "vm"]
        units = {"vm": "dimensionless"}
        receptor_types = ["excitatory", "inhibitory"]
        conductance_based = False
        model = NLIAFCell

    return NLIAFType


def _threshold(pop: LoweredPopulation) -> np.ndarray:
    """Per-neuron firing threshold; the non-spiking output gets one it never reaches."""
    return pop.threshold if pop.spiking else np.full(pop.size, HUGE_THRESHOLD)


class _NeuronCell:
    """What both NEURON profiles share: spike sources, signed weights, recording into NEURON vectors."""

    weight_scale = 1.0
    #: an input spike of step k leaves its source at t = k + input_offset_ms (ms)
    input_offset_ms = 0.0

    def __init__(self):
        self._spikes: dict[str, tuple[Any, Any]] = {}
        self._membranes: dict[str, list] = {}

    @staticmethod
    def source(sim, size: int, label: str):
        return sim.Population(size, sim.SpikeSourceArray(spike_times=[]), label=label)

    def weights(self, weights: np.ndarray) -> np.ndarray:
        return weights * self.weight_scale

    def set_spikes(self, population, steps: list[np.ndarray]) -> None:
        from pyNN.parameters import Sequence

        population.set(spike_times=[Sequence(s + self.input_offset_ms) for s in steps])

    @staticmethod
    def run_ms(T: int) -> float:
        return T + 0.5

    @staticmethod
    def reset(sim) -> None:
        sim.reset()

    def record(self, population, pop: LoweredPopulation) -> None:
        from neuron import h

        # a population iterates over the cells of this rank (all of them in one process): record each under
        # its index in the population
        if pop.spiking:
            times, ids = h.Vector(), h.Vector()
            for cell in population:
                cell._cell.rec.record(times, ids, int(population.id_to_index(cell)))
            self._spikes[population.label] = (times, ids)
        if pop.role == "output":
            indices, vectors = [], []
            for cell in population:
                vector = h.Vector()
                vector.record(self.membrane_ref(cell._cell), 1.0)
                indices.append(int(population.id_to_index(cell)))
                vectors.append(vector)
            self._membranes[population.label] = (np.array(indices, np.int64), vectors)

    def read_spikes(self, population) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's spikes of ``population`` (each rank returns all of them)."""
        times, ids = self._spikes[population.label]
        parts = _all_ranks((ids.as_numpy().astype(np.int64), self.steps(times.as_numpy())))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def read_membrane(self, population) -> np.ndarray:
        """Every rank's membrane samples of ``population`` ``[samples, size]``."""
        indices, vectors = self._membranes[population.label]
        local = np.stack([v.as_numpy() for v in vectors], axis=1) if vectors else None
        parts = [(i, m) for i, m in _all_ranks((indices, local)) if m is not None]
        samples = min(m.shape[0] for _, m in parts)  # ranks record the same steps
        membrane = np.zeros((samples, population.size))
        for index, values in parts:
            membrane[:, index] = values[:samples]
        return membrane


def _all_ranks(value: Any) -> list:
    """``value`` of every NEURON rank, in rank order (``[value]`` in one process): NEURON's ParallelContext
    gathers them, so the cells-over-ranks mode needs nothing beyond NEURON."""
    from neuron import h

    context = h.ParallelContext()
    return [value] if int(context.nhost()) == 1 else list(context.py_allgather(value))


class _Exact(_NeuronCell):
    """The NL-IAF cell: spikes on the step grid, drive set per item."""

    delay_ms = DELAY_MS
    input_offset_ms = -TIMESTEP_MS

    def __init__(self, sim, max_delay_steps: int = 1):
        from pyNN.neuron import h

        super().__init__()
        load_nliaf(h)
        sim.setup(timestep=TIMESTEP_MS, min_delay=DELAY_MS, max_delay=delay_ms(self, max_delay_steps))
        self.cell_type = _nliaf_type(h)

    def population(self, sim, pop: LoweredPopulation):
        theta = _threshold(pop)
        parameters = {"v0": pop.v_init, "theta": theta, "bias": pop.bias, "reset_zero": float(pop.reset_zero),
                      "drive_start": float(pop.drive_delay + 1)}
        if pop.reset_zero:
            parameters["v_reset"] = pop.v_reset
        general = {"decay": pop.decay, "leak_drive": pop.leak_drive, "syn_decay": pop.syn_decay}
        if any(value is not None for value in general.values()) or pop.reset_next_step:
            parameters.update({key: value for key, value in general.items() if value is not None},
                              general=1.0, has_syn=float(pop.syn_decay is not None),
                              reset_next=float(pop.reset_next_step))
        return sim.Population(pop.size, self.cell_type(**parameters), label=pop.name)

    @staticmethod
    def membrane_ref(cell):
        return cell._ref_vm

    @staticmethod
    def set_drive(population, pop: LoweredPopulation, drive: np.ndarray) -> None:
        population.set(drive=drive)

    @staticmethod
    def steps(times: np.ndarray) -> np.ndarray:
        """1-based step of each spike time (ms)."""
        return np.rint(times + 0.25).astype(np.int64)


class _Standard(_NeuronCell):
    """PyNN's IF_curr_exp (see the module docstring for the units)."""

    weight_scale = standard_weight_scale()
    delay_ms = 1.0
    input_offset_ms = -1.0

    def __init__(self, sim, max_delay_steps: int = 1):
        super().__init__()
        sim.setup(timestep=STANDARD_DT_MS, min_delay=1.0, max_delay=delay_ms(self, max_delay_steps))

    @staticmethod
    def population(sim, pop: LoweredPopulation):
        theta = _threshold(pop)
        cell = sim.IF_curr_exp(tau_m=STANDARD_TAU_M_MS, cm=1.0, v_rest=0.0, v_reset=0.0, tau_refrac=0.0,
                               tau_syn_E=STANDARD_TAU_SYN_MS, tau_syn_I=STANDARD_TAU_SYN_MS, v_thresh=theta,
                               i_offset=pop.bias)
        return sim.Population(pop.size, cell, label=pop.name, initial_values={"v": pop.v_init})

    @staticmethod
    def membrane_ref(cell):
        return cell.source_section(0.5)._ref_v

    @staticmethod
    def set_drive(population, pop: LoweredPopulation, drive: np.ndarray) -> None:
        population.set(i_offset=pop.bias + drive)

    @staticmethod
    def steps(times: np.ndarray) -> np.ndarray:
        return np.ceil(times - 1e-9).astype(np.int64)


PROFILES = {"exact": _Exact, "standard": _Standard}


def simulate_items(lowered: LoweredNetwork, x: np.ndarray, T: int, profile: str = "exact",
                   log_path: str | Path | None = None, cells_over_ranks: bool = False,
                   record: tuple[str, ...] = ()) -> dict:
    """Builds the network once and simulates every item of ``x [B, *input_shape]`` for T steps with the
    shared PyNN runner; the input is current injection or, when ``lowered`` has synapses from the input,
    IF-encoded spike sources. Returns the runner's dict (readout ``[B, T, C]``, spikes and synaptic events
    ``[B, T, P]`` per step and non-input population, spikes per neuron over the run ``[B, M]``, the input's
    spikes, see ``PyNNRunner.run_items``) plus build seconds ``build_s`` and the ranks NEURON ran on
    ``neuron_ranks``. With ``log_path`` NEURON's and
    PyNN's output goes to that file instead of the terminal. ``cells_over_ranks``: every MPI rank calls this
    with the same arguments, NEURON runs on MPI (``MPI_LIB_NRN_PATH`` names the MPI library), PyNN places
    each population's cells round-robin on the ranks, NEURON's ParallelContext carries spikes between ranks,
    and every rank returns the whole result. ``record``: populations whose every spike is returned step by step
    (``recorded``, read from the same NEURON vectors as the counts: PyNN's own recorder would take over the
    cell's one NetCon, which those vectors use)."""
    ensure_pynn_mechanisms()
    with log_to_file(log_path) if log_path is not None else nullcontext():
        start = time.perf_counter()
        if cells_over_ranks:
            from neuron import h

            h.nrnmpi_init()  # before pyNN.neuron makes its ParallelContext: PyNN then sees every rank
        import pyNN.neuron as sim

        cell = PROFILES[profile](sim, max((max(s.delay, 1) for s in lowered.synapses), default=1))
        built = build_network(sim, cell, lowered)
        build_s = time.perf_counter() - start
        result = PyNNRunner(sim, cell, lowered, built).run_items(x, T, record)
        ranks = sim.num_processes()
        sim.end()
    return {**result, "build_s": build_s, "neuron_ranks": ranks}
