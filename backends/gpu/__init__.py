"""``gpu``: the fast, vectorized PyTorch reference simulator (CUDA when present, else CPU).

Profiles: "ideal" (zero synaptic delay, spikes cross every layer within a step), "pynn" (one-step
delay per projection, the semantics of PyNN machines, for spike-for-spike comparison), "spinnaker"
(one-step delays plus SpiNNaker's cell and arithmetic, see ``spinnaker_profile``) and "spinnaker_exp"
(the same for the IF_curr_exp cell of local-only connectors) and "nest" (one-step delays, hard reset to the
hard-reset compensation's values: the nest backend's cell, see ``nest_profile``), defined in
``docs/semantics.md``. Precision: "fp32", "bf16" (projection weights and spikes in bfloat16, spikes
stay exact, membranes and currents in float32) or "int8" (CPU: projections of 0/1 spikes through oneDNN's
int8 kernels, each float32 weight split into int8 parts; products exact, currents within float32 rounding of
the fp32 path's, ``binary_ops``).

In a job started by torchrun or an MPI launcher (``neurodeploy.parallel``) every batch is split over the
ranks: each rank compiles the network once and simulates its share, rank 0 joins the shares in item order
(``docs/scaling.md``, "MPI and torch.distributed").
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import torch

from neurodeploy.backends.base import Backend, Option, Requirements, RunOptions, Session
from neurodeploy.backends.gpu import binary_ops, fused
from neurodeploy.backends.gpu.anytime import AnytimeSimulator
from neurodeploy.backends.gpu.compiled import compile_network
from neurodeploy.backends.gpu.engine import batch_part, chunk_steps, simulate_batch
from neurodeploy.backends.gpu.nest_profile import apply_nest_cell
from neurodeploy.backends.gpu.spinnaker_profile import (
    PARTS,
    SUBSTEPS_OPTION,
    V_RESET_OPTION,
    apply_spinnaker_arithmetic,
    cell_parts,
    prepare_for_board,
    require_chosen,
    set_reset_values,
    simulate_substeps,
)
from neurodeploy.errors import BackendError, ConfigError
from neurodeploy.evaluate.result import ResultAssembler, SimulationResult
from neurodeploy.ir.network import Network
from neurodeploy.ir.population import CONVERSION_FEATURES
from neurodeploy.parallel import current_team, map_over_ranks
from neurodeploy.targets import spinnaker

#: profile -> synaptic delay per projection (steps)
PROFILES = {"ideal": 0, "pynn": 1, "spinnaker": 1, "spinnaker_exp": 1, "nest": 1}
#: profiles with SpiNNaker's arithmetic, and the cell each predicts
SPINNAKER_CELLS = {"spinnaker": "delta", "spinnaker_exp": "exp"}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "int8": None}
#: this process's compiled network in a launched job, by the token of the compile it came from (one at a time)
_RANK_SESSIONS: dict[str, Session] = {}


def _simulate_share(args) -> SimulationResult:
    """One rank's share of a batch in a launched job: compiles the backend's network on this rank's device
    (once per compile on rank 0), then simulates items ``first ..`` of ``x``."""
    backend, x, y, first, options = args
    token, network = backend.shared_network
    if backend.device.type == "cuda":  # one GPU per rank on a node
        backend.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if token not in _RANK_SESSIONS:
        _RANK_SESSIONS.clear()
        _RANK_SESSIONS[token] = backend.compile(network, options)
    return backend.simulate_local(_RANK_SESSIONS[token], x, y, first, options)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class GpuBackend(Backend):
    """Reference simulator; its options are declared in :attr:`options`.

    memory_budget_mb bounds the chunk's spike/current tensors and so sets the steps per chunk. Default:
    64 MB on CPU (a chunk that stays in cache is faster than one large batched op: measured 40 ms vs
    67 ms for dense MNIST, 1000 items, T = 50) and 1024 MB on CUDA (fewer, larger kernels).
    state_budget_mb bounds one step of the items simulated together: a batch whose single step needs more
    (big nets: VGG-16 at 224 x 224 needs about 160 MB per item) is simulated in parts of as many items as
    fit, each seeded as a batch of its own would be. Default: 2048 MB on CPU, 8192 MB on CUDA.
    """

    name = "gpu"
    supports_early_exit = True
    supports_neuron_counts = True
    supports_spike_recording = True
    neuron_features = frozenset(CONVERSION_FEATURES)
    options = (
        Option("device", None, "cuda, cuda:N or cpu (default: cuda when PyTorch sees a GPU, else cpu)"),
        Option("profile", "ideal", "semantics: ideal (zero delay), pynn (one-step delay per projection, as PyNN "
               "machines), spinnaker (SpiNNaker's cell and arithmetic: hard reset, leak, S16.15, 16-bit ring "
               "buffers; predicts a board), spinnaker_exp (the same with the IF_curr_exp cell and the int16 "
               "local-only weights of the spinnaker backend's --connectors local), nest (pynn with the hard reset "
               "of the nest backend's cell; predicts it)", choices=tuple(PROFILES)),
        V_RESET_OPTION,
        SUBSTEPS_OPTION,
        Option("precision", "fp32", "fp32, bf16 weights and spikes (membranes stay fp32), or int8: CPU int8 "
               "kernels on 0/1 spikes with each fp32 weight split into int8 parts (currents within fp32 rounding)",
               choices=tuple(PRECISIONS)),
        Option("chunk", None, "steps per chunk (1 = step-major streaming; default from the memory budget)",
               kind=int, minimum=1),
        Option("memory_budget_mb", None, "bound on one chunk's tensors (MB)", kind=float, minimum=1e-6, cli=False),
        Option("state_budget_mb", None, "bound on one step of the items simulated together (MB); a batch that needs "
               "more runs in parts", kind=float, minimum=1e-6, cli=False),
        Option("tau_m", spinnaker.DEFAULT_TAU_M, "membrane time constant (ms) of the spinnaker profile's cell",
               kind=float, minimum=1.0, maximum=16384.0, cli=False),
        Option("spinnaker_parts", PARTS, f"parts of the spinnaker profile applied, a subset of {PARTS}",
               kind=tuple, cli=False),
    )

    def __init__(self, **values):
        super().__init__(**values)
        unknown = set(self.spinnaker_parts) - set(PARTS)
        if unknown:
            raise ConfigError(f"unknown spinnaker profile parts {sorted(unknown)}; choose from {PARTS}")
        if self.profile == "nest" and self.v_reset == "refined":
            raise ConfigError("gpu backend: --v-reset refined simulates SpiNNaker's arithmetic; the nest profile takes "
                              "calibrated or zero")
        #: the --substeps asked: "auto" (each :meth:`prepare` chooses K and sets ``substeps``) or K
        self.substeps_asked = self.substeps
        if self.substeps != 1 and self.profile not in SPINNAKER_CELLS:
            raise ConfigError(f"gpu backend: --substeps {self.substeps} applies to the spinnaker profiles "
                              f"({', '.join(SPINNAKER_CELLS)}), not to --profile {self.profile}")
        try:
            self.device = torch.device(self.device) if self.device else default_device()
        except RuntimeError:
            raise ConfigError(f"gpu backend: --device {self.device!r} is not a device (cpu, cuda, cuda:N)") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError("device 'cuda' requested but PyTorch sees no CUDA GPU; use --device cpu")
        if self.precision == "int8" and not binary_ops.available(self.device):
            raise ConfigError("gpu backend: precision int8 needs the CPU with PyTorch's oneDNN int8 kernels; "
                              "use --device cpu or precision fp32")
        if self.precision == "int8" and self.profile in SPINNAKER_CELLS:
            raise ConfigError(f"gpu backend: precision int8 applies to the ideal and pynn profiles, not {self.profile}")
        if self.memory_budget_mb is None:
            self.memory_budget_mb = 1024.0 if self.device.type == "cuda" else 64.0
        if self.state_budget_mb is None:
            self.state_budget_mb = 8192.0 if self.device.type == "cuda" else 2048.0
        #: (token, network) of the last compile, which the ranks of a launched job compile for themselves
        self.shared_network: tuple[str, Network] | None = None

    def describe(self) -> str:
        reason = " (no CUDA device found)" if self.device.type == "cpu" and not torch.cuda.is_available() else ""
        ticks = f", {self.substeps} substeps" if self.substeps != 1 else ""
        return f"gpu[{self.device}{reason}, profile {self.profile}{ticks}]"

    def build_estimate(self, network: Network) -> str | None:
        """With precision int8, the first use on a machine builds the fused neuron scan's C++ extension
        (``fused.build_pending``): announced, as it takes about a minute; None otherwise."""
        if self.precision == "int8" and fused.build_pending():
            return f"building the int8 neuron scan (first use on this machine, {fused.BUILD_TIME})"
        return None

    def requirements(self) -> Requirements:
        if self.profile in SPINNAKER_CELLS:
            return Requirements(max_fan_in=spinnaker.MAX_FAN_IN)
        return Requirements()

    def prepare(self, network: Network, calibration: torch.Tensor, encoding: str = "analog",
                labels: torch.Tensor | None = None, T: int | None = None) -> Network:
        """The spinnaker profiles size each population's ring buffers from firing rates on the
        calibration items (``passes.ring_buffers``) and, with ``v_reset="calibrated"``, set each population's
        reset value to the mean overshoot a subtract reset would keep and, with ``"refined"``, refine it per channel
        by simulating the profile (``passes.reset_compensation``), as the spinnaker backend does; with
        ``substeps="auto"`` they first choose K by the accuracy of the labelled calibration items at the run's ``T``
        (``spinnaker_profile.prepare_for_board``, recorded in ``network.metadata["substeps_choice"]``). The nest
        profile sets the reset values as the nest backend does."""
        if self.profile == "nest":
            set_reset_values(network, calibration, encoding, self.v_reset, self.device)
        if self.profile in SPINNAKER_CELLS:
            spinnaker.check_carried(network)
            self.substeps = prepare_for_board(network, calibration, labels, encoding, self.v_reset,
                                              self.substeps_asked, self.device, SPINNAKER_CELLS[self.profile],
                                              self.tau_m, T)
        return network

    def accuracy_reference(self) -> tuple[str, dict] | None:
        """The spinnaker profiles keep the ``pynn`` profile's accuracy (same one-step delays, the IR's cell)."""
        if self.profile not in SPINNAKER_CELLS:
            return None
        return "gpu", {"profile": "pynn", "device": str(self.device), "precision": self.precision}

    def factor_variants(self) -> dict[str, tuple[str, dict]]:
        """One variant per part of the profile (:data:`~spinnaker_profile.PARTS` that apply to its cell), each
        with that part alone at the profile's sub-steps; with sub-steps also "substeps": no part, the IR's own cell
        in ticks (what the ticks alone change against the reference's steps: one-tick delays, several spikes a
        step)."""
        if self.profile not in SPINNAKER_CELLS:
            return {}
        base = {"profile": self.profile, "device": str(self.device), "precision": self.precision, "tau_m": self.tau_m,
                "substeps": self.substeps}
        variants = {part: ("gpu", {**base, "spinnaker_parts": (part,)})
                    for part in cell_parts(SPINNAKER_CELLS[self.profile])}
        if self.substeps != 1:
            variants["substeps"] = ("gpu", {**base, "spinnaker_parts": ()})
        return variants

    def compile(self, network: Network, options: RunOptions) -> Session:
        if self.profile in SPINNAKER_CELLS:
            spinnaker.check_carried(network)
        require_chosen("gpu", self.substeps)
        if self.substeps != 1 and options.exit_policy is not None:
            raise BackendError(f"gpu backend: early exit is not available with --substeps {self.substeps} (a tick's "
                               "readout is no step's); run without it, or with --substeps 1")
        if self.substeps != 1 and options.record_spikes:
            raise BackendError(f"gpu backend: --record is not available with --substeps {self.substeps} (a neuron may "
                               "fire several times in a step; the recording holds one spike per step); --substeps 1 "
                               "records")
        if current_team() is not None:
            self.shared_network = (uuid.uuid4().hex, network)
        compiled = compile_network(network, self.device, torch.float32, PRECISIONS[self.precision],
                                   PROFILES[self.profile],
                                   int8_parts=binary_ops.DEFAULT_PARTS if self.precision == "int8" else None)
        metadata = {
            "device": str(self.device), "profile": self.profile, "precision": self.precision,
            "substeps": self.substeps, "substeps_choice": network.metadata.get("substeps_choice"),
            "pipeline_delay": compiled.pipeline_delay,
            "populations": [{"name": layer.name, "role": layer.role, "size": layer.size} for layer in compiled.layers],
            "n_neurons": sum(layer.size for layer in compiled.layers if layer.role != "input"),
            "n_synapses": compiled.n_synapses,
        }
        if self.profile == "nest":
            apply_nest_cell(compiled, network, self.device)
        if self.profile in SPINNAKER_CELLS:
            metadata["spinnaker_arithmetic"] = apply_spinnaker_arithmetic(
                compiled, network, options.encoding, self.device, tau_m=self.tau_m, parts=self.spinnaker_parts,
                cell=SPINNAKER_CELLS[self.profile], substeps=self.substeps)
        return Session(compiled, metadata)

    def simulate_batch(self, session: Session, inputs: torch.Tensor, labels: torch.Tensor, first: int,
                       options: RunOptions) -> SimulationResult:
        """In a launched job the batch is split over the ranks (item i of the batch to share i * size // B);
        otherwise this process simulates it."""
        team = current_team()
        if team is None or self.shared_network is None:
            return self.simulate_local(session, inputs, labels, first, options)
        bounds = np.linspace(0, len(labels), team.size + 1).astype(int)
        shares = [(self, inputs[a:b], labels[a:b], first + a, options)
                  for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        assembler = ResultAssembler(len(labels))
        for (_, _, _, start, _), part in zip(shares, map_over_ranks(_simulate_share, shares), strict=True):
            assembler.add(start - first, part)
        return assembler.result()

    def simulate_local(self, session: Session, inputs: torch.Tensor, labels: torch.Tensor, first: int,
                       options: RunOptions) -> SimulationResult:
        """Simulates ``inputs [B, *input_shape]`` (items ``first ..`` of the run) in this process."""
        compiled = session.state
        x = inputs.to(self.device, torch.float32)
        names = [layer.name for layer in compiled.layers]
        record_layers = tuple(names.index(name) for name in options.record_spikes)
        part = batch_part(compiled, self.state_budget_mb * 2**20)
        parts = []
        for start in range(0, x.shape[0], part):
            items = x[start:start + part]
            chunk = self.chunk or chunk_steps(compiled, items.shape[0], options.T, self.memory_budget_mb * 2**20)
            with torch.inference_mode():
                if self.substeps != 1:  # k ticks per step (spinnaker profiles; compile refused early exit)
                    parts.append(simulate_substeps(
                        compiled, items, options.T, options.encoding, chunk, PROFILES[self.profile],
                        options.seed + first + start, self.substeps, options.record_neuron_counts))
                    continue
                parts.append(simulate_batch(
                    compiled, items, options.T, options.encoding, chunk, PROFILES[self.profile],
                    options.seed + first + start, options.exit_policy, options.record_neuron_counts, record_layers))

        def joined(tensors: list) -> np.ndarray | None:
            # counts[..., k] are contiguous (engine.simulate_batch): on the CPU one part's result takes the
            # tensors' memory as it is
            if tensors[0] is None:
                return None
            return np.ascontiguousarray((tensors[0] if len(tensors) == 1 else torch.cat(tensors)).cpu().numpy())

        readout, counts, stop, neurons, recorded = (list(values) for values in zip(*parts, strict=True))
        spikes, events = (joined([c[..., k] for c in counts]) for k in (0, 1))
        return SimulationResult(joined(readout), labels.cpu().numpy().astype(np.int64), spikes, events,
                                stop_times=None if options.exit_policy is None else joined(stop),
                                neuron_counts=joined(neurons), recorded_spikes=joined(recorded))

    def anytime_simulator(self, network: Network, images: torch.Tensor, labels: torch.Tensor, T: int,
                          batch_size: int = 1000) -> AnytimeSimulator:
        """A simulator of ``network``'s variants that differ only in thresholds and initial membranes
        (the interface the scale optimizer works against, ``neurodeploy.optimize.objective``)."""
        return AnytimeSimulator(network, images, labels, T, self.device, batch_size, self.memory_budget_mb)


__all__ = ["GpuBackend", "default_device"]
