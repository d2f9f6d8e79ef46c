"""The reference simulator's ``nest`` profile: what the nest backend's cell computes (``docs/backends.md``,
"nest"), so ``run --backend gpu --profile nest`` predicts ``run --backend nest`` on the same prepared network.

NEST's ``iaf_psc_delta`` computes the IR's update exactly (leak, ``v_leak``, one-step delays as the ``pynn``
profile) except the reset: it resets hard. A population that resets by subtraction therefore resets to its
value of the hard-reset compensation (``passes.reset_compensation.v_reset``: the mean overshoot measured on
calibration items for hidden populations, 0 without the pass and for a spiking output), the same per-neuron
values the nest backend's lowering gives NEST.
Everything else is the ``pynn`` profile (float32 here, float64 in NEST: spike counts may differ where a
membrane lands on a threshold within rounding).
"""

from __future__ import annotations

import torch

from neurodeploy.backends.gpu.compiled import CompiledNetwork
from neurodeploy.ir.network import Network
from neurodeploy.passes.reset_compensation import v_reset


def apply_nest_cell(compiled: CompiledNetwork, network: Network, device: torch.device) -> None:
    """Turns ``compiled`` (built with delay 1) into the ``nest`` profile in place: every population that resets
    by subtraction (hidden ones and a spiking output; QFFS ones, which the nest backend refuses, keep theirs)
    resets hard to its ``v_reset`` values (the compensation's, or 0)."""
    for layer in compiled.layers:
        neuron = network.populations[layer.name].neuron
        if layer.role == "input" or neuron.reset != "subtract" or neuron.spike_cap is not None or \
                neuron.negative_spikes:
            continue
        layer.reset = "zero"
        layer.v_reset = torch.as_tensor(v_reset(network, layer.name), dtype=torch.float32,
                                        device=device).reshape(layer.shape)
