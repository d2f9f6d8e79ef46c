"""The reference simulator's ``spinnaker`` profile: SpiNNaker's arithmetic on a compiled network, so
``run --backend gpu --profile spinnaker`` predicts what the board computes (``docs/semantics.md``, "SpiNNaker").

What changes against the ``pynn`` profile (one-step delays stay):
- the cell is IF_curr_delta: hard reset to 0 and the leak ``v <- e v + I`` with the S16.15 constants of
  :class:`~neurodeploy.targets.spinnaker.DeltaCell` (the output population leaks too);
- thresholds, biases, initial membranes and the membrane after every update are rounded to S16.15;
- synapses are the projections' explicit matrices (source thresholds folded in), split into excitatory
  and inhibitory receptors, their magnitudes rounded to the 16-bit ring-buffer weights of the target's
  shift (from its expected summed weight, see ``passes.ring_buffers``), and each receptor's sum per step
  saturates at the ring buffer's limit;
- an analog input is current injection (rounded to S16.15), as the neuron backend does it.
Not modelled: the ARM's rounding inside the closed-form update (at most one unit of 2^-15 per step)
and the order in which saturating additions happen within a step.
"""

from __future__ import annotations

import warnings

import torch

from neurodeploy.backends.gpu.compiled import CompiledNetwork, Incoming
from neurodeploy.errors import BackendError
from neurodeploy.ir.network import Network
from neurodeploy.ir.torch_ops import compile_chain
from neurodeploy.passes.ring_buffers import summed_weights_or_bound
from neurodeploy.passes.synapse_matrix import projection_matrix, receptor_parts
from neurodeploy.targets.spinnaker import (
    DEFAULT_TAU_M,
    DeltaCell,
    quantize_weights,
    ring_buffer_limit,
    ring_buffer_shift,
    round_s1615,
)

#: the parts of SpiNNaker's semantics the profile applies; leaving some out measures what each costs
PARTS = ("hard_reset", "leak", "fixed_point", "weights")


def _sparse_fn(matrix, device: torch.device, dtype: torch.dtype, target_shape: tuple[int, ...]):
    """``[n, *source_shape] -> [n, *target_shape]`` through a sparse ``[n_target, n_source]`` matrix."""
    csr = matrix.tocsr()
    with warnings.catch_warnings():  # CSR is "beta" in PyTorch, and 10x faster than COO here
        warnings.simplefilter("ignore", UserWarning)
        weights = torch.sparse_csr_tensor(torch.as_tensor(csr.indptr, dtype=torch.int64),
                                          torch.as_tensor(csr.indices, dtype=torch.int64),
                                          torch.as_tensor(csr.data, dtype=dtype), csr.shape, device=device,
                                          check_invariants=True)

    def apply(spikes: torch.Tensor) -> torch.Tensor:
        flat = spikes.reshape(spikes.shape[0], -1)
        return (weights @ flat.T).T.reshape(spikes.shape[0], *target_shape)

    return apply


def _round(value):
    return round_s1615(value.clone()) if torch.is_tensor(value) else float(round_s1615(value))


def apply_spinnaker_arithmetic(compiled: CompiledNetwork, network: Network, encoding: str, device: torch.device,
                               dtype: torch.dtype = torch.float32, tau_m: float = DEFAULT_TAU_M,
                               parts: tuple[str, ...] = PARTS) -> dict:
    """Turns ``compiled`` (built with delay 1) into the SpiNNaker profile in place; returns a report per
    population: ring-buffer shifts, saturation limits and how many weights rounded to zero or clipped.
    ``parts`` picks which of :data:`PARTS` apply ("weights": 16-bit ring-buffer weights, receptors and
    saturation; "fixed_point": S16.15 rounding of parameters and state)."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise BackendError(f"unknown spinnaker profile parts {sorted(unknown)}; choose from {PARTS}")
    fixed = "fixed_point" in parts
    cell = DeltaCell.for_tau(tau_m)
    summed = summed_weights_or_bound(network, encoding)
    index = {layer.name: i for i, layer in enumerate(compiled.layers)}
    report: dict = {"cell": {"tau_m": cell.tau_m, "cm": cell.cm, "decay": cell.decay}, "parts": list(parts),
                    "populations": {}}
    for layer in compiled.layers:
        if layer.role == "input":
            continue
        shifts = [ring_buffer_shift(w) for w in summed[layer.name]]
        if "hard_reset" in parts:
            layer.reset = "zero"
        if "leak" in parts:
            layer.decay = cell.decay
        if "weights" in parts:
            layer.saturation = tuple(ring_buffer_limit(s) for s in shifts)
        if fixed:
            layer.fixed_point = True
            layer.threshold = _round(layer.threshold)
            layer.v_init = _round(layer.v_init)
            if layer.bias is not None:
                layer.bias = _round(layer.bias)
        layer.amplitude = None  # folded into the synapse matrices below
        layer.incoming = []
        report["populations"][layer.name] = {"max_expected_summed_weight": summed[layer.name],
                                             "ring_buffer_shift": shifts, "weights_to_zero": 0, "weights_clipped": 0}
    for projection in network.projections:
        source = network.populations[projection.source]
        target = compiled.layers[index[projection.target]]
        if source.role == "input" and encoding == "analog":
            chain = compile_chain(projection.ops, device=device, dtype=dtype)
            target.incoming.append(Incoming(0, (lambda x, chain=chain: round_s1615(chain(x))) if fixed else chain))
            continue
        matrix = projection_matrix(network, projection)
        if "weights" not in parts:
            target.incoming.append(Incoming(index[projection.source], _sparse_fn(matrix, device, dtype, target.shape)))
            continue
        entry = report["populations"][projection.target]
        receptors = []
        for receptor, part in enumerate(receptor_parts(matrix)):
            part = part.tocoo()
            quantized, clipped = quantize_weights(part.data, entry["ring_buffer_shift"][receptor])
            entry["weights_to_zero"] += int(((quantized == 0) & (part.data != 0)).sum())
            entry["weights_clipped"] += clipped
            part.data = quantized
            receptors.append(_sparse_fn(part, device, dtype, target.shape))
        target.incoming.append(Incoming(index[projection.source], *receptors))
    return report

