"""``nest``: the NEST simulator through PyNN (``pyNN.nest``), on the PyNN runner the neuron backend uses.

The cell is PyNN's standard ``IF_curr_delta``, NEST's ``iaf_psc_delta`` on the 1 ms grid: it computes the IR's
update exactly (its leak and ``v_leak`` included, see ``worker``) but resets hard, to ``V_reset``. NEST 3.10 has
no cell that resets by subtraction, so subtract-reset populations reset to the hard-reset compensation's values
(``passes.reset_compensation``, applied by :meth:`NestBackend.prepare` as the spinnaker backend does): the
gpu backend's ``nest`` profile computes exactly that and predicts this backend spike for spike (up to float32
against float64 rounding at threshold ties); ``docs/backends.md`` ("nest") states the choice and what it costs.
NEST runs in one worker process (a fresh interpreter: NEST keeps one kernel per process) with ``--threads``
threads. The nest-simulator wheel is built without MPI, so the backend refuses a job started by a launcher.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from neurodeploy.backends.base import Backend, Option, RunOptions, Session
from neurodeploy.backends.gpu.spinnaker_profile import set_reset_values
from neurodeploy.backends.processes import run_in_processes
from neurodeploy.backends.pynn.lowering import lower_network, structure
from neurodeploy.backends.pynn.results import joined_result
from neurodeploy.errors import BackendError, ConfigError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir.network import Network
from neurodeploy.parallel import current_team

#: what iaf_psc_delta carries beyond the non-leaky IF neuron (``neurodeploy.ir.network.BEYOND_IF``): the leak
#: (tau_m, per neuron), v_leak (E_L), hard reset to v_reset, delays, recurrence and spiking outputs; not the
#: synaptic current (delta synapses) nor the delayed reset
CARRIES = ("leak", "per-neuron leak_tau", "v_leak", "v_reset", "spike-count readouts", "delays", "recurrence")
CELL = "NEST's iaf_psc_delta (IF_curr_delta)"
#: the worker starts NEST without its banner and without pyNN.nest's warnings about its optional compiled
#: extension (stochastic synapses, unused here) and about its approximate reset (``worker`` flushes instead)
WORKER_ENV = {"PYNEST_QUIET": "1", "PYTHONWARNINGS": "ignore::UserWarning:pyNN.nest.simulator"}


def _simulate(args):
    from neurodeploy.backends.nest.worker import simulate_items

    return simulate_items(*args)


class NestBackend(Backend):
    """NEST via PyNN; its options are declared in :attr:`options`."""

    name = "nest"
    supports_neuron_counts = True
    supports_spike_recording = True
    requires_modules = ("pyNN", "nest")
    extra = "nest"
    options = (
        Option("threads", 1, "NEST threads (local_num_threads) of the one NEST process", kind=int, minimum=1),
        Option("v_reset", "calibrated", "reset value of NEST's hard-reset cell for populations that reset by "
               "subtraction: calibrated (per population, the mean overshoot a subtract reset keeps, measured on "
               "calibration items) or zero; docs/backends.md", choices=("calibrated", "zero")),
    )

    def __init__(self, **values):
        super().__init__(**values)
        team = current_team()
        if team is not None:
            raise ConfigError(f"the nest backend runs one NEST process with threads (--threads); this job has "
                              f"{team.size} ranks, and the nest-simulator wheel is built without MPI: start it "
                              "without mpirun, srun or torchrun")

    def describe(self) -> str:
        return f"nest[{self.threads} thread{'s' if self.threads != 1 else ''}, IF_curr_delta, v_reset {self.v_reset}]"

    def prepare(self, network: Network, calibration: torch.Tensor, encoding: str = "analog",
                labels: torch.Tensor | None = None, T: int | None = None) -> Network:
        """Sets the reset values of the subtract-reset populations (``passes.reset_compensation``) on the
        calibration items with the run's encoding: "calibrated" the mean overshoot, "zero" none."""
        return set_reset_values(network, calibration, encoding, self.v_reset)

    def exact_reference(self) -> tuple[str, dict] | None:
        """The gpu backend's nest profile computes this cell (on the same prepared network)."""
        return "gpu", {"profile": "nest", "device": "cpu", "v_reset": self.v_reset}

    def compile(self, network: Network, options: RunOptions) -> Session:
        start = time.perf_counter()
        if options.encoding == "poisson":
            raise BackendError("the nest backend takes the analog input (current injection) or IF-encoded spikes "
                               "(--encoding if), not Poisson spikes")
        lowered = lower_network(network, "analog", input_as_synapses=options.encoding == "if", carries=CARRIES,
                                cell=CELL)
        late = [pop.name for pop in lowered.populations if pop.drive_delay > 1]
        if late:
            raise BackendError(f"population {late[0]!r} receives the analog input with a delay of more than one step, "
                               f"which {CELL} does not implement with current injection; use --encoding if or the "
                               "gpu backend")
        metadata = {
            "device": f"cpu (NEST, {self.threads} thread{'s' if self.threads != 1 else ''})", "cell": "IF_curr_delta",
            **structure(network, lowered),
            "timings": {"lower_s": time.perf_counter() - start, "nest_build_s": 0.0, "nest_run_s": 0.0},
        }
        return Session(lowered, metadata)

    def simulate_batch(self, session: Session, inputs: torch.Tensor, labels: torch.Tensor, first: int,
                       options: RunOptions) -> SimulationResult:
        lowered, timings = session.state, session.metadata["timings"]
        # NEST's and PyNN's messages go to the run's log (nowhere without a folder): the worker's result and its
        # exceptions come back either way
        log = os.devnull if self.folder is None else str(self.folder / "run.log")
        x = inputs.numpy().astype(np.float64)
        record = tuple(options.record_spikes)
        parts = run_in_processes(_simulate, [(lowered, x, options.T, self.threads, log, record)], env=WORKER_ENV,
                                 what="NEST worker")
        timings["nest_build_s"] = max(timings["nest_build_s"], parts[0]["build_s"])
        timings["nest_run_s"] += parts[0]["run_s"]
        return joined_result(parts, labels, options.record_neuron_counts, recorded=bool(record))


__all__ = ["NestBackend"]
