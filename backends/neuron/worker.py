"""Runs in a fresh process: builds the lowered network in NEURON through PyNN and simulates items.

Time base: step k is evaluated at t = k - 0.25 ms by the NL-IAF cell, synapses delay 0.5 ms (one
step, see nmodl/nliaf.mod), and the output membrane is sampled at t = k ms, after step k.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from neurodeploy.backends.neuron.mechanisms import ensure_pynn_mechanisms, load_nliaf
from neurodeploy.backends.pynn.lowering import LoweredNetwork

DELAY_MS = 0.5
TIMESTEP_MS = 0.25
HUGE_THRESHOLD = 1e30


def _cell_type(h):
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


def simulate_items(lowered: LoweredNetwork, x: np.ndarray, T: int) -> dict:
    """Builds the network once and simulates every item of ``x``; returns readout ``[B, T, C]``,
    spikes and synaptic events ``[B, T, P]`` per step and non-input population, and build / run
    seconds."""
    start = time.perf_counter()
    ensure_pynn_mechanisms()
    import pyNN.neuron as sim
    from pyNN.neuron import h

    load_nliaf(h)
    sim.setup(timestep=TIMESTEP_MS, min_delay=DELAY_MS, max_delay=DELAY_MS)
    cell_type = _cell_type(h)
    pops = {}
    for pop in lowered.populations:
        theta = pop.threshold if pop.spiking else np.full(pop.size, HUGE_THRESHOLD)
        pops[pop.name] = sim.Population(pop.size, cell_type(
            v0=pop.v_init, theta=theta, bias=pop.bias, reset_zero=float(pop.reset_zero)), label=pop.name)
        pops[pop.name].record("spikes" if pop.spiking else "vm", sampling_interval=1.0)
    for synapses in lowered.synapses:
        for receptor, mask in (("excitatory", synapses.weight > 0), ("inhibitory", synapses.weight < 0)):
            if not mask.any():
                continue
            connections = np.stack([synapses.pre[mask], synapses.post[mask], synapses.weight[mask],
                                    np.full(mask.sum(), DELAY_MS)], axis=1)
            sim.Projection(pops[synapses.source], pops[synapses.target], sim.FromListConnector(connections),
                           sim.StaticSynapse(), receptor_type=receptor)
    build_s = time.perf_counter() - start
    drives = lowered.drive(x)
    output = next(p for p in lowered.populations if p.role == "output")
    readout = np.zeros((x.shape[0], T, output.size), np.float32)
    spikes = np.zeros((x.shape[0], T, len(lowered.populations)), np.float32)
    events = np.zeros_like(spikes)
    start = time.perf_counter()
    for item in range(x.shape[0]):
        for name, drive in drives.items():
            pops[name].set(drive=drive[item])
        sim.run(T + 0.5)
        for p, pop in enumerate(lowered.populations):
            block = pops[pop.name].get_data(clear=True).segments[-1]
            if pop.spiking:
                for train in block.spiketrains:
                    steps = np.rint(np.asarray(train.magnitude) + 0.25).astype(int)
                    steps = steps[(steps >= 1) & (steps <= T)] - 1
                    np.add.at(spikes[item, :, p], steps, 1)
                    np.add.at(events[item, :, p], steps, pop.fan_out[int(train.annotations["source_index"])])
            else:
                signal = np.asarray(block.filter(name="vm")[0].magnitude)  # samples at t = 0, 1, ..., T
                readout[item] = signal[1:T + 1]
        sim.reset()
    run_s = time.perf_counter() - start
    sim.end()
    return {"readout": readout, "spikes": spikes, "events": events, "build_s": build_s, "run_s": run_s}
