"""Runs in a fresh process whose XDG_CONFIG_HOME holds the run's .spynnaker.cfg: sPyNNaker's cell profile
for the shared PyNN runner (``backends/pynn/runner.py``), :func:`map_network` (build and one run, which on
a virtual board partitions, places and routes the network) and :func:`run_items` (the per-item loop).

The cell is IF_curr_delta with tau_refrac = 0 (``neurodeploy.targets.spinnaker.DeltaCell``), timestep
1 ms, every synapse 1 ms of delay, weights as magnitudes on the excitatory or inhibitory receptor; it
resets to each neuron's ``v_reset`` (0, or the value of the hard-reset compensation,
``passes.reset_compensation``). ``boards``: the boards ``sim.setup`` asks a spalloc server or remote
service for (``n_boards_required``; None: as many as the network needs).
Tick n (t = n dt ms) is the runner's tick n + 1: an input spike of tick j is sent in tick j - 1, and a spike
recorded at t ms belongs to tick t / dt + 1; sPyNNaker records v at the start of a tick, so sample j (tick j) is
the membrane after tick j, and a run of T steps of K ticks lasts K T + 1 ticks. dt is the cell's tick: 1 ms, or
1/K ms with K sub-steps (``substeps``), set up as ``machine_time_step`` 1000/K us with ``time_scale_factor`` K,
so a tick keeps 1 ms of wall-clock time and the run lasts K times longer; every synapse then has one tick of delay.

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

Local-only variant (``cell`` an :class:`~neurodeploy.targets.spinnaker.ExpCell`, the lowering's local-only
fields set): every population is IF_curr_exp (the cell sPyNNaker ships ``_conv`` and ``_pool_dense``
binaries for); a population split per channel is one Grid2D population per channel (labels
``name[cK]``, a 2-D block of neurons per core), the input a Grid2D spike source per channel (at most
100 neurons per core); convolutions and pooling are ConvolutionConnector projections, pool-dense
layers PoolDenseConnector projections, the rest FromList. Local-only weights are handed over already
on sPyNNaker's integer grid (int16 magnitudes of ``2^(shift - 15)``, clipped at 32767), so its own
rounding changes nothing. sPyNNaker maps a local-only population on a virtual board even where the
binary is missing (its check answers True there): :func:`check_local_only_binaries` looks at the
package's ``model_binaries`` folder itself.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from neurodeploy.backends.pynn.lowering import (
    SOURCE_NEURONS_PER_CORE,
    ChannelGrid,
    ConvProjection,
    LoweredNetwork,
    LoweredPopulation,
    PoolDenseProjection,
)
from neurodeploy.backends.pynn.runner import BuiltNetwork, PyNNRunner, build_network, input_sources, log_to_file
from neurodeploy.errors import BackendError
from neurodeploy.targets.spinnaker import (
    LOCAL_ONLY_WEIGHT_MAX,
    DeltaCell,
    ExpCell,
    machine_time_step_us,
    ring_buffer_shift,
    weight_scale,
)

#: v_thresh of the non-spiking output population: high, but inside S16.15
OUTPUT_THRESHOLD = 32768.0
#: the cores that do not hold a population of the network
SYSTEM = "system (monitors, routing, extra monitors)"
VIRTUAL_NOTE = ("a virtual board maps the network and runs nothing: no spike or membrane comes back, so every "
                "spike, event, neuron and readout array is zeros (items_read = 0); only the mapping report and "
                "the input bookkeeping are real")


def setup(sim, cell: DeltaCell | ExpCell, boards: int | None) -> int:
    """``sim.setup`` with the cell's tick as ``machine_time_step`` and, with K sub-steps, ``time_scale_factor`` K
    (module docstring); returns K."""
    substeps = int(round(1.0 / cell.dt))
    machine_time_step_us(substeps)  # refuses a tick that is not 1/K ms for an offered K
    if substeps == 1:
        sim.setup(timestep=1.0, n_boards_required=boards)
    else:
        sim.setup(timestep=cell.dt, time_scale_factor=substeps, n_boards_required=boards)
    return substeps


def timing_report() -> dict:
    """What sPyNNaker set up: ``machine_time_step_us`` and ``time_scale_factor``."""
    from spynnaker.pyNN.data import SpynnakerDataView

    return {"machine_time_step_us": SpynnakerDataView.get_simulation_time_step_us(),
            "time_scale_factor": SpynnakerDataView.get_time_scale_factor()}


class DeltaProfile:
    """sPyNNaker's IF_curr_delta (tau_refrac = 0) as a cell profile of the PyNN runner; calls ``sim.setup``.
    ``summed_weights``: each population's max_expected_summed_weight (sizes its ring buffers)."""

    def __init__(self, sim, cell: DeltaCell, summed_weights: dict[str, list[float]], neurons_per_core: int,
                 boards: int | None = None):
        self.substeps = setup(sim, cell, boards)
        #: one tick: the machine's minimum delay
        self.delay_ms = cell.dt
        sim.set_number_of_neurons_per_core(sim.IF_curr_delta, neurons_per_core)
        self.cell, self.summed_weights = cell, summed_weights
        #: spike ticks the source cores held after each set (summed over items)
        self.loaded = 0

    def population(self, sim, pop: LoweredPopulation):
        threshold = pop.threshold if pop.spiking else np.full(pop.size, OUTPUT_THRESHOLD)
        model = sim.IF_curr_delta(tau_m=self.cell.tau_m, cm=self.cell.cm, v_rest=0.0, v_reset=pop.v_reset,
                                  tau_refrac=0.0, v_thresh=threshold, i_offset=self.cell.offset_for(pop.bias))
        return sim.Population(pop.size, model, label=pop.name, initial_values={"v": pop.v_init},
                              additional_parameters={"max_expected_summed_weight": self.summed_weights[pop.name]})

    @staticmethod
    def source(sim, size: int, label: str):
        """Every neuron spikes once at t = 0: the send buffer holds a full tick (see the module docstring)."""
        return sim.Population(size, sim.SpikeSourceArray(spike_times=[[0.0]] * size), label=label)

    @staticmethod
    def weights(weights: np.ndarray) -> np.ndarray:
        return np.abs(weights)

    def set_drive(self, population, pop: LoweredPopulation, drive: np.ndarray) -> None:
        population.set(i_offset=self.cell.offset_for(pop.bias + drive))

    def set_spikes(self, population, steps: list[np.ndarray]) -> None:
        """Gives the source's vertex the ticks (the runner's 1-based ticks - 1) itself: ``Population.set`` fails
        here (see the module docstring); counts the ticks its cores then hold."""
        ticks = np.empty(len(steps), dtype=object)
        for i, s in enumerate(steps):
            ticks[i] = np.asarray(s, np.int64) - 1
        vertex = population._vertex
        vertex.send_buffer_times = ticks
        self.loaded += sum(len(t) for machine in vertex.machine_vertices for t in machine.send_buffer_times)

    def run_ms(self, T: int) -> float:
        """K T + 1 ticks (samples 0..K T)."""
        return (T * self.substeps + 1) * self.cell.dt

    @staticmethod
    def reset(sim) -> None:
        sim.reset()

    @staticmethod
    def record(population, pop: LoweredPopulation) -> None:
        population.record("spikes" if pop.spiking else "v")

    def read_spikes(self, population) -> tuple[np.ndarray, np.ndarray]:
        """(neuron index, 1-based tick) of the last run's spikes (sPyNNaker gives times in ms)."""
        data = np.asarray(population.spinnaker_get_data("spikes")).reshape(-1, 2)
        return data[:, 0].astype(np.int64), np.rint(data[:, 1] / self.cell.dt).astype(np.int64) + 1

    @staticmethod
    def read_membrane(population) -> np.ndarray:
        return np.asarray(population.spinnaker_get_data("v", as_matrix=True))


