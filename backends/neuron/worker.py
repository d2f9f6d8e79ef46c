"""Runs in a fresh process: builds the lowered network in NEURON through PyNN and simulates items.

Profile "exact" (the NL-IAF artificial cell): step k is evaluated at t = k - 0.25 ms, synapses delay
0.5 ms (one step, see nmodl/nliaf.mod), and the output membrane is sampled at t = k ms, after step k.

Profile "standard" (PyNN's IF_curr_exp, integrated with dt = 0.1 ms): one IR step is 1 ms, v is in
units of the IR's membrane (1 mV = 1), cm = 1 nF and tau_m = 1e6 ms (no leak within a run), reset to
0 mV (hard reset), tau_refrac = 0, synapses delay 1 ms. A spike of amplitude A must move the target's
membrane by A x weight; NEURON holds the exponential synaptic current i_n = w exp(-n dt / tau_syn)
over each dt, so one event delivers w dt / (1 - exp(-dt / tau_syn)) pC and the PyNN weight is
A x weight x cm (1 - exp(-dt / tau_syn)) / dt nA. Bias and input drive become i_offset (nA = mV/ms),
from t = 0. Spike times are continuous, so counts approximate the exact cell's.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np

from neurodeploy.backends.neuron.mechanisms import ensure_pynn_mechanisms, load_nliaf
from neurodeploy.backends.pynn.lowering import LoweredNetwork, LoweredPopulation

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
                              "reset_zero": 0.0}
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


class _Exact:
    """The NL-IAF cell: spikes on the step grid, drive set per item."""

    membrane = "vm"
    weight_scale = 1.0
    delay_ms = DELAY_MS

    def __init__(self, sim):
        from pyNN.neuron import h

        load_nliaf(h)
        sim.setup(timestep=TIMESTEP_MS, min_delay=DELAY_MS, max_delay=DELAY_MS)
        self.cell_type = _nliaf_type(h)

    def population(self, sim, pop: LoweredPopulation):
        theta = _threshold(pop)
        return sim.Population(pop.size, self.cell_type(v0=pop.v_init, theta=theta, bias=pop.bias,
                                                       reset_zero=float(pop.reset_zero)), label=pop.name)

    @staticmethod
    def set_drive(population, pop: LoweredPopulation, drive: np.ndarray) -> None:
        population.set(drive=drive)

    @staticmethod
    def steps(times: np.ndarray) -> np.ndarray:
        """1-based step of each spike time (ms)."""
        return np.rint(times + 0.25).astype(int)


class _Standard:
    """PyNN's IF_curr_exp (see the module docstring for the units)."""

    membrane = "v"
    weight_scale = standard_weight_scale()
    delay_ms = 1.0

    def __init__(self, sim):
        sim.setup(timestep=STANDARD_DT_MS, min_delay=1.0, max_delay=1.0)

    @staticmethod
    def population(sim, pop: LoweredPopulation):
        theta = _threshold(pop)
        cell = sim.IF_curr_exp(tau_m=STANDARD_TAU_M_MS, cm=1.0, v_rest=0.0, v_reset=0.0, tau_refrac=0.0,
                               tau_syn_E=STANDARD_TAU_SYN_MS, tau_syn_I=STANDARD_TAU_SYN_MS, v_thresh=theta,
                               i_offset=pop.bias)
        return sim.Population(pop.size, cell, label=pop.name, initial_values={"v": pop.v_init})

    @staticmethod
    def set_drive(population, pop: LoweredPopulation, drive: np.ndarray) -> None:
        population.set(i_offset=pop.bias + drive)

    @staticmethod
    def steps(times: np.ndarray) -> np.ndarray:
        return np.ceil(times - 1e-9).astype(int)


PROFILES = {"exact": _Exact, "standard": _Standard}


def simulate_items(lowered: LoweredNetwork, x: np.ndarray, T: int, profile: str = "exact") -> dict:
    """Builds the network once and simulates every item of ``x``; returns readout ``[B, T, C]``,
    spikes and synaptic events ``[B, T, P]`` per step and non-input population, spikes per neuron
    over the run ``[B, M]`` (non-input populations concatenated), and build / run seconds."""
    start = time.perf_counter()
    ensure_pynn_mechanisms()
    import pyNN.neuron as sim

    cell = PROFILES[profile](sim)
    pops = {}
    for pop in lowered.populations:
        pops[pop.name] = cell.population(sim, pop)
        pops[pop.name].record("spikes" if pop.spiking else cell.membrane, sampling_interval=1.0)
    for synapses in lowered.synapses:
        for receptor, mask in (("excitatory", synapses.weight > 0), ("inhibitory", synapses.weight < 0)):
            if not mask.any():
                continue
            connections = np.stack([synapses.pre[mask], synapses.post[mask], synapses.weight[mask] * cell.weight_scale,
                                    np.full(mask.sum(), cell.delay_ms)], axis=1)
            sim.Projection(pops[synapses.source], pops[synapses.target], sim.FromListConnector(connections),
                           sim.StaticSynapse(), receptor_type=receptor)
    build_s = time.perf_counter() - start
    drives = lowered.drive(x)
    by_name = {pop.name: pop for pop in lowered.populations}
    output = next(p for p in lowered.populations if p.role == "output")
    readout = np.zeros((x.shape[0], T, output.size), np.float32)
    spikes = np.zeros((x.shape[0], T, len(lowered.populations)), np.float32)
    events = np.zeros_like(spikes)
    offsets = np.cumsum([0] + [pop.size for pop in lowered.populations])
    neurons = np.zeros((x.shape[0], offsets[-1]), np.float32)
    start = time.perf_counter()
    for item in range(x.shape[0]):
        for name, drive in drives.items():
            cell.set_drive(pops[name], by_name[name], drive[item])
        sim.run(T + 0.5)
        for p, pop in enumerate(lowered.populations):
            block = pops[pop.name].get_data(clear=True).segments[-1]
            if pop.spiking:
                for train in block.spiketrains:
                    steps = cell.steps(np.asarray(train.magnitude))
                    steps = steps[(steps >= 1) & (steps <= T)] - 1
                    index = int(train.annotations["source_index"])
                    np.add.at(spikes[item, :, p], steps, 1)
                    np.add.at(events[item, :, p], steps, pop.fan_out[index])
                    neurons[item, offsets[p] + index] = steps.size
            else:
                signal = np.asarray(block.filter(name=cell.membrane)[0].magnitude)  # samples at t = 0, 1, ..., T
                readout[item] = signal[1:T + 1]
        sim.reset()
    run_s = time.perf_counter() - start
    sim.end()
    return {"readout": readout, "spikes": spikes, "events": events, "neurons": neurons, "build_s": build_s,
            "run_s": run_s}
