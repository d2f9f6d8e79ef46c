"""``neuron``: the NEURON simulator through PyNN (``pyNN.neuron``), with an exact NL-IAF cell.

Profile "exact" (default): PyNN has no cell with reset by subtraction and no ``IF_curr_delta`` for
NEURON, so the backend ships the IR's discrete-time neuron (non-leaky IF, and the leak, v_leak, hard reset to
v_reset, synaptic current and delayed reset of trained SNNs) as an NMODL artificial cell
(``nmodl/nliaf.mod``, compiled with ``nrnivmodl`` on first use) wrapped as a PyNN native cell type.
Every projection has its delay, at least one step, and recurrent projections are ordinary projections, so
results equal the reference simulator's ``pynn`` profile spike for spike.
Profile "standard": PyNN's own ``IF_curr_exp`` (continuous time, hard reset, see
``worker``), what a plain PyNN script would use; it approximates the exact cell.
Items are split across worker processes (each builds the network once: NEURON has one global state
per process); in a job started by mpirun or srun (``neurodeploy.parallel``) they are split over the MPI ranks
instead, each rank simulating its share in its own NEURON (``docs/scaling.md`` says why items, not cells).
The analog input enters as current injection (``docs/semantics.md``, "PyNN lowering").
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from neurodeploy.backends.base import Backend, Option, RunOptions, Session
from neurodeploy.backends.neuron.mechanisms import prepare as compile_mechanisms
from neurodeploy.backends.processes import run_in_processes
from neurodeploy.backends.pynn.lowering import lower_network, structure
from neurodeploy.backends.pynn.results import joined_result
from neurodeploy.errors import BackendError, ConfigError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir.network import BEYOND_IF, Network
from neurodeploy.parallel import apply_environment, current_team, map_over_ranks, mpi_library, run_on_all_ranks

PROFILES = ("exact", "standard")
DISTRIBUTIONS = ("items", "cells")
#: what each profile's cell carries beyond the non-leaky IF neuron (``neurodeploy.ir.network.BEYOND_IF``): the
#: exact cell computes the IR's whole discrete-time update; IF_curr_exp is continuous-time with a hard reset, so
#: the standard profile takes only delays and recurrent projections
CARRIES = {"exact": BEYOND_IF, "standard": ("delays", "recurrence")}
CELLS = {"exact": "the exact NEURON cell", "standard": "the standard profile's IF_curr_exp cell"}
#: lowering + PyNN build per unrolled synapse on one core, measured range (s): ``build_estimate``
BUILD_SECONDS_PER_SYNAPSE = (10e-6, 30e-6)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


#: worker processes (fresh interpreters, so plain scripts work: ``neurodeploy.backends.processes``) start
#: NEURON without its GUI (no "no DISPLAY" warning) and without PyNN's "mpi4py not available" warning
WORKER_ENV = {"NEURON_MODULE_OPTIONS": "-nogui", "PYTHONWARNINGS": "ignore:mpi4py not available:UserWarning"}


def _simulate(args):
    from neurodeploy.backends.neuron.worker import simulate_items

    return simulate_items(*args)


class NeuronBackend(Backend):
    """NEURON via PyNN; its options are declared in :attr:`options`."""

    name = "neuron"
    supports_neuron_counts = True
    supports_spike_recording = True
    requires_modules = ("pyNN", "neuron")
    extra = "neuron"
    options = (
        Option("workers", None, "NEURON worker processes (default: all cores)", kind=int, minimum=1),
        Option("distribute", "items", "in an MPI job (mpirun, srun): items (each rank simulates whole networks for "
               "its share of the items) or cells (PyNN places every population's cells over the ranks, NEURON "
               "carries spikes between them; docs/scaling.md)", choices=DISTRIBUTIONS),
        Option("profile", "exact", "cell: exact (the NL-IAF NMODL cell, equal to gpu --profile pynn) or standard "
               "(PyNN's IF_curr_exp)", choices=PROFILES),
    )

    def __init__(self, **values):
        super().__init__(**values)
        team = current_team()
        if team is not None and self.workers is not None:
            raise ConfigError(f"--workers: this job's {team.size} ranks are its NEURON workers (one per rank); leave "
                              "--workers out, or start as many ranks as you want workers")
        if self.distribute == "cells" and (team is None or team.launch.kind != "mpi"):
            raise ConfigError("--distribute cells places the cells over MPI ranks: start the job with mpirun or srun "
                              "(docs/scaling.md)")
        self.ranks = team.size if team is not None else None
        self.rank_env = WORKER_ENV
        if team is not None:
            self.rank_env = {**WORKER_ENV, **self._mpi_environment()}
            apply_environment(self.rank_env)  # rank 0's own NEURON is imported later, in this process
        self.workers = self.ranks or self.workers or os.cpu_count() or 1

    def _mpi_environment(self) -> dict[str, str | None]:
        """NEURON's wheel runs on MPI, once MPI is started (by mpi4py here), when ``MPI_LIB_NRN_PATH`` names the
        MPI library: wanted for cells over ranks (the user's setting, else the library mpi4py loaded), never
        for items (each rank's NEURON must be a whole simulator of its own, or PyNN would split its cells)."""
        if self.distribute == "items":
            return {"MPI_LIB_NRN_PATH": None}
        library = os.environ.get("MPI_LIB_NRN_PATH") or mpi_library()
        if library is None:
            raise ConfigError("--distribute cells: the MPI library's file is not known; set MPI_LIB_NRN_PATH to it "
                              "(e.g. the environment's lib/libmpi.so.40) and pass it to every rank (mpirun -x)")
        return {"MPI_LIB_NRN_PATH": library}

    def _where(self) -> str:
        if self.distribute == "cells":
            return f"cells over {self.ranks} MPI ranks"
        return f"{self.ranks} ranks" if self.ranks else f"{self.workers} NEURON worker processes"

    def describe(self) -> str:
        return f"neuron[{self._where()}, profile {self.profile}]"

    def build_estimate(self, network: Network) -> str:
        """Lowering and PyNN's build cost 10-30 us per unrolled synapse on one core (dense MNIST 1.1 s for
        0.10 M synapses, full-width conv MNIST 486 s for 17.2 M: BENCHMARKS.md); every worker builds its
        own copy, so more workers than cores share them."""
        from neurodeploy.ir.connectivity import size

        neurons, synapses = size(network)
        share = max(1.0, self.workers / (os.cpu_count() or 1))
        low, high = (synapses * rate * share for rate in BUILD_SECONDS_PER_SYNAPSE)
        return (f"building the network in NEURON ({neurons:,} neurons, {synapses:,} synapses, {self.workers} "
                f"worker{'s' if self.workers != 1 else ''}): estimated {_seconds(low)} to {_seconds(high)} before "
                "the first item")

    def exact_reference(self) -> tuple[str, dict] | None:
        """The exact cell equals the reference simulator's pynn profile spike for spike."""
        return ("gpu", {"profile": "pynn", "device": "cpu"}) if self.profile == "exact" else None

    def compile(self, network: Network, options: RunOptions) -> Session:
        start = time.perf_counter()
        if options.encoding == "poisson":
            raise BackendError("the neuron backend takes the analog input (current injection) or IF-encoded spikes "
                               "(--encoding if), not Poisson spikes")
        # IF-encoded input enters as spike sources with synapses; analog input as a current per item
        lowered = lower_network(network, "analog", input_as_synapses=options.encoding == "if",
                                carries=CARRIES[self.profile], cell=CELLS[self.profile])
        compile_mechanisms()
        metadata = {
            "device": f"cpu ({self._where()})", "profile": self.profile, **structure(network, lowered),
            "timings": {"lower_s": time.perf_counter() - start, "neuron_build_s": 0.0, "neuron_run_s": 0.0},
        }
        return Session(lowered, metadata)

    def simulate_batch(self, session: Session, inputs: torch.Tensor, labels: torch.Tensor, first: int,
                       options: RunOptions) -> SimulationResult:
        lowered, timings = session.state, session.metadata["timings"]
        x = inputs.numpy().astype(np.float64)
        chunks = [c for c in np.array_split(x, min(self.workers, len(x))) if len(c)]
        log = None if self.folder is None else str(self.folder / "run.log")
        record = tuple(options.record_spikes)
        arguments = [(lowered, c, options.T, self.profile, log, False, record) for c in chunks]
        if self.distribute == "cells":  # one network over all ranks: every rank simulates every item
            parts = [run_on_all_ranks(_simulate, (lowered, x, options.T, self.profile, log, True, record),
                                      env=self.rank_env)]
        elif self.ranks:
            parts = map_over_ranks(_simulate, arguments, env=self.rank_env)
        else:
            parts = run_in_processes(_simulate, arguments, env=WORKER_ENV, what="NEURON worker")
        session.metadata["neuron_ranks"] = parts[0]["neuron_ranks"]  # NEURON's own count: its MPI ranks
        expected = self.ranks if self.distribute == "cells" else 1
        if any(p["neuron_ranks"] != expected for p in parts):  # PyNN would have split cells of different items
            raise BackendError(f"NEURON ran on {parts[0]['neuron_ranks']} MPI ranks where {expected} were meant "
                               f"(--distribute {self.distribute}); is MPI_LIB_NRN_PATH set for some ranks only?")
        timings["neuron_build_s"] = max(timings["neuron_build_s"], max(p["build_s"] for p in parts))
        timings["neuron_run_s"] += max(p["run_s"] for p in parts)
        return joined_result(parts, labels, options.record_neuron_counts, recorded=bool(record))


__all__ = ["NeuronBackend"]
