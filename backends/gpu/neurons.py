"""Neuron updates over a time chunk (``docs/semantics.md``, "Neuron model"), vectorized over batch and neurons.

The loop runs over the chunk's steps only; each step is a handful of in-place tensor ops on
``[B, *shape]``. Hidden neurons (non-leaky unless ``decay`` is set):

    v <- decay * v + I(t);  s = [v >= theta];  v <- v - theta * s   (or v <- 0 for reset "zero")

With ``fixed_point`` (spinnaker profile) v is rounded to S16.15 after the update, before the test.

QFFS neurons additionally cap the net spike count at ``spike_cap`` and, with ``negative_spikes``,
emit -1 when the net count is positive and v < 0 (v gets theta back).
"""

from __future__ import annotations

import torch

from neurodeploy.backends.gpu.compiled import Layer
from neurodeploy.targets.spinnaker import round_s1615


def integrate_and_fire(
    layer: Layer,
    v: torch.Tensor,
    dynamic: torch.Tensor | None,
    constant: torch.Tensor | None,
    steps: int,
    net_count: torch.Tensor | None = None,
) -> torch.Tensor:
    """Advances ``v`` (``[B, *shape]``, in place) by ``steps`` steps and returns the spikes
    ``[steps, B, *shape]`` (values 0/1, or -1/0/1 for negative spikes).

    dynamic: per-step input current ``[steps, B, *shape]`` or None.
    constant: current added every step (bias + static input), broadcastable to ``v``, or None.
    net_count: QFFS net spike count per neuron (``[B, *shape]``, updated in place).
    """
    spikes = torch.empty((steps, *v.shape), dtype=v.dtype, device=v.device)
    theta = layer.threshold
    unit = isinstance(theta, float) and theta == 1.0
    qffs = layer.spike_cap is not None or layer.negative_spikes
    if dynamic is not None and constant is not None:
        dynamic = dynamic.add_(constant)  # one pass over the chunk (our own buffer) instead of one add per step
        constant = None
    for k in range(steps):
        if layer.decay is not None:
            v.mul_(layer.decay)
        if dynamic is not None:
            v.add_(dynamic[k])
        if constant is not None:
            v.add_(constant)
        if layer.fixed_point:
            round_s1615(v)
        s = spikes[k]
        torch.ge(v, theta, out=s)  # written straight into the float spike tensor (no bool round trip)
        if qffs:
            _qffs_step(layer, v, s, net_count)
        elif layer.reset == "zero":
            v.addcmul_(v, s, value=-1.0)
        elif unit:
            v.sub_(s)
        elif isinstance(theta, float):
            v.sub_(s, alpha=theta)
        else:
            v.addcmul_(s, theta, value=-1.0)
    return spikes


def _qffs_step(layer: Layer, v: torch.Tensor, s: torch.Tensor, count: torch.Tensor) -> None:
    """``s`` holds [v >= theta] on entry and the QFFS spikes (-1, 0, 1) on exit."""
    if layer.spike_cap is not None:
        s.mul_(count < layer.spike_cap)
    if layer.negative_spikes:
        s.sub_(((v < 0) & (count > 0)).to(s.dtype))
    count.add_(s)
    if layer.reset == "zero":
        v.masked_fill_(s != 0, 0.0)
    else:
        v.sub_(s * layer.threshold)
