"""``neuron``: the NEURON simulator through PyNN (``pyNN.neuron``), with an exact NL-IAF cell.

Profile "exact" (default): PyNN has no cell with reset by subtraction and no ``IF_curr_delta`` for
NEURON, so the backend ships the discrete-time NL-IAF neuron as an NMODL artificial cell
(``nmodl/nliaf.mod``, compiled with ``nrnivmodl`` on first use) wrapped as a PyNN native cell type.
Every projection has one step of delay, so results equal the reference simulator's ``pynn`` profile
spike for spike. Profile "standard": PyNN's own ``IF_curr_exp`` (continuous time, hard reset, see
``worker``), what a plain PyNN script would use; it approximates the exact cell.
Items are split across worker processes (each builds the network once: NEURON has one global state
per process). The analog input enters as current injection (DESIGN section 6).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from neurodeploy.backends.base import RunOptions, check_inputs, run_in_batches
from neurodeploy.backends.neuron.mechanisms import prepare
from neurodeploy.backends.pynn.lowering import lower_network
from neurodeploy.errors import BackendError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir.network import Network


def _simulate(args):
    from neurodeploy.backends.neuron.worker import simulate_items

    return simulate_items(*args)


PROFILES = ("exact", "standard")


class NeuronBackend:
    """NEURON via PyNN. workers: processes to spread items over (default: all cores); profile: "exact"
    (NL-IAF cell) or "standard" (PyNN's IF_curr_exp)."""

    name = "neuron"

    def __init__(self, workers: int | None = None, profile: str = "exact"):
        self.workers = workers or os.cpu_count() or 1
        if self.workers < 1:
            raise BackendError(f"workers must be positive, got {workers}")
        if profile not in PROFILES:
            raise BackendError(f"unknown neuron profile {profile!r}; choose from {PROFILES}")
        self.profile = profile

    def run(self, network: Network, inputs: torch.Tensor, labels: torch.Tensor, options: RunOptions,
            checkpoint_dir: str | Path | None = None) -> SimulationResult:
        if options.exit_policy is not None:
            raise BackendError("early exit runs in the gpu backend only")
        check_inputs(network, inputs, labels)
        start = time.perf_counter()
        lowered = lower_network(network, options.encoding)
        prepare()
        lower_s = time.perf_counter() - start
        order = network.topological_order()
        timings = {"lower_s": lower_s, "build_s": 0.0, "neuron_run_s": 0.0}
        context = multiprocessing.get_context("spawn")

        def simulate(x: torch.Tensor, y: torch.Tensor, first: int) -> SimulationResult:
            chunks = [c for c in np.array_split(x.numpy().astype(np.float64), min(self.workers, len(x))) if len(c)]
            with ProcessPoolExecutor(len(chunks), mp_context=context) as pool:
                parts = list(pool.map(_simulate, [(lowered, c, options.T, self.profile) for c in chunks]))
            timings["build_s"] = max(timings["build_s"], max(p["build_s"] for p in parts))
            timings["neuron_run_s"] += max(p["run_s"] for p in parts)
            spikes = np.concatenate([p["spikes"] for p in parts])
            events = np.concatenate([p["events"] for p in parts])
            zeros = np.zeros(spikes.shape[:2] + (1,), np.float32)  # the input population: current injection
            neurons = None
            if options.record_neuron_counts:
                silent_input = np.zeros((len(x), network.input.size), np.float32)
                neurons = np.concatenate([silent_input, np.concatenate([p["neurons"] for p in parts])], axis=1)
            return SimulationResult(np.concatenate([p["readout"] for p in parts]), y.numpy().astype(np.int64),
                                    np.concatenate([zeros, spikes], axis=2), np.concatenate([zeros, events], axis=2),
                                    neuron_counts=neurons)

        start = time.perf_counter()
        result = run_in_batches(simulate, inputs, labels, options.batch_size, checkpoint_dir, options.progress,
                                f"neuron[{self.workers} workers]")
        run_s = time.perf_counter() - start
        sizes = {name: network.populations[name].size for name in order}
        result.metadata = {
            "backend": self.name,
            "device": f"cpu ({self.workers} NEURON worker processes)",
            "profile": self.profile,
            "encoding": options.encoding,
            "T": options.T,
            "dt_ms": 1.0,
            "pipeline_delay": network.depths()[network.output.name],
            "populations": [{"name": n, "role": network.populations[n].role, "size": sizes[n]} for n in order],
            "n_neurons": sum(p.size for p in lowered.populations),
            "n_synapses": int(sum(len(s) for s in lowered.synapses)),
            "timings": {**timings, "run_s": run_s, "per_item_s": run_s / max(len(labels), 1)},
        }
        return result.validate()


__all__ = ["NeuronBackend"]
