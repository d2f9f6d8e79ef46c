"""Runs in a fresh process whose XDG_CONFIG_HOME holds the run's .spynnaker.cfg: sPyNNaker's cell profile
for the shared PyNN runner (``backends/pynn/runner.py``), :func:`map_network` (build and one run, which on
a virtual board partitions, places and routes the network) and :func:`run_items` (the per-item loop).

The cell is IF_curr_delta with tau_refrac = 0 (``neurodeploy.targets.spinnaker.DeltaCell``), timestep
1 ms, every synapse 1 ms of delay, weights as magnitudes on the excitatory or inhibitory receptor.
Tick n (t = n ms) is IR step n + 1: an input spike of step k is sent in tick k - 1, and a spike recorded
at t ms belongs to step t + 1; sPyNNaker records v at the start of a tick, so sample k (tick k) is the
membrane after step k, and a run of T steps lasts T + 1 ticks.

sPyNNaker 1!7.4.1 details this module works around:

* ``SpikeSourceArray.set(spike_times=<one list per neuron>)`` raises TypeError once the source has
  machine vertices (its vertex indexes a Python list with a numpy array; sPyNNaker#1680, fixed after
  7.4.1), and a source core whose initial spike list is empty gets no send buffer at all, so spikes set
  later never leave it. :meth:`DeltaProfile.set_spikes` hands the vertex the per-neuron ticks as a numpy
  object array (the form sPyNNaker itself builds), and each source is created with every neuron spiking
  once at t = 0: sPyNNaker reserves the busiest tick's size for every tick of the run, so the send buffer
  then holds every neuron spiking in every tick.
  ``run_items`` first runs once with that pattern (the mapping run), so the buffers are sized before
  any item's spikes are set; ``input_spikes_loaded`` counts the ticks the source cores then hold.
* More than 100 spikes from one source vertex in one tick logs "too many spikes": ``run_items`` splits the
  input into sources of at most 100 neurons (each IF source spikes at most once per step).
* Spike times earlier than the current time are dropped silently: the runner sets inputs only at t = 0.
* Spikes still in flight when a run ends (delay 1 ms: those of the extra tick T) must not reach the next
  item: sPyNNaker flushes its ring buffers when a run restarts at time 0 after a reset (the fix of
  sPyNNaker#766), which only a physical board can show; NEURON's reset (``h.finitialize``) clears its
  event queue, which ``tests/test_pynn_runner.py`` checks.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from neurodeploy.backends.pynn.lowering import LoweredNetwork, LoweredPopulation
from neurodeploy.backends.pynn.runner import BuiltNetwork, PyNNRunner, build_network, log_to_file
from neurodeploy.errors import BackendError
from neurodeploy.targets.spinnaker import DeltaCell

#: v_thresh of the non-spiking output population: high, but inside S16.15
OUTPUT_THRESHOLD = 32768.0
#: the cores that do not hold a population of the network
SYSTEM = "system (monitors, routing, extra monitors)"
VIRTUAL_NOTE = ("a virtual board maps the network and runs nothing: no spike or membrane comes back, so every "
                "spike, event, neuron and readout array is zeros (items_read = 0); only the mapping report and "
                "the input bookkeeping are real")


class DeltaProfile:
    """sPyNNaker's IF_curr_delta (tau_refrac = 0) as a cell profile of the PyNN runner; calls ``sim.setup``.
    ``summed_weights``: each population's max_expected_summed_weight (sizes its ring buffers)."""

    delay_ms = 1.0

    def __init__(self, sim, cell: DeltaCell, summed_weights: dict[str, list[float]], neurons_per_core: int):
        sim.setup(timestep=1.0)
        sim.set_number_of_neurons_per_core(sim.IF_curr_delta, neurons_per_core)
        self.cell, self.summed_weights = cell, summed_weights
        #: spike ticks the source cores held after each set (summed over items)
        self.loaded = 0

    def population(self, sim, pop: LoweredPopulation):
        threshold = pop.threshold if pop.spiking else np.full(pop.size, OUTPUT_THRESHOLD)
        model = sim.IF_curr_delta(tau_m=self.cell.tau_m, cm=self.cell.cm, v_rest=0.0, v_reset=0.0, tau_refrac=0.0,
                                  v_thresh=threshold, i_offset=pop.bias)
        return sim.Population(pop.size, model, label=pop.name, initial_values={"v": pop.v_init},
                              additional_parameters={"max_expected_summed_weight": self.summed_weights[pop.name]})

    @staticmethod
    def source(sim, size: int, label: str):
        """Every neuron spikes once at t = 0: the send buffer holds a full tick (see the module docstring)."""
        return sim.Population(size, sim.SpikeSourceArray(spike_times=[[0.0]] * size), label=label)

    @staticmethod
    def weights(weights: np.ndarray) -> np.ndarray:
        return np.abs(weights)

    @staticmethod
    def set_drive(population, pop: LoweredPopulation, drive: np.ndarray) -> None:
        population.set(i_offset=pop.bias + drive)

    def set_spikes(self, population, steps: list[np.ndarray]) -> None:
        """Gives the source's vertex the ticks (step - 1) itself: ``Population.set`` fails here (see the module
        docstring); counts the ticks its cores then hold."""
        ticks = np.empty(len(steps), dtype=object)
        for i, s in enumerate(steps):
            ticks[i] = np.asarray(s, np.int64) - 1
        vertex = population._vertex
        vertex.send_buffer_times = ticks
        self.loaded += sum(len(t) for machine in vertex.machine_vertices for t in machine.send_buffer_times)

    @staticmethod
    def run_ms(T: int) -> float:
        return T + 1.0

    @staticmethod
    def record(population, pop: LoweredPopulation) -> None:
        population.record("spikes" if pop.spiking else "v")

    @staticmethod
    def read_spikes(population) -> tuple[np.ndarray, np.ndarray]:
        data = np.asarray(population.spinnaker_get_data("spikes")).reshape(-1, 2)
        return data[:, 0].astype(np.int64), np.rint(data[:, 1]).astype(np.int64) + 1

    @staticmethod
    def read_membrane(population) -> np.ndarray:
        return np.asarray(population.spinnaker_get_data("v", as_matrix=True))


