"""``gpu``: the fast, vectorized PyTorch reference simulator (CUDA when present, else CPU).

Profiles: "ideal" (zero synaptic delay, spikes cross every layer within a step), "pynn" (one-step
delay per projection, the semantics of PyNN machines, for spike-for-spike comparison), "spinnaker"
(one-step delays plus SpiNNaker's cell and arithmetic, see ``spinnaker_profile``) and "spinnaker_exp"
(the same for the IF_curr_exp cell of local-only connectors), defined in
``docs/semantics.md``. Precision: "fp32", or "bf16" (projection weights and spikes in bfloat16, spikes
stay exact, membranes and currents in float32).
"""

from __future__ import annotations

import numpy as np
import torch

from neurodeploy.backends.base import Backend, Option, Requirements, RunOptions, Session
from neurodeploy.backends.gpu.anytime import AnytimeSimulator
from neurodeploy.backends.gpu.compiled import compile_network
from neurodeploy.backends.gpu.engine import chunk_steps, simulate_batch
from neurodeploy.backends.gpu.spinnaker_profile import (
    PARTS,
    V_RESET_OPTION,
    apply_spinnaker_arithmetic,
    cell_parts,
    set_reset_values,
)
from neurodeploy.errors import BackendError, ConfigError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir.network import Network
from neurodeploy.passes.ring_buffers import annotate_summed_weights
from neurodeploy.targets import spinnaker

