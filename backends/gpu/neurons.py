"""Neuron updates over a time chunk (``docs/semantics.md``, "Neuron model"), vectorized over batch and neurons.

The loop runs over the chunk's steps only; each step is a handful of in-place tensor ops on
``[B, *shape]``. Hidden neurons (non-leaky unless ``decay`` is set), with x(t) the step's input:

    i <- syn_decay * i + x(t)   (only with a synaptic current; else i = x(t))
    v <- decay * v + leak_drive + i;  s = [v >= theta];  v <- v - theta * s   (or v <- v_reset, reset "zero")

With ``reset_next_step`` the subtraction of theta * s happens in the next step, after the leak, instead.
A neuron of converted networks has none of the optional terms and takes exactly the ops it always took.

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
    syn: torch.Tensor | None = None,
    previous: torch.Tensor | None = None,
) -> torch.Tensor:
    """Advances ``v`` (``[B, *shape]``, in place) by ``steps`` steps and returns the spikes
    ``[steps, B, *shape]`` (values 0/1, or -1/0/1 for negative spikes).

    dynamic: per-step input current ``[steps, B, *shape]`` or None.
    constant: current added every step (bias + static input), broadcastable to ``v``, or None.
    net_count: QFFS net spike count per neuron (``[B, *shape]``, updated in place).
    syn: the synaptic current ``[B, *shape]`` of a layer with ``syn_decay`` (updated in place).
    previous: the spikes of the step before (``[B, *shape]``) of a layer with ``reset_next_step``
        (updated in place to the last step's spikes).
    """
    spikes = _spike_buffer(v, steps)
    theta = layer.threshold
    unit = isinstance(theta, float) and theta == 1.0
    qffs = layer.spike_cap is not None or layer.negative_spikes
    hard_to_zero = isinstance(layer.v_reset, float) and layer.v_reset == 0.0
    if dynamic is not None and constant is not None:
        dynamic = dynamic.add_(constant)  # one pass over the chunk (our own buffer) instead of one add per step
        constant = None
    for k in range(steps):
        if syn is not None:  # the step's input enters the synaptic current, which enters the membrane
            syn.mul_(layer.syn_decay)
            if dynamic is not None:
                syn.add_(dynamic[k])
            if constant is not None:
                syn.add_(constant)
        if layer.decay is not None:
            v.mul_(layer.decay)
        if layer.leak_drive is not None:
            v.add_(layer.leak_drive)
        if syn is not None:
            v.add_(syn)
        else:
            if dynamic is not None:
                v.add_(dynamic[k])
            if constant is not None:
                v.add_(constant)
        if previous is not None:  # the delayed reset of the step before
            v.sub_(previous if unit else previous * theta)
        if layer.fixed_point:
            round_s1615(v)
        s = spikes[k]
        torch.ge(v, theta, out=s)  # written straight into the float spike tensor (no bool round trip)
        if previous is not None:
            previous.copy_(s)
        elif qffs:
            _qffs_step(layer, v, s, net_count)
        elif layer.reset == "zero":
            if hard_to_zero:
                v.addcmul_(v, s, value=-1.0)
            else:
                _hard_reset(v, s > 0, layer.v_reset)
        elif unit:
            v.sub_(s)
        elif isinstance(theta, float):
            v.sub_(s, alpha=theta)
        else:
            v.addcmul_(s, theta, value=-1.0)
    return spikes


def _spike_buffer(v: torch.Tensor, steps: int) -> torch.Tensor:
    """An empty ``[steps, *v.shape]`` tensor whose every step has ``v``'s memory layout (channels-last for a
    channels-last ``v``: the spikes then need no reordering for int8 kernels)."""
    if v.ndim == 4 and not v.is_contiguous() and v.is_contiguous(memory_format=torch.channels_last):
        flat = torch.empty((steps * v.shape[0], *v.shape[1:]), dtype=v.dtype, device=v.device,
                           memory_format=torch.channels_last)
        return flat.view(steps, *v.shape)
    return torch.empty((steps, *v.shape), dtype=v.dtype, device=v.device)


def _qffs_step(layer: Layer, v: torch.Tensor, s: torch.Tensor, count: torch.Tensor) -> None:
    """``s`` holds [v >= theta] on entry and the QFFS spikes (-1, 0, 1) on exit."""
    if layer.spike_cap is not None:
        s.mul_(count < layer.spike_cap)
    if layer.negative_spikes:
        s.sub_(((v < 0) & (count > 0)).to(s.dtype))
    count.add_(s)
    if layer.reset == "zero":
        _hard_reset(v, s != 0, layer.v_reset)
    else:
        v.sub_(s * layer.threshold)


def _hard_reset(v: torch.Tensor, mask: torch.Tensor, value: torch.Tensor | float) -> None:
    """``v <- value`` where ``mask`` (a scalar or a tensor broadcastable to ``v``), in place."""
    if isinstance(value, float):
        v.masked_fill_(mask, value)
    else:
        torch.where(mask, value, v, out=v)
