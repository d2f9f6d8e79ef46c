"""``spinnaker``: SpiNNaker through sPyNNaker (``pyNN.spiNNaker``, 1!7.4.x).

Cells are ``IF_curr_delta`` (delta synapses, hard reset, ``tau_refrac = 0``; ``tau_m`` large so the leak is
small but inside fixed-point limits, ``cm`` chosen so an input of w moves the membrane by w, see
``neurodeploy.targets.spinnaker.DeltaCell``); the reset value ``v_reset`` is by default each population's mean
overshoot on calibration items, which makes up for what the hard reset loses against the IR's subtract reset
(``neurodeploy/passes/reset_compensation.py``; ``v_reset="zero"`` turns it off); excitatory and inhibitory
synapses are separate receptors with positive weights; every parameter is checked against the S16.15 range
before sPyNNaker sees it; each population's ring buffers are sized by ``max_expected_summed_weight`` from the
firing-rate statistics the ``ring_buffers`` pass stored in the IR (without them: the sum of all incoming
weights, which never saturates but wastes resolution). The reference simulator's ``spinnaker`` profile
computes the same. sPyNNaker runs in a child process whose config folder is the run's own (see ``config.py``).

``connectors``: "fromlist" is the above; "local" (the default where the installed sPyNNaker ships
``IF_curr_exp_conv.aplx`` and ``IF_curr_exp_pool_dense.aplx``) makes every cell IF_curr_exp
(``neurodeploy.targets.spinnaker.ExpCell``: tau_syn 1/32 ms, so a spike's current lasts one step) and
maps convolutions, pooling and pool-dense layers with sPyNNaker's local-only ConvolutionConnector and
PoolDenseConnector (per-channel Grid2D populations, int16 weights; ``backends/pynn/lowering.py``),
FromList elsewhere; the gpu backend's ``spinnaker_exp`` profile predicts it. It maps full-width conv
MNIST in seconds instead of minutes, because sPyNNaker writes kernels instead of synaptic rows.

Running: the shared PyNN runner (``backends/pynn/runner.py``) drives sPyNNaker in a child process per batch:
build once, map, then per item set the spike source's IF-encoded input spikes, run T steps, read the
spikes and the output membrane back, reset. On a virtual board (the default config) sPyNNaker maps the
network and runs nothing: the result is zeros and says so (``metadata["virtual"]``), and the
orchestrator asks :meth:`SpinnakerBackend.predictor` (the gpu backend's spinnaker profile) for the
predicted accuracy instead. A board (``--hardware-config spinn5``), a spalloc server or a remote
machine is checked for reachability before any other work (:meth:`SpinnakerBackend.check_target`);
``boards`` sets how many boards a spalloc server or remote service allocates.

``substeps`` K (1, 2, 4, 8): ``machine_time_step`` 1/K ms with ``time_scale_factor`` K, the cells' constants of
that tick, biases and the input's IF encoding at 1/K per tick, one-tick delays, ring buffers sized per tick
(``neurodeploy.targets.spinnaker``, "Sub-stepping"); spikes are counted per IR step of K ticks. The gpu profiles
with the same ``substeps`` predict it.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from neurodeploy.backends.base import Backend, Option, Requirements, RunOptions, Session
from neurodeploy.backends.gpu.spinnaker_profile import (
    SUBSTEPS_OPTION,
    V_RESET_OPTION,
    prepare_for_board,
    require_chosen,
)
from neurodeploy.backends.pynn.lowering import LoweredNetwork, lower_network, structure
from neurodeploy.backends.spinnaker.config import HardwareConfig, check_reachable, load_hardware_config
from neurodeploy.errors import BackendError, ConfigError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir.connectivity import fan_maps
from neurodeploy.ir.network import Network
from neurodeploy.passes.reset_compensation import check_substeps
from neurodeploy.passes.ring_buffers import summed_weights_or_bound
from neurodeploy.safe_io import write_bytes
from neurodeploy.targets import spinnaker
from neurodeploy.targets.spinnaker import DeltaCell, ExpCell, check_s1615

#: the encoding a board receives its input in: spikes from a spike source
BOARD_ENCODING = "if"


def _local_only_shipped() -> bool:
    """Whether the installed sPyNNaker ships the local-only binaries of IF_curr_exp (conv and pool-dense)."""
    from neurodeploy.backends.spinnaker.worker import check_local_only_binaries

    try:
        check_local_only_binaries("IF_curr_exp", {"conv", "pool_dense"})
    except BackendError:
        return False
    return True


def _map(call):
    from neurodeploy.backends.spinnaker.worker import map_network

    args, kwargs = call
    return map_network(*args, **kwargs)


def _run(call):
    from neurodeploy.backends.spinnaker.worker import run_items

    args, kwargs = call
    return run_items(*args, **kwargs)


def _in_child_process(function, args: tuple, target: str):
    """Runs ``function(args)`` in a fresh process (sPyNNaker keeps global state and reads its config from
    the process's XDG_CONFIG_HOME); its failures become one BackendError."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(function, args).result()
        except Exception as err:  # sPyNNaker raises many types, e.g. when a board is unreachable
            first_line = (str(err).strip().splitlines() or [""])[0][:300]
            raise BackendError(f"sPyNNaker failed on the {target} ({type(err).__name__}: {first_line}); its log is "
                               "run.log in the run folder") from None


class SpinnakerBackend(Backend):
    """sPyNNaker; its options are declared in :attr:`options`."""

    name = "spinnaker"
    #: spikes come back from a board; a virtual board runs nothing (zeros, ``metadata["virtual"]``)
    supports_spike_recording = True
    requires_modules = ("pyNN", "spynnaker")
    extra = "spinnaker"
    options = (
        Option("hardware_config", None, "sPyNNaker machine config: a .cfg file or the name of one in "
               "hardware_configs/spinnaker/ (default: the virtual SpiNN-5 board)"),
        Option("neurons_per_core", spinnaker.DEFAULT_NEURONS_PER_CORE, "neurons per core (ordinary synapses)",
               kind=int, minimum=1, maximum=spinnaker.MAX_NEURONS_PER_CORE),
        Option("tau_m", spinnaker.DEFAULT_TAU_M, "membrane time constant (ms) of the cell",
               kind=float, minimum=1.0, maximum=16384.0, cli=False),
        Option("connectors", "auto", "fromlist (IF_curr_delta, every synapse listed), local (IF_curr_exp with "
               "sPyNNaker's local-only ConvolutionConnector / PoolDenseConnector where they apply, FromList "
               "elsewhere) or auto (local where the installed sPyNNaker ships its binaries)",
               choices=("auto", "local", "fromlist")),
        V_RESET_OPTION,
        SUBSTEPS_OPTION,
        Option("boards", None, "SpiNN-5 boards to request from a spalloc server or remote service (default: "
               "as many as the network needs)", kind=int, minimum=1),
    )

    def __init__(self, **values):
        super().__init__(**values)
        self.config: HardwareConfig = load_hardware_config(self.hardware_config)
        if self.connectors == "auto":
            self.connectors = "local" if _local_only_shipped() else "fromlist"
        self.local_only = self.connectors == "local"
        #: the --substeps asked: "auto" (each :meth:`prepare` chooses K and sets ``substeps`` and ``cell``) or K
        self.substeps_asked = self.substeps
        self.cell = None if self.substeps == "auto" else self._cell(self.substeps)
        if self.boards is not None and not self.config.allocated:
            raise ConfigError(f"spinnaker backend: --boards applies to spalloc and remote configs, not to the "
                              f"{self.config.target} of {self.config.path}")

    def _cell(self, substeps: int) -> DeltaCell | ExpCell:
        """The cell's constants for a tick of ``1 / substeps`` ms (the worker sets machine_time_step and
        time_scale_factor from its ``dt``)."""
        dt = 1.0 / substeps
        return ExpCell.for_tick(self.tau_m, dt) if self.local_only else DeltaCell.for_tau(self.tau_m, dt)

    def describe(self) -> str:
        ticks = f", {self.substeps} substeps" if self.substeps != 1 else ""
        return (f"spinnaker[{self.config.target}, {'IF_curr_exp, local-only' if self.local_only else 'IF_curr_delta'}"
                f"{ticks}]")

    def check_target(self) -> None:
        """A board must answer, a spalloc server accept a connection, within seconds."""
        check_reachable(self.config)

    def _folder(self) -> Path:
        folder = self.folder if self.folder is not None else Path(tempfile.mkdtemp(prefix="neurodeploy-spinnaker-"))
        folder = folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def requirements(self) -> Requirements:
        return Requirements(max_fan_in=spinnaker.MAX_FAN_IN, input_encoding=BOARD_ENCODING)

    def prepare(self, network: Network, calibration: torch.Tensor, encoding: str = "analog",
                labels: torch.Tensor | None = None, T: int | None = None) -> Network:
        """Sizes each population's ring buffers from firing rates on the calibration items, with the
        input as the spikes of the board's spike source (``passes.ring_buffers``), and, with ``v_reset``
        "calibrated", sets the cells' reset values (``passes.reset_compensation``, same input); with
        ``substeps="auto"`` K is first chosen by the gpu profile that predicts this board on the labelled calibration
        items at the run's ``T`` (``spinnaker_profile.prepare_for_board``, ``network.metadata["substeps_choice"]``)."""
        spinnaker.check_carried(network)
        self.substeps = prepare_for_board(network, calibration, labels, BOARD_ENCODING, self.v_reset,
                                          self.substeps_asked, cell="exp" if self.local_only else "delta",
                                          tau_m=self.tau_m, T=T)
        self.cell = self._cell(self.substeps)
        return network

    def predictor(self) -> tuple[str, dict] | None:
        """A virtual board returns no data: the gpu backend's spinnaker profile predicts it."""
        profile = "spinnaker_exp" if self.local_only else "spinnaker"
        return ("gpu", {"profile": profile, "tau_m": self.tau_m, "substeps": self.substeps}) if self.config.virtual \
            else None

    def check(self, network: Network) -> LoweredNetwork:
        """Lowers the network and checks every value sPyNNaker will store (S16.15), and that its reset values were
        measured in the board's ticks (``passes.reset_compensation.check_substeps``)."""
        require_chosen("spinnaker", self.substeps)
        check_substeps(network, self.substeps)
        lowered = lower_network(network, input_as_synapses=True, local_only=self.local_only,
                                carries=spinnaker.CARRIES, cell=spinnaker.CELLS)
        for pop in lowered.populations:
            bias = self.cell.offset_for(pop.bias)
            for parameter, values in (("threshold", pop.threshold), ("bias (i_offset)", bias),
                                      ("initial membrane", pop.v_init), ("v_reset", pop.v_reset)):
                check_s1615(pop.name, parameter, values)
        for synapses in lowered.synapses:
            check_s1615(synapses.target, f"weight from {synapses.source!r}", synapses.weight)
        for projection in lowered.local:
            values = projection.kernels.values() if hasattr(projection, "kernels") else projection.weights
            check_s1615(projection.target, f"weight from {projection.source!r}",
                        np.concatenate([np.ravel(v) for v in values]) if values else np.zeros(0))
        if lowered.local:
            from neurodeploy.backends.spinnaker.worker import check_local_only_binaries

            check_local_only_binaries("IF_curr_exp", {"conv" if hasattr(p, "kernels") else "pool_dense"
                                                      for p in lowered.local})
        return lowered

    def build_estimate(self, network: Network) -> str:
        """sPyNNaker writes every FromList row on the host, 20-40 us per synapse (conv MNIST: 10.4 s for
        0.49 M synapses, 661 s for 17.4 M); local-only connectors hand it kernels instead, 5-25 s for the
        conv MNIST widths measured (BENCHMARKS.md), plus rows for the dense layers."""
        from neurodeploy.ir.connectivity import size

        neurons, synapses = size(network)
        if self.local_only:
            when = "estimated 5 s to a few minutes (kernels for convolutions, rows for the rest)"
        else:
            low, high = synapses * 20e-6, synapses * 40e-6
            when = f"estimated {low:.0f} to {high:.0f} s" if high < 120 else \
                f"estimated {low / 60:.0f} to {high / 60:.0f} min"
        return (f"mapping the network with sPyNNaker ({neurons:,} neurons, {synapses:,} synapses, "
                f"{self.connectors} connectors): {when}")

    def map(self, network: Network, run_dir: str | Path, T: int = 10) -> dict:
        """Maps the network onto the configured machine; writes and returns the mapping report."""
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        lowered = self.check(network)
        summed = summed_weights_or_bound(network, BOARD_ENCODING)
        config_dir = self.config.write_for_run(run_dir)
        report = _in_child_process(_map, ((lowered, str(config_dir), str(run_dir), T, self.neurons_per_core,
                                           self.cell, summed), {"boards": self.boards}), self.config.target)
        _, fan_in = fan_maps(network)
        report.update(max_expected_summed_weight=summed)
        report.update(target=self.config.target, config=str(self.config.path), virtual=self.config.virtual,
                      max_fan_in={p.name: int(fan_in[p.name].max()) for p in lowered.populations},
                      note="a virtual board maps the network and produces no spikes" if self.config.virtual else "")
        if "fan_in_pass" in network.metadata:
            report["fan_in_pass"] = network.metadata["fan_in_pass"]
        write_bytes(run_dir / "mapping.json", json.dumps(report, indent=1).encode())
        return report

    def compile(self, network: Network, options: RunOptions) -> Session:
        if options.encoding not in ("analog", BOARD_ENCODING):  # "if" names what the board does anyway
            raise BackendError(f"the spinnaker backend encodes the input itself (IF spikes from a spike source); "
                               f"--encoding {options.encoding} does not apply")
        if self.substeps != 1 and options.record_spikes:
            raise BackendError(f"spinnaker backend: --record is not available with --substeps {self.substeps} (a "
                               "neuron may fire several times in a step; the recording holds one spike per step); "
                               "--substeps 1 records")
        lowered = self.check(network)
        folder = self._folder()
        config_dir = self.config.write_for_run(folder)
        metadata = {
            "device": self.config.target, "profile": "IF_curr_exp" if self.local_only else "IF_curr_delta",
            "connectors": self.connectors, "virtual": self.config.virtual,
            "encoding_on_board": BOARD_ENCODING, "substeps": self.substeps, **structure(network, lowered),
            "run_folder": str(folder),
        }
        return Session((lowered, str(config_dir), str(folder), summed_weights_or_bound(network, BOARD_ENCODING)),
                       metadata)

    def simulate_batch(self, session: Session, inputs: torch.Tensor, labels: torch.Tensor, first: int,
                       options: RunOptions) -> SimulationResult:
        lowered, config_dir, folder, summed = session.state
        x = inputs.numpy().astype(np.float64)
        out = _in_child_process(_run, ((lowered, config_dir, folder, x, options.T, self.neurons_per_core, self.cell,
                                        summed), {"boards": self.boards, "record": tuple(options.record_spikes)}),
                                 self.config.target)
        session.metadata.update(mapping=out["mapping"], note=out["note"], virtual=out["virtual"],
                                items_read=session.metadata.get("items_read", 0) + out["items_read"])
        spikes = np.concatenate([out["input_spikes"][..., None], out["spikes"]], axis=2)
        events = np.concatenate([out["input_events"][..., None], out["events"]], axis=2)
        # a virtual board returns no spike: its recorded spikes are zeros, and metadata["virtual"] says so
        recorded = out["recorded"] if options.record_spikes else None
        return SimulationResult(out["readout"], labels.numpy().astype(np.int64), spikes, events,
                                recorded_spikes=recorded)


__all__ = ["SpinnakerBackend"]
