"""``spinnaker``: SpiNNaker through sPyNNaker (``pyNN.spiNNaker``, 1!7.4.x).

Cells are ``IF_curr_delta`` (delta synapses, hard reset to 0, ``tau_refrac = 0``; ``tau_m`` large so the
leak is small but inside fixed-point limits, ``cm`` chosen so an input of w moves the membrane by w, see
``neurodeploy.targets.spinnaker.DeltaCell``); excitatory and inhibitory synapses are separate receptors with
positive weights; every parameter is checked against the S16.15 range before sPyNNaker sees it; each
population's ring buffers are sized by ``max_expected_summed_weight`` from the firing-rate statistics the
``ring_buffers`` pass stored in the IR (without them: the sum of all incoming weights, which never
saturates but wastes resolution). The reference simulator's ``spinnaker`` profile computes the same.
sPyNNaker runs in a child process whose config folder is the run's own (see ``config.py``).

What is built: mapping. On a virtual board (the default config) a run partitions, places and routes the
network and yields a mapping report (cores per population, chips), and no spikes. Running test items
on a physical board and reading their spikes back is not built yet, and cannot be tested here (no
board is reachable); ``run`` says so.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from neurodeploy.backends.base import RunOptions
from neurodeploy.backends.pynn.lowering import lower_network
from neurodeploy.backends.spinnaker.config import HardwareConfig, load_hardware_config
from neurodeploy.errors import BackendError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir.connectivity import fan_maps
from neurodeploy.ir.network import Network
from neurodeploy.passes.ring_buffers import summed_weights_or_bound
from neurodeploy.targets.spinnaker import DeltaCell, check_s1615


def _map(args):
    from neurodeploy.backends.spinnaker.worker import map_network

    return map_network(*args)


class SpinnakerBackend:
    """hardware_config: a .cfg file (default: hardware_configs/spinnaker/virtual-spinn5.cfg);
    neurons_per_core: at most 256 for ordinary synapses; tau_m: membrane time constant in ms."""

    name = "spinnaker"

    def __init__(self, hardware_config: str | Path | None = None, neurons_per_core: int = 128,
                 tau_m: float = 1000.0):
        if not 1 <= neurons_per_core <= 256:
            raise BackendError(f"neurons_per_core must lie in 1..256, got {neurons_per_core}")
        self.config: HardwareConfig = load_hardware_config(hardware_config)
        self.neurons_per_core = neurons_per_core
        self.cell = DeltaCell.for_tau(tau_m)

    def check(self, network: Network):
        """Lowers the network and checks every value sPyNNaker will store (S16.15)."""
        lowered = lower_network(network, input_as_synapses=True)
        for pop in lowered.populations:
            for parameter, values in (("threshold", pop.threshold), ("bias (i_offset)", pop.bias),
                                      ("initial membrane", pop.v_init)):
                check_s1615(pop.name, parameter, values)
        for synapses in lowered.synapses:
            check_s1615(synapses.target, f"weight from {synapses.source!r}", synapses.weight)
        return lowered

    def map(self, network: Network, run_dir: str | Path, T: int = 10) -> dict:
        """Maps the network onto the configured machine; writes and returns the mapping report."""
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        lowered = self.check(network)
        summed = summed_weights_or_bound(network, "if")
        config_dir = self.config.write_for_run(run_dir)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            try:
                report = pool.submit(_map, (lowered, str(config_dir), str(run_dir), T, self.neurons_per_core,
                                            self.cell, summed)).result()
            except Exception as err:  # sPyNNaker raises many types, e.g. when a board is unreachable
                raise BackendError(f"sPyNNaker failed on the {self.config.target} ({type(err).__name__}: {err})") \
                    from None
        _, fan_in = fan_maps(network)
        report.update(max_expected_summed_weight=summed)
        report.update(target=self.config.target, config=str(self.config.path), virtual=self.config.virtual,
                      max_fan_in={p.name: int(fan_in[p.name].max()) for p in lowered.populations},
                      note="a virtual board maps the network and produces no spikes" if self.config.virtual else "")
        (run_dir / "mapping.json").write_text(json.dumps(report, indent=1))
        return report

    def run(self, network: Network, inputs: torch.Tensor, labels: torch.Tensor, options: RunOptions,
            checkpoint_dir: str | Path | None = None) -> SimulationResult:
        if self.config.virtual:
            raise BackendError("a virtual SpiNNaker board maps the network and produces no spikes: use "
                               "`neurodeploy run --backend spinnaker` for its mapping report, or pass a real board "
                               "with --hardware-config")
        raise BackendError(f"running test items on the {self.config.target} is not built yet; "
                           "`neurodeploy run --backend spinnaker` maps the network onto it")


__all__ = ["SpinnakerBackend"]
