"""Runs in a fresh process: NEST's cell profile for the shared PyNN runner (``backends/pynn/runner.py``), and
:func:`simulate_items`, which builds the lowered network in NEST through PyNN (``pyNN.nest``) and simulates items.

The cell is PyNN's ``IF_curr_delta``, NEST's ``iaf_psc_delta`` on the time grid (``spike_precision="on_grid"``),
with the resolution of one IR step (1 ms) and ``t_ref`` = 0. Its update of step k is exact integration over the
step: ``V <- E_L + P33 (V - E_L) + P30 I_e + sum of the weights arriving in step k``, then a spike where
``V >= V_th`` and ``V <- V_reset`` (``docs/backends.md``, "nest"). With ``P33 = exp(-1 / tau_m)`` and
``C_m = tau_m (1 - P33)`` (pF, so that ``P30 = tau_m (1 - P33) / C_m = 1``) this is the IR's update
``v <- beta v + (1 - beta) v_leak + b + x`` with ``tau_m = leak_tau`` and ``E_L = v_leak``; a non-leaky
population gets ``tau_m = NON_LEAKY_TAU_M_MS`` (its membrane loses 1e-12 of itself per step). Weights are
membrane jumps (mV = IR units), signed: an inhibitory synapse carries the negative weight. A spike of step k
is stamped k ms; a delay of d steps is d ms, so it reaches its targets in step k + max(d, 1), the ``pynn``
profile's timing. NEST resets hard: a subtract-reset population resets to the lowering's ``v_reset``
(``passes.reset_compensation``), which the gpu backend's ``nest`` profile computes too.

The analog input's current reaches the first layer one step late (the input projection's delay): NEST's
``I_e`` acts from step 1, so the membrane starts at ``v_init - drive / P33`` and ``I_e = bias + drive``:
after step 1 ``V = P33 v_init + bias`` as the IR has it (exact for one step of delay; longer input delays are
refused by the backend). Spikes and the output membrane are read from NEST's own recorders (a
``spike_recorder`` per spiking population, a ``multimeter`` on the output every 1 ms), not through PyNN's Neo
objects.

Between items, PyNN's ``reset`` cannot reset NEST (NEST 3 has no reset of time): it runs the network on for
``t_flush`` ms and moves its time origin. Spikes still in flight would reach the next item, so every membrane
is first set far below any threshold (``FLUSH_V``): the flush delivers what is in flight and nothing fires;
then the membranes are set to their initial values.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from neurodeploy.backends.pynn.lowering import LoweredNetwork, LoweredPopulation
from neurodeploy.backends.pynn.runner import STEP_MS, PyNNRunner, build_network, delay_ms, log_to_file

#: tau_m (ms) of a non-leaky population: P33 = exp(-1e-12), far closer to 1 than float32's resolution
NON_LEAKY_TAU_M_MS = 1e12
#: the output population's threshold, which it never reaches
HUGE_THRESHOLD = 1e30
#: the membrane during the flush between items: no input in flight can bring it to a threshold
FLUSH_V = -1e300


def membrane_factors(pop: LoweredPopulation) -> tuple[np.ndarray, np.ndarray]:
    """``(tau_m [size] in ms, C_m [size] in pF)`` of ``pop``'s cells: tau_m from the per-step decay beta
    (``beta = exp(-1 / tau_m)``), C_m so that NEST's input gain ``tau_m (1 - exp(-1 / tau_m)) / C_m`` is 1."""
    decay = np.full(pop.size, math.exp(-1.0 / NON_LEAKY_TAU_M_MS)) if pop.decay is None else np.asarray(pop.decay)
    tau_m = np.full(pop.size, NON_LEAKY_TAU_M_MS) if pop.decay is None else -1.0 / np.log(decay)
    return tau_m, tau_m * (1.0 - np.exp(-STEP_MS / tau_m))