def _enter_run_folder(config_dir: str, run_dir: str) -> None:
    """Points sPyNNaker at the run's config folder and works in the run folder; only in a child process,
    whose environment and working directory are its own."""
    if multiprocessing.parent_process() is None:
        raise BackendError("sPyNNaker runs in a child process whose XDG_CONFIG_HOME is the run's config folder")
    os.environ["XDG_CONFIG_HOME"] = config_dir
    os.chdir(run_dir)


def _end(sim) -> None:
    """Ends the sPyNNaker session and writes its summary of warnings, which it otherwise prints to the
    terminal when the process exits, into the (redirected) output now."""
    import atexit

    from spinn_utilities.log import FormatAdapter

    sim.end()
    atexit.unregister(FormatAdapter.atexit_handler)
    FormatAdapter.atexit_handler()


def _mapping_report(built: BuiltNetwork, neurons_per_core: int) -> dict:
    """Cores per population (spike sources together as the input's), neuron cores apart from spike-source
    and system cores, chips, and the ring-buffer shifts sPyNNaker chose."""
    from pacman.data import PacmanDataView

    sources = {source.label for _, source in built.sources}
    input_name = next(iter(sources)).split("[")[0] if sources else None
    cores, chips = defaultdict(int), set()
    for placement in PacmanDataView.iterate_placemements():
        label = getattr(getattr(placement.vertex, "app_vertex", None), "label", None)
        cores[label if label in built.populations else input_name if label in sources else SYSTEM] += 1
        chips.add((placement.x, placement.y))
    neuron_cores = sum(n for name, n in cores.items() if name in built.populations)
    return {
        "ring_buffer_shifts": {name: [int(s) for s in pop._vertex.get_ring_buffer_shifts()]
                               for name, pop in built.populations.items()},
        "cores_per_population": dict(cores),
        "cores": int(sum(cores.values())),
        "neuron_cores": int(neuron_cores),
        "input_cores": int(cores.get(input_name, 0)),
        "input_populations": len(built.sources),
        "system_cores": int(cores.get(SYSTEM, 0)),
        "chips": len(chips),
        "chips_used": sorted([list(c) for c in chips]),
        "neurons_per_core": neurons_per_core,
        "n_synapses": built.n_synapses,
    }


def _build(lowered: LoweredNetwork, neurons_per_core: int, cell: DeltaCell, summed_weights: dict[str, list[float]],
           source_size: int | None, record: bool) -> tuple[Any, DeltaProfile, BuiltNetwork]:
    import pyNN.spiNNaker as sim

    profile = DeltaProfile(sim, cell, summed_weights, neurons_per_core)
    return sim, profile, build_network(sim, profile, lowered, source_size, record)


def map_network(lowered: LoweredNetwork, config_dir: str, run_dir: str, T: int, neurons_per_core: int,
                cell: DeltaCell, summed_weights: dict[str, list[float]]) -> dict:
    """Builds the network (one spike source for the input, nothing recorded) and runs it for T steps, which
    maps it; returns the mapping report with ``build_s`` and ``map_s``. Logs go to ``run_dir/run.log``."""
    _enter_run_folder(config_dir, run_dir)
    with log_to_file(Path(run_dir) / "run.log"):
        start = time.perf_counter()
        sim, profile, built = _build(lowered, neurons_per_core, cell, summed_weights, None, False)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        sim.run(profile.run_ms(T))
        report = {**_mapping_report(built, neurons_per_core), "build_s": build_s,
                  "map_s": time.perf_counter() - start, "reports": str(Path(run_dir) / "reports")}
        _end(sim)
    return report


def run_items(lowered: LoweredNetwork, config_dir: str, run_dir: str, x: np.ndarray, T: int, neurons_per_core: int,
              cell: DeltaCell, summed_weights: dict[str, list[float]], source_size: int = 100) -> dict:
    """The complete per-item loop on the configured machine: build once (input as spike sources of at most
    ``source_size`` neurons), one mapping run, then per item of ``x [B, *input_shape]``: set its IF-encoded
    input spikes, run T steps, read spikes and the output membrane back, reset. Returns the runner's dict
    (see ``PyNNRunner.run_items``) plus ``mapping`` (the mapping report), ``input_spikes_loaded`` (spike
    ticks the source cores held, summed over items), ``virtual`` (sPyNNaker ran on a virtual board) and
    ``note`` (what that returns), ``build_s`` and ``map_s``. Logs go to ``run_dir/run.log``."""
    _enter_run_folder(config_dir, run_dir)
    with log_to_file(Path(run_dir) / "run.log"):
        from spinn_utilities.config_holder import get_config_bool

        start = time.perf_counter()
        sim, profile, built = _build(lowered, neurons_per_core, cell, summed_weights, source_size, True)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        sim.run(profile.run_ms(T))
        mapping = _mapping_report(built, neurons_per_core)
        sim.reset()
        map_s = time.perf_counter() - start
        result = PyNNRunner(sim, profile, lowered, built).run_items(x, T)
        virtual = get_config_bool("Machine", "virtual_board")
        _end(sim)
    return {**result, "mapping": mapping, "input_spikes_loaded": profile.loaded, "virtual": virtual,
            "note": VIRTUAL_NOTE if virtual else "", "build_s": build_s, "map_s": map_s}
