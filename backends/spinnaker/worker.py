"""Runs in a fresh process whose XDG_CONFIG_HOME holds the run's .spynnaker.cfg: builds the lowered
network with pyNN.spiNNaker and runs it, which on a virtual board partitions, places and routes it."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from neurodeploy.backends.pynn.lowering import LoweredNetwork
from neurodeploy.targets.spinnaker import DeltaCell

#: v_thresh of the non-spiking output population: high, but inside S16.15
OUTPUT_THRESHOLD = 32768.0


def map_network(lowered: LoweredNetwork, config_dir: str, run_dir: str, T: int, neurons_per_core: int,
                cell: DeltaCell, summed_weights: dict[str, list[float]]) -> dict:
    """Builds and runs (maps) the network; ``summed_weights`` sets each population's ring buffers."""
    os.environ["XDG_CONFIG_HOME"] = config_dir
    os.chdir(run_dir)
    start = time.perf_counter()
    import pyNN.spiNNaker as sim
    from pacman.data import PacmanDataView

    sim.setup(timestep=1.0)
    sim.set_number_of_neurons_per_core(sim.IF_curr_delta, neurons_per_core)
    pops = {"input": sim.Population(int(np.prod(lowered.input_shape)), sim.SpikeSourceArray(spike_times=[]),
                                    label="input")}
    for pop in lowered.populations:
        threshold = pop.threshold if pop.spiking else np.full(pop.size, OUTPUT_THRESHOLD)
        model = sim.IF_curr_delta(tau_m=cell.tau_m, cm=cell.cm, v_rest=0.0, v_reset=0.0, tau_refrac=0.0,
                                  v_thresh=threshold, i_offset=pop.bias)
        pops[pop.name] = sim.Population(pop.size, model, label=pop.name, initial_values={"v": pop.v_init},
                                        additional_parameters={
                                            "max_expected_summed_weight": summed_weights[pop.name]})
    n_synapses = 0
    for synapses in lowered.synapses:
        for receptor, mask in (("excitatory", synapses.weight > 0), ("inhibitory", synapses.weight < 0)):
            if mask.any():
                connections = np.stack([synapses.pre[mask], synapses.post[mask], np.abs(synapses.weight[mask]),
                                        np.ones(mask.sum())], axis=1)
                sim.Projection(pops[synapses.source], pops[synapses.target], sim.FromListConnector(connections),
                               sim.StaticSynapse(), receptor_type=receptor)
                n_synapses += int(mask.sum())
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    sim.run(T)
    map_s = time.perf_counter() - start
    cores, chips = defaultdict(int), set()
    for placement in PacmanDataView.iterate_placemements():
        app_vertex = getattr(placement.vertex, "app_vertex", None)
        label = getattr(app_vertex, "label", None)
        cores[label if label in pops else "system (monitors, routing, extra monitors)"] += 1
        chips.add((placement.x, placement.y))
    shifts = {name: [int(s) for s in pop._vertex.get_ring_buffer_shifts()] for name, pop in pops.items()
              if name != "input"}
    report = {
        "ring_buffer_shifts": shifts,
        "cores_per_population": dict(cores),
        "cores": int(sum(cores.values())),
        "chips": len(chips),
        "chips_used": sorted([list(c) for c in chips]),
        "neurons_per_core": neurons_per_core,
        "n_synapses": n_synapses,
        "build_s": build_s,
        "map_s": map_s,
        "reports": str(Path(run_dir) / "reports"),
    }
    sim.end()
    return report