class NestCell:
    """``IF_curr_delta`` (``iaf_psc_delta``) as a cell profile of the PyNN runner; calls ``sim.setup``."""

    delay_ms = STEP_MS

    def __init__(self, sim, max_delay_steps: int = 1, threads: int = 1):
        self.max_delay_steps = max(int(max_delay_steps), 1)
        sim.setup(timestep=STEP_MS, min_delay=STEP_MS, max_delay=delay_ms(self, self.max_delay_steps),
                  spike_precision="on_grid", threads=threads, t_flush=(self.max_delay_steps + 1) * STEP_MS)
        self.sim = sim
        self._v_init: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}  # label -> (nodes, v_init, P33)
        self._recorders: dict[str, Any] = {}

    def population(self, sim, pop: LoweredPopulation):
        import nest

        tau_m, c_m = membrane_factors(pop)
        threshold = pop.threshold if pop.spiking else np.full(pop.size, HUGE_THRESHOLD)
        leak = np.zeros(pop.size) if pop.leak_drive is None else pop.leak_drive / (1.0 - pop.decay)
        cell = sim.IF_curr_delta(tau_m=tau_m, cm=c_m / 1000.0, v_rest=leak, v_reset=pop.v_reset, tau_refrac=0.0,
                                 v_thresh=threshold, i_offset=pop.bias / 1000.0)
        population = sim.Population(pop.size, cell, label=pop.name)
        nodes = population.node_collection
        # exact values where PyNN's nA/nF conversions would round (C_m, I_e); V_m directly: pyNN.nest 0.13 does not
        # set IF_curr_delta's initial membrane on NEST 3.10 ("does not allow setting an initial value for v")
        nest.SetStatus(nodes, [{"C_m": c, "I_e": b, "V_m": v} for c, b, v in zip(c_m, pop.bias, pop.v_init,
                                                                                  strict=True)])
        self._v_init[pop.name] = (nodes, pop.v_init, np.exp(-STEP_MS / tau_m))
        return population

    @staticmethod
    def source(sim, size: int, label: str):
        return sim.Population(size, sim.SpikeSourceArray(spike_times=[]), label=label)

    @staticmethod
    def weights(weights: np.ndarray) -> np.ndarray:
        return weights

    def set_drive(self, population, pop: LoweredPopulation, drive: np.ndarray) -> None:
        import nest

        nodes, v_init, p33 = self._v_init[pop.name]
        nest.SetStatus(nodes, [{"I_e": b + d, "V_m": v - d / p} for b, d, v, p in zip(pop.bias, drive, v_init, p33,
                                                                                        strict=True)])

    def set_spikes(self, population, steps: list[np.ndarray]) -> None:
        from pyNN.parameters import Sequence

        # a source spike of step k is stamped k ms, as a neuron's spike of step k
        population.set(spike_times=[Sequence(s * STEP_MS) for s in steps])

    @staticmethod
    def run_ms(T: int) -> float:
        return T * STEP_MS

    def record(self, population, pop: LoweredPopulation) -> None:
        import nest

        nodes = population.node_collection
        if pop.spiking:
            recorder = nest.Create("spike_recorder")
            nest.Connect(nodes, recorder)
            self._recorders[pop.name] = recorder
        if pop.role == "output":
            meter = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": STEP_MS})
            nest.Connect(meter, nodes)
            self._recorders[pop.name + "/V_m"] = meter

    def _origin(self) -> float:
        """The kernel time (ms) of the current run's time 0: PyNN runs one min_delay past the requested time
        and moves its origin at each reset."""
        import nest

        return nest.biological_time - self.sim.get_min_delay() - self.sim.get_current_time()

    def read_spikes(self, population) -> tuple[np.ndarray, np.ndarray]:
        events = self._recorders[population.label].events
        first = population.node_collection[0].global_id
        steps = np.rint((np.asarray(events["times"]) - self._origin()) / STEP_MS).astype(np.int64)
        return np.asarray(events["senders"], np.int64) - first, steps

    def read_membrane(self, population) -> np.ndarray:
        events = self._recorders[population.label + "/V_m"].events
        first = population.node_collection[0].global_id
        samples = np.rint((np.asarray(events["times"]) - self._origin()) / STEP_MS).astype(np.int64)
        membrane = np.zeros((int(samples.max(initial=0)) + 1, population.size))
        membrane[samples, np.asarray(events["senders"], np.int64) - first] = events["V_m"]
        return membrane

    def reset(self, sim) -> None:
        """Ends an item: membranes far below threshold, PyNN's flush and reset, recorders emptied, membranes
        back to their initial values (module docstring)."""
        import nest

        for nodes, _, _ in self._v_init.values():
            nodes.V_m = FLUSH_V
        sim.reset()
        for recorder in self._recorders.values():
            recorder.n_events = 0
        for nodes, v_init, _ in self._v_init.values():
            nest.SetStatus(nodes, [{"V_m": v} for v in v_init])


def simulate_items(lowered: LoweredNetwork, x: np.ndarray, T: int, threads: int = 1,
                   log_path: str | Path | None = None, record: tuple[str, ...] = ()) -> dict:
    """Builds the network once in NEST (``threads`` threads) and simulates every item of ``x [B, *input_shape]``
    for T steps with the shared PyNN runner; the input is current injection or, when ``lowered`` has synapses
    from the input, IF-encoded spike sources. Returns the runner's dict (``PyNNRunner.run_items``) plus build
    seconds ``build_s``; ``record``: populations whose every spike is returned step by step (``recorded``).
    With ``log_path`` NEST's and PyNN's output goes to that file instead of the terminal."""
    with log_to_file(log_path) if log_path is not None else nullcontext():
        start = time.perf_counter()
        import pyNN.nest as sim

        cell = NestCell(sim, max((max(s.delay, 1) for s in lowered.synapses), default=1), threads)
        built = build_network(sim, cell, lowered)
        build_s = time.perf_counter() - start
        result = PyNNRunner(sim, cell, lowered, built).run_items(x, T, record)
        sim.end()
    return {**result, "build_s": build_s}