#: binary suffix of each local-only connector kind (sPyNNaker runs ``<neuron binary><suffix>.aplx``)
LOCAL_ONLY_SUFFIXES = {"conv": "_conv", "pool_dense": "_pool_dense"}


def model_binaries_folder() -> Path:
    """The installed sPyNNaker's ``model_binaries`` folder (found without importing sPyNNaker)."""
    import importlib.util

    spec = importlib.util.find_spec("spynnaker")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("sPyNNaker is not installed (the spinnaker extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "pyNN" / "model_binaries"


def check_local_only_binaries(model: str, kinds, folder: Path | None = None) -> None:
    """Raises BackendError naming the missing binary when sPyNNaker ships no ``<model><suffix>.aplx`` for a
    local-only connector kind in ``kinds`` ("conv", "pool_dense"). sPyNNaker's own check answers True on
    a virtual board whatever the model, so the network would map here and fail on a board."""
    folder = model_binaries_folder() if folder is None else Path(folder)
    for kind in sorted(set(kinds)):
        binary = f"{model}{LOCAL_ONLY_SUFFIXES[kind]}.aplx"
        if not (folder / binary).is_file():
            suffixes = tuple(LOCAL_ONLY_SUFFIXES.values())
            shipped = sorted(p.name for p in folder.glob("*.aplx") if p.stem.endswith(suffixes))
            raise BackendError(f"sPyNNaker ships no {binary} (the {kind} local-only binary of {model}) in {folder}; "
                               f"its local-only binaries: {', '.join(shipped) or 'none'}; use --connectors fromlist")


class ChannelGroup:
    """A (C, H, W) population as C PyNN Grid2D populations, neuron index ``c * H * W + raster index``."""

    def __init__(self, label: str, grid: ChannelGrid, populations: list):
        self.label, self.grid, self.populations = label, grid, populations
        self.size = grid.channels * grid.channel_size

    def parts(self) -> list[tuple[int, Any]]:
        """(first neuron, PyNN population) of every channel."""
        return [(c * self.grid.channel_size, pop) for c, pop in enumerate(self.populations)]


def _grid_structure(grid: ChannelGrid):
    from pyNN.space import Grid2D

    return Grid2D(grid.width / grid.height)


def local_weights(values: np.ndarray, area: int, shifts: list[int]) -> np.ndarray:
    """Local-only weights as sPyNNaker should receive them (``values`` signed, the connector divides by the
    pooling ``area``): magnitudes of ``values / area`` rounded to integers of ``2^(shift - 15)`` of their
    receptor (positive: excitatory, negative: inhibitory) and clipped at the int16 limit, times ``area``.
    sPyNNaker's own ``round(values / area * scale)`` then gives the same integers."""
    values = np.asarray(values, np.float64) / area
    out = np.zeros_like(values)
    for receptor, mask in ((0, values > 0), (1, values < 0)):
        scale = weight_scale(shifts[receptor])
        units = np.minimum(np.rint(np.abs(values[mask]) * scale), LOCAL_ONLY_WEIGHT_MAX)
        out[mask] = np.sign(values[mask]) * units / scale
    return out * area


class ExpProfile:
    """sPyNNaker's IF_curr_exp (``tau_refrac = 0``, ``tau_syn`` 1/32 ms) as a cell profile of the PyNN runner, for
    the local-only variant; calls ``sim.setup``. Populations may be :class:`ChannelGroup` s."""

    model = "IF_curr_exp"

    def __init__(self, sim, cell: ExpCell, summed_weights: dict[str, list[float]], neurons_per_core: int,
                 lowered: LoweredNetwork, boards: int | None = None):
        self.substeps = setup(sim, cell, boards)
        self.delay_ms = cell.dt
        sim.set_number_of_neurons_per_core(sim.IF_curr_exp, None)  # set per population (1-D and 2-D ones)
        sim.set_number_of_neurons_per_core(sim.SpikeSourceArray, None)
        self.cell, self.summed_weights, self.neurons_per_core = cell, summed_weights, neurons_per_core
        self.lowered = lowered
        self.loaded = 0

    def shifts(self, name: str) -> list[int]:
        return [ring_buffer_shift(w) for w in self.summed_weights[name]]

    def _model(self, sim, pop: LoweredPopulation, part: slice):
        threshold = pop.threshold[part] if pop.spiking else np.full(len(pop.threshold[part]), OUTPUT_THRESHOLD)
        cell = self.cell
        return sim.IF_curr_exp(tau_m=cell.tau_m, cm=cell.cm, tau_syn_E=cell.tau_syn, tau_syn_I=cell.tau_syn,
                               v_rest=0.0, v_reset=pop.v_reset[part], tau_refrac=0.0, v_thresh=threshold,
                               i_offset=cell.offset_for(pop.bias[part]))

    def population(self, sim, pop: LoweredPopulation):
        grid = self.lowered.grids.get(pop.name)
        extra = {"max_expected_summed_weight": self.summed_weights[pop.name]}
        if grid is None:
            population = sim.Population(pop.size, self._model(sim, pop, slice(None)), label=pop.name,
                                        initial_values={"v": pop.v_init}, additional_parameters=extra)
            population.set_max_atoms_per_core(min(self.neurons_per_core,
                                                  self.lowered.neurons_per_core.get(pop.name, self.neurons_per_core)))
            return population
        parts = []
        for c in range(grid.channels):
            part = slice(c * grid.channel_size, (c + 1) * grid.channel_size)
            population = sim.Population(grid.channel_size, self._model(sim, pop, part), label=f"{pop.name}[c{c}]",
                                        structure=_grid_structure(grid), initial_values={"v": pop.v_init[part]},
                                        additional_parameters=extra)
            population.set_max_atoms_per_core((grid.block[1], grid.block[0]))
            parts.append(population)
        return ChannelGroup(pop.name, grid, parts)

    @staticmethod
    def source(sim, size: int, label: str, grid: ChannelGrid | None = None):
        """Every neuron spikes once at t = 0: the send buffer holds a full tick (see the module docstring)."""
        if grid is None:
            population = sim.Population(size, sim.SpikeSourceArray(spike_times=[[0.0]] * size), label=label)
            population.set_max_atoms_per_core(SOURCE_NEURONS_PER_CORE)
            return population
        population = sim.Population(size, sim.SpikeSourceArray(spike_times=[[0.0]] * size), label=label,
                                    structure=_grid_structure(grid))
        population.set_max_atoms_per_core((grid.block[1], grid.block[0]))
        return population

    weights = staticmethod(DeltaProfile.weights)
    set_spikes = DeltaProfile.set_spikes
    run_ms = DeltaProfile.run_ms
    reset = staticmethod(DeltaProfile.reset)

    @staticmethod
    def set_drive(population, pop: LoweredPopulation, drive: np.ndarray) -> None:
        raise BackendError("the local-only variant receives its input as spikes")

    @staticmethod
    def record(population, pop: LoweredPopulation) -> None:
        for part in population.populations if isinstance(population, ChannelGroup) else [population]:
            DeltaProfile.record(part, pop)

    def read_spikes(self, population) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(population, ChannelGroup):
            return DeltaProfile.read_spikes(self, population)
        index, step = zip(*[(i + first, s) for first, part in population.parts()
                            for i, s in [DeltaProfile.read_spikes(self, part)]], strict=True)
        return np.concatenate(index), np.concatenate(step)

    @staticmethod
    def read_membrane(population) -> np.ndarray:
        if not isinstance(population, ChannelGroup):
            return DeltaProfile.read_membrane(population)
        parts = [DeltaProfile.read_membrane(part) for part in population.populations]
        return np.zeros((0, population.size)) if any(p.size == 0 for p in parts) else np.concatenate(parts, axis=1)


def _parts(built: BuiltNetwork, name: str) -> list[tuple[int, Any]]:
    """(first neuron, PyNN population) covering population ``name`` (the input: its spike sources)."""
    population = built.populations.get(name)
    if population is None:
        return built.sources
    return population.parts() if isinstance(population, ChannelGroup) else [(0, population)]


def _from_list(sim, profile, pre_parts, post_parts, pre: np.ndarray, post: np.ndarray, weight: np.ndarray
               ) -> tuple[int, int]:
    """FromList projections between the parts of two populations, one per pair of parts and receptor; returns
    the synapses and projections made."""
    made = projections = 0
    for first_pre, pre_pop in pre_parts:
        in_pre = (pre >= first_pre) & (pre < first_pre + pre_pop.size)
        for first_post, post_pop in post_parts:
            mask = in_pre & (post >= first_post) & (post < first_post + post_pop.size)
            for receptor, sign in (("excitatory", weight > 0), ("inhibitory", weight < 0)):
                chosen = mask & sign
                if chosen.any():
                    connections = np.stack([pre[chosen] - first_pre, post[chosen] - first_post,
                                            profile.weights(weight[chosen]),
                                            np.full(int(chosen.sum()), profile.delay_ms)], axis=1)
                    sim.Projection(pre_pop, post_pop, sim.FromListConnector(connections), sim.StaticSynapse(),
                                   receptor_type=receptor)
                    made += int(chosen.sum())
                    projections += 1
    return made, projections


def build_local_network(sim, profile: ExpProfile, lowered: LoweredNetwork, source_size: int | None = None,
                        record: bool = True) -> tuple[BuiltNetwork, dict]:
    """The local-only variant of ``build_network``: channel groups, Grid2D spike sources, ConvolutionConnector
    and PoolDenseConnector projections, FromList for the rest. Returns the built network and counts of
    PyNN populations and projections per connector kind."""
    populations = {pop.name: profile.population(sim, pop) for pop in lowered.populations}
    n_input = int(np.prod(lowered.input_shape))
    built = BuiltNetwork(populations, lowered.input_fan_out.copy())
    input_name = next((s.source for s in lowered.synapses if s.source not in populations),
                      next((p.source for p in lowered.local if p.source not in populations), None))
    counts = {"conv": 0, "pool_dense": 0, "fromlist": 0}
    if input_name is not None:
        grid = lowered.grids.get(input_name)
        if grid is not None:
            size = grid.channel_size
            built.sources = [(c * size, profile.source(sim, size, f"{input_name}[c{c}]", grid))
                             for c in range(grid.channels)]
        else:
            built.sources = input_sources(sim, profile, input_name, n_input, source_size)
    for projection in lowered.local:
        pre, post = _parts(built, projection.source), _parts(built, projection.target)
        shifts = profile.shifts(projection.target)
        area = (projection.pool or 1) ** 2
        pool = projection.pool
        if isinstance(projection, ConvProjection):
            for (ci, co), kernel in projection.kernels.items():
                kernel = local_weights(kernel, area, shifts)
                if kernel.any():
                    connector = sim.ConvolutionConnector(kernel, padding=projection.padding, pool_shape=pool,
                                                         pool_stride=pool)
                    sim.Projection(pre[ci][1], post[co][1], connector, sim.Convolution(delay=profile.delay_ms))
                    counts["conv"] += 1
        else:
            assert isinstance(projection, PoolDenseProjection)
            for ci, weights in enumerate(projection.weights):
                weights = local_weights(weights, area, shifts)
                if weights.any():
                    connector = sim.PoolDenseConnector(weights, pool_shape=pool, pool_stride=pool)
                    sim.Projection(pre[ci][1], post[0][1], connector, sim.PoolDense(delay=profile.delay_ms))
                    counts["pool_dense"] += 1
        built.n_synapses += projection.n_synapses
    for synapses in lowered.synapses:
        made, n_projections = _from_list(sim, profile, _parts(built, synapses.source), _parts(built, synapses.target),
                                         synapses.pre, synapses.post, synapses.weight)
        built.n_synapses += made
        counts["fromlist"] += n_projections
    if record:
        for pop in lowered.populations:
            profile.record(populations[pop.name], pop)
    n_pynn = sum(len(p.populations) if isinstance(p, ChannelGroup) else 1 for p in populations.values())
    return built, {"pynn_populations": n_pynn + len(built.sources), "projections": counts}


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
    """Cores per population (spike sources together as the input's, the channels of a split population
    together), neuron cores apart from spike-source and system cores, chips, and the ring-buffer shifts
    sPyNNaker chose."""
    from pacman.data import PacmanDataView

    sources = {source.label for _, source in built.sources}
    input_name = next(iter(sources)).split("[")[0] if sources else None
    cores, chips = defaultdict(int), set()
    for placement in PacmanDataView.iterate_placemements():
        label = getattr(getattr(placement.vertex, "app_vertex", None), "label", None)
        name = label.split("[")[0] if isinstance(label, str) else None
        cores[name if name in built.populations else input_name if label in sources else SYSTEM] += 1
        chips.add((placement.x, placement.y))
    neuron_cores = sum(n for name, n in cores.items() if name in built.populations)
    first = {name: pop.populations[0] if isinstance(pop, ChannelGroup) else pop
             for name, pop in built.populations.items()}
    return {
        "ring_buffer_shifts": {name: [int(s) for s in pop._vertex.get_ring_buffer_shifts()]
                               for name, pop in first.items()},
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


def _build(lowered: LoweredNetwork, neurons_per_core: int, cell: DeltaCell | ExpCell,
           summed_weights: dict[str, list[float]], source_size: int | None, record: bool, boards: int | None
           ) -> tuple[Any, DeltaProfile | ExpProfile, BuiltNetwork, dict]:
    """sPyNNaker set up and the network built: IF_curr_delta and FromList, or the local-only variant (an
    :class:`ExpCell`); the dict holds the cell, the PyNN populations and projections made per kind."""
    if isinstance(cell, ExpCell):  # sPyNNaker would not notice a missing binary on a virtual board
        check_local_only_binaries(ExpProfile.model, {"conv" if isinstance(p, ConvProjection) else "pool_dense"
                                                     for p in lowered.local})
    import pyNN.spiNNaker as sim

    if isinstance(cell, ExpCell):
        profile = ExpProfile(sim, cell, summed_weights, neurons_per_core, lowered, boards)
        built, counts = build_local_network(sim, profile, lowered, source_size, record)
        return sim, profile, built, {"cell": ExpProfile.model, **counts, **timing_report(),
                                     "grids": {name: {"shape": [g.channels, g.height, g.width], "block": list(g.block)}
                                               for name, g in lowered.grids.items()},
                                     "pool_dense_neurons_per_core": {name: min(n, neurons_per_core) for name, n
                                                                     in lowered.neurons_per_core.items()}}
    profile = DeltaProfile(sim, cell, summed_weights, neurons_per_core, boards)
    built = build_network(sim, profile, lowered, source_size, record)
    return sim, profile, built, {"cell": "IF_curr_delta", "projections": {"fromlist": None}, **timing_report()}


def map_network(lowered: LoweredNetwork, config_dir: str, run_dir: str, T: int, neurons_per_core: int,
                cell: DeltaCell | ExpCell, summed_weights: dict[str, list[float]], boards: int | None = None) -> dict:
    """Builds the network (one spike source for the input, nothing recorded) and runs it for T steps, which
    maps it; returns the mapping report with ``build_s`` and ``map_s``. Logs go to ``run_dir/run.log``."""
    _enter_run_folder(config_dir, run_dir)
    with log_to_file(Path(run_dir) / "run.log"):
        start = time.perf_counter()
        sim, profile, built, variant = _build(lowered, neurons_per_core, cell, summed_weights, None, False, boards)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        sim.run(profile.run_ms(T))
        report = {**_mapping_report(built, neurons_per_core), **variant, "build_s": build_s,
                  "map_s": time.perf_counter() - start, "reports": str(Path(run_dir) / "reports")}
        _end(sim)
    return report


def run_items(lowered: LoweredNetwork, config_dir: str, run_dir: str, x: np.ndarray, T: int, neurons_per_core: int,
              cell: DeltaCell | ExpCell, summed_weights: dict[str, list[float]], source_size: int = 100,
              boards: int | None = None, record: tuple[str, ...] = ()) -> dict:
    """The complete per-item loop on the configured machine: build once (input as spike sources of at most
    ``source_size`` neurons), one mapping run, then per item of ``x [B, *input_shape]``: set its IF-encoded
    input spikes, run T steps, read spikes and the output membrane back, reset. Returns the runner's dict
    (see ``PyNNRunner.run_items``) plus ``mapping`` (the mapping report), ``input_spikes_loaded`` (spike
    ticks the source cores held, summed over items), ``virtual`` (sPyNNaker ran on a virtual board) and
    ``note`` (what that returns), ``build_s`` and ``map_s``. ``record``: populations whose spikes come back step
    by step (``recorded``; zeros on a virtual board, which returns no spike). Logs go to ``run_dir/run.log``."""
    _enter_run_folder(config_dir, run_dir)
    with log_to_file(Path(run_dir) / "run.log"):
        from spinn_utilities.config_holder import get_config_bool

        start = time.perf_counter()
        sim, profile, built, variant = _build(lowered, neurons_per_core, cell, summed_weights, source_size, True,
                                              boards)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        sim.run(profile.run_ms(T))
        mapping = {**_mapping_report(built, neurons_per_core), **variant}
        sim.reset()
        map_s = time.perf_counter() - start
        result = PyNNRunner(sim, profile, lowered, built).run_items(x, T, record)
        virtual = get_config_bool("Machine", "virtual_board")
        _end(sim)
    return {**result, "mapping": mapping, "input_spikes_loaded": profile.loaded, "virtual": virtual,
            "note": VIRTUAL_NOTE if virtual else "", "build_s": build_s, "map_s": map_s}