#: profile -> synaptic delay per projection (steps)
PROFILES = {"ideal": 0, "pynn": 1, "spinnaker": 1, "spinnaker_exp": 1}
#: profiles with SpiNNaker's arithmetic, and the cell each predicts
SPINNAKER_CELLS = {"spinnaker": "delta", "spinnaker_exp": "exp"}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class GpuBackend(Backend):
    """Reference simulator; its options are declared in :attr:`options`.

    memory_budget_mb bounds the chunk's spike/current tensors and so sets the steps per chunk. Default:
    64 MB on CPU (a chunk that stays in cache is faster than one large batched op: measured 40 ms vs
    67 ms for dense MNIST, 1000 items, T = 50) and 1024 MB on CUDA (fewer, larger kernels).
    """

    name = "gpu"
    supports_early_exit = True
    supports_neuron_counts = True
    options = (
        Option("device", None, "cuda, cuda:N or cpu (default: cuda when PyTorch sees a GPU, else cpu)"),
        Option("profile", "ideal", "semantics: ideal (zero delay), pynn (one-step delay per projection, as PyNN "
               "machines), spinnaker (SpiNNaker's cell and arithmetic: hard reset, leak, S16.15, 16-bit ring "
               "buffers; predicts a board), spinnaker_exp (the same with the IF_curr_exp cell and the int16 "
               "local-only weights of the spinnaker backend's --connectors local)", choices=tuple(PROFILES)),
        V_RESET_OPTION,
        Option("precision", "fp32", "fp32, or bf16 weights and spikes (membranes stay fp32)",
               choices=tuple(PRECISIONS)),
        Option("chunk", None, "steps per chunk (1 = step-major streaming; default from the memory budget)",
               kind=int, minimum=1),
        Option("memory_budget_mb", None, "bound on one chunk's tensors (MB)", kind=float, minimum=1e-6, cli=False),
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
        try:
            self.device = torch.device(self.device) if self.device else default_device()
        except RuntimeError:
            raise ConfigError(f"gpu backend: --device {self.device!r} is not a device (cpu, cuda, cuda:N)") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError("device 'cuda' requested but PyTorch sees no CUDA GPU; use --device cpu")
        if self.memory_budget_mb is None:
            self.memory_budget_mb = 1024.0 if self.device.type == "cuda" else 64.0

    def describe(self) -> str:
        reason = " (no CUDA device found)" if self.device.type == "cpu" and not torch.cuda.is_available() else ""
        return f"gpu[{self.device}{reason}, profile {self.profile}]"

    def requirements(self) -> Requirements:
        if self.profile in SPINNAKER_CELLS:
            return Requirements(max_fan_in=spinnaker.MAX_FAN_IN)
        return Requirements()

    def prepare(self, network: Network, calibration: torch.Tensor, encoding: str = "analog") -> Network:
        """The spinnaker profiles size each population's ring buffers from firing rates on the
        calibration items (``passes.ring_buffers``) and, with ``v_reset="calibrated"``, set each population's
        reset value to the mean overshoot a subtract reset would keep and, with ``"refined"``, refine it per channel
        by simulating the profile (``passes.reset_compensation``), as the spinnaker backend does."""
        if self.profile in SPINNAKER_CELLS:
            annotate_summed_weights(network, calibration.numpy(), encoding)
            set_reset_values(network, calibration, encoding, self.v_reset, self.device,
                             SPINNAKER_CELLS[self.profile], self.tau_m)
        return network

    def accuracy_reference(self) -> tuple[str, dict] | None:
        """The spinnaker profiles keep the ``pynn`` profile's accuracy (same one-step delays, the IR's cell)."""
        if self.profile not in SPINNAKER_CELLS:
            return None
        return "gpu", {"profile": "pynn", "device": str(self.device), "precision": self.precision}

    def factor_variants(self) -> dict[str, tuple[str, dict]]:
        """One variant per part of the profile (:data:`~spinnaker_profile.PARTS` that apply to its cell), each
        with that part alone."""
        if self.profile not in SPINNAKER_CELLS:
            return {}
        base = {"profile": self.profile, "device": str(self.device), "precision": self.precision, "tau_m": self.tau_m}
        return {part: ("gpu", {**base, "spinnaker_parts": (part,)})
                for part in cell_parts(SPINNAKER_CELLS[self.profile])}

    def compile(self, network: Network, options: RunOptions) -> Session:
        compiled = compile_network(network, self.device, torch.float32, PRECISIONS[self.precision],
                                   PROFILES[self.profile])
        metadata = {
            "device": str(self.device), "profile": self.profile, "precision": self.precision,
            "pipeline_delay": compiled.pipeline_delay,
            "populations": [{"name": layer.name, "role": layer.role, "size": layer.size} for layer in compiled.layers],
            "n_neurons": sum(layer.size for layer in compiled.layers if layer.role != "input"),
            "n_synapses": compiled.n_synapses,
        }
        if self.profile in SPINNAKER_CELLS:
            metadata["spinnaker_arithmetic"] = apply_spinnaker_arithmetic(
                compiled, network, options.encoding, self.device, tau_m=self.tau_m, parts=self.spinnaker_parts,
                cell=SPINNAKER_CELLS[self.profile])
        return Session(compiled, metadata)

    def simulate_batch(self, session: Session, inputs: torch.Tensor, labels: torch.Tensor, first: int,
                       options: RunOptions) -> SimulationResult:
        compiled = session.state
        x = inputs.to(self.device, torch.float32)
        chunk = self.chunk or chunk_steps(compiled, x.shape[0], options.T, self.memory_budget_mb * 2**20)
        with torch.inference_mode():
            readout, counts, stop, neurons = simulate_batch(
                compiled, x, options.T, options.encoding, chunk, PROFILES[self.profile], options.seed + first,
                options.exit_policy, options.record_neuron_counts)
        # counts[..., k] are contiguous (engine.simulate_batch): on the CPU the result takes the tensors'
        # memory as it is
        spikes, events = (np.ascontiguousarray(counts[..., k].cpu().numpy()) for k in (0, 1))
        return SimulationResult(readout.cpu().numpy(), labels.cpu().numpy().astype(np.int64), spikes, events,
                                stop_times=None if options.exit_policy is None else stop.cpu().numpy(),
                                neuron_counts=None if neurons is None else neurons.cpu().numpy())

    def anytime_simulator(self, network: Network, images: torch.Tensor, labels: torch.Tensor, T: int,
                          batch_size: int = 1000) -> AnytimeSimulator:
        """A simulator of ``network``'s variants that differ only in thresholds and initial membranes
        (the interface the scale optimizer works against, ``neurodeploy.optimize.objective``)."""
        return AnytimeSimulator(network, images, labels, T, self.device, batch_size, self.memory_budget_mb)


__all__ = ["GpuBackend", "default_device"]
