"""Lowers an IR network to tensors on one device: the layers the engine steps through."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from neurodeploy.backends.gpu import binary_ops, fused
from neurodeploy.ir.connectivity import fan_maps
from neurodeploy.ir.network import Network
from neurodeploy.ir.population import Population, initial_membrane, per_neuron
from neurodeploy.ir.torch_ops import TensorFn, compile_chain


@dataclass
class Incoming:
    """One projection into a layer: ``fn`` maps source spikes ``[n, *src_shape]`` to current; with
    separate receptors (spinnaker profile) ``fn`` gives the excitatory and ``fn_inh`` the inhibitory
    current, both as magnitudes."""

    source: int
    fn: TensorFn
    fn_inh: TensorFn | None = None
    delay: int = 0  # the projection's own delay (steps); the engine applies max(delay, the profile's minimum)
    #: the same projection on the source's raw 0/1 spikes (its amplitude folded in) through int8 kernels
    #: (``binary_ops``), or None
    binary_fn: TensorFn | None = None


@dataclass
class Layer:
    """A population ready to simulate (index 0 is the input population)."""

    name: str
    role: str
    shape: tuple[int, ...]
    incoming: list[Incoming] = field(default_factory=list)
    bias: torch.Tensor | None = None          # broadcastable to [B, *shape]
    threshold: torch.Tensor | float = 1.0     # broadcastable to [B, *shape]
    amplitude: torch.Tensor | None = None     # spike amplitude downstream; None means 1
    v_init: torch.Tensor | float = 0.0        # broadcastable to [B, *shape]
    reset: str = "subtract"
    decay: torch.Tensor | float | None = None  # per-step membrane decay beta, None = non-leaky
    leak_drive: torch.Tensor | float | None = None  # (1 - beta) v_leak added every step, None when 0
    syn_decay: torch.Tensor | float | None = None  # per-step synaptic current decay, None = no current
    v_reset: torch.Tensor | float = 0.0       # membrane after a hard reset ("zero")
    reset_next_step: bool = False             # subtract theta in the step after a spike (reset_timing)
    spike_cap: int | None = None
    negative_spikes: bool = False
    spiking: bool = True
    count_matrix: torch.Tensor | None = None  # [size, 2]: columns (1, fan-out) -> spikes, events
    fixed_point: bool = False                 # round the membrane to S16.15 after every update
    saturation: tuple[float, float] | None = None  # per-step limit of excitatory, inhibitory input
    channels_last: bool = False               # state [B, C, H, W] kept in channels-last memory (int8 kernels' layout)
    bias_in_projection: bool = False          # the bias is added by the (single, int8) incoming projection's kernel
    #: the fused scan's constants (``fused``) when the layer's spikes are read only by int8 projections, else None
    fused_neuron: fused.FusedNeuron | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _channel_tensor(value, shape: tuple[int, ...], device, dtype) -> torch.Tensor | float:
    """A scalar stays a float; a per-channel vector becomes ``[C, 1, 1]``; per neuron stays as is."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 0:
        return float(array)
    tensor = torch.as_tensor(array, device=device, dtype=dtype)
    if array.shape == shape[:1] and len(shape) > 1:
        tensor = tensor.reshape((-1,) + (1,) * (len(shape) - 1))
    return tensor


def _layer(pop: Population, device, dtype) -> Layer:
    layer = Layer(pop.name, pop.role, pop.shape)
    if pop.role == "input":
        return layer
    neuron = pop.neuron
    _set_threshold_and_v_init(layer, pop, device, dtype)
    layer.reset = neuron.reset
    if neuron.leak_tau is not None:
        layer.decay = _decay(neuron.leak_tau, pop.shape, device, dtype)
        if np.any(np.asarray(neuron.v_leak) != 0):
            beta = np.exp(-1.0 / per_neuron(neuron.leak_tau, pop.shape))
            layer.leak_drive = _compact((1.0 - beta) * per_neuron(neuron.v_leak, pop.shape), pop.shape, device, dtype)
    if neuron.tau_syn is not None:
        layer.syn_decay = _decay(neuron.tau_syn, pop.shape, device, dtype)
    layer.v_reset = _compact(per_neuron(neuron.v_reset, pop.shape), pop.shape, device, dtype)
    layer.reset_next_step = neuron.reset_timing == "next_step"
    layer.spike_cap = neuron.spike_cap
    layer.negative_spikes = neuron.negative_spikes
    layer.spiking = pop.role == "hidden" or neuron.readout == "spikes"
    if pop.bias is not None:
        layer.bias = _channel_tensor(pop.bias, pop.shape, device, dtype)
        if isinstance(layer.bias, float):
            layer.bias = torch.tensor(layer.bias, device=device, dtype=dtype)
    return layer


def _decay(tau, shape: tuple[int, ...], device, dtype) -> torch.Tensor | float:
    """exp(-1 / tau) per step: a Python float for a scalar tau (float64, as the engine always took it), else a
    tensor broadcastable to ``shape``."""
    if np.ndim(tau) == 0:
        return math.exp(-1.0 / float(tau))
    return _channel_tensor(np.exp(-1.0 / np.asarray(tau, np.float64)), shape, device, dtype)


def _compact(values: np.ndarray, shape: tuple[int, ...], device, dtype) -> torch.Tensor | float:
    """Per-neuron ``values`` as one float when they are all equal, else a tensor of ``shape``."""
    if np.all(values == values.flat[0]):
        return float(values.flat[0])
    return torch.as_tensor(values, device=device, dtype=dtype)


def _set_threshold_and_v_init(layer: Layer, pop: Population, device, dtype) -> None:
    """Threshold, spike amplitude (= threshold) and initial membrane of ``pop`` onto ``layer``."""
    layer.threshold = _channel_tensor(pop.neuron.threshold, pop.shape, device, dtype)
    layer.amplitude = None
    if not (isinstance(layer.threshold, float) and layer.threshold == 1.0):
        layer.amplitude = layer.threshold if torch.is_tensor(layer.threshold) else torch.tensor(
            layer.threshold, device=device, dtype=dtype)
    v_init = initial_membrane(pop.neuron, pop.shape)
    layer.v_init = float(v_init.flat[0]) if np.all(v_init == v_init.flat[0]) else torch.as_tensor(
        v_init, device=device, dtype=dtype)


@dataclass
class CompiledNetwork:
    layers: list[Layer]
    #: steps a spike needs from the input to the output (0 for the zero-delay ideal profile)
    pipeline_delay: int
    n_synapses: int
    output_index: int


def compile_network(network: Network, device: torch.device, dtype: torch.dtype = torch.float32,
                    op_dtype: torch.dtype | None = None, delay: int = 0, int8_parts: int | None = None
                    ) -> CompiledNetwork:
    """Builds device tensors for every population in topological order.

    op_dtype: dtype of projection weights (e.g. bfloat16); spikes are cast to it, currents back to
        ``dtype``. delay: steps each projection delays spikes (0 ideal, 1 PyNN machines).
    int8_parts: when set (CPU with oneDNN, float32), projections from populations with 0/1 spikes also get
        their int8 lowering with each weight split into that many parts (:mod:`binary_ops`), and
        populations of shape ``(C, H, W)`` read only through int8 projections keep their state channels-last,
        the int8 kernels' layout.
    """
    network.validate()
    order = network.topological_order()
    index = {name: i for i, name in enumerate(order)}
    layers = [_layer(network.populations[name], device, dtype) for name in order]
    fan_out, _ = fan_maps(network)
    fan_in = {name: sum(p.target == name for p in network.projections) for name in order}
    for projection in network.projections:
        fn = compile_chain(projection.ops, device=device, dtype=op_dtype or dtype)
        if op_dtype is not None and op_dtype != dtype:
            fn = _cast_wrapper(fn, op_dtype, dtype)
        incoming = Incoming(index[projection.source], fn, delay=projection.delay)
        target = layers[index[projection.target]]
        if int8_parts is not None:
            bias = _kernel_bias(target) if fan_in[projection.target] == 1 else None
            incoming.binary_fn = _binary_fn(layers[incoming.source], projection.ops, int8_parts, bias)
            target.bias_in_projection = incoming.binary_fn is not None and bias is not None
        target.incoming.append(incoming)
    if int8_parts is not None:
        readers: dict[int, list[Incoming]] = {}
        for layer in layers:
            for incoming in layer.incoming:
                readers.setdefault(incoming.source, []).append(incoming)
        for i, layer in enumerate(layers):
            # channels-last where every reader takes the int8 path (float32 convolutions of small maps are
            # slower on channels-last input)
            layer.channels_last = (layer.role != "input" and len(layer.shape) == 3 and bool(readers.get(i))
                                   and all(incoming.binary_fn is not None for incoming in readers[i]))
    n_synapses = 0
    for layer in layers:
        fanout = fan_out[layer.name].reshape(-1)
        n_synapses += int(fanout.sum())
        matrix = np.stack([np.ones_like(fanout), fanout], axis=1)
        layer.count_matrix = torch.as_tensor(matrix, device=device, dtype=dtype)
    if int8_parts is not None and dtype == torch.float32 and fused.kernel() is not None:
        for i, layer in enumerate(layers):
            if readers.get(i) and all(incoming.binary_fn is not None for incoming in readers[i]):
                layer.fused_neuron = _fused_neuron(layer, fan_out[layer.name])
    output = network.output.name
    return CompiledNetwork(layers, network.pipeline_delay(delay), n_synapses, index[output])


def _binary_fn(source: Layer, ops, parts: int, bias: torch.Tensor | None = None) -> TensorFn | None:
    """The int8 lowering of a projection from ``source`` when its spikes are 0/1 (a hidden spiking population
    without negative spikes; an input's spikes are signed or analog), else None; ``bias``: added by its
    first kernel (:func:`_kernel_bias`)."""
    if source.role == "input" or source.negative_spikes or not source.spiking:
        return None
    return binary_ops.binary_projection(ops, source.shape, source.amplitude, parts, bias=bias)


def _fused_neuron(layer: Layer, fan_out: np.ndarray) -> fused.FusedNeuron | None:
    """The fused scan's constants of a hidden integrate-and-fire layer without optional terms (the neuron of
    converted networks: subtractive reset or reset to 0), else None."""
    plain = (layer.role == "hidden" and layer.spiking and layer.decay is None and layer.leak_drive is None
             and layer.syn_decay is None and not layer.reset_next_step and not layer.fixed_point
             and layer.spike_cap is None and not layer.negative_spikes)
    zero = layer.reset == "zero"
    if not plain or (zero and not (isinstance(layer.v_reset, float) and layer.v_reset == 0.0)):
        return None
    if (not np.array_equal(fan_out, np.round(fan_out)) or fan_out.min(initial=0) < 0
            or fan_out.max(initial=0) >= 2**31):
        return None
    theta = torch.as_tensor(layer.threshold, dtype=torch.float32).expand(layer.shape).cpu()
    fan = torch.as_tensor(np.asarray(fan_out, dtype=np.int64).reshape(layer.shape)).to(torch.int32)
    theta, fan = (fused.memory_order(t[None], 1, layer.shape, layer.channels_last)[0] for t in (theta, fan))
    return fused.FusedNeuron(theta.contiguous(), fan.contiguous(), zero, bool(fan_out.max(initial=0) >= 2**15))


def _kernel_bias(layer: Layer) -> torch.Tensor | None:
    """The bias of a layer fed by one projection as float32 ``[C_out]`` for its int8 kernel to add (one pass less
    over the current every step), or None when it has none or it is not one value per channel."""
    if layer.bias is None:
        return None
    bias = layer.bias.reshape(-1)
    if bias.numel() not in (1, layer.shape[0]) or (bias.numel() > 1 and layer.bias.numel() != layer.shape[0]):
        return None
    return bias.expand(layer.shape[0]).float().cpu().contiguous()


def update_thresholds(compiled: CompiledNetwork, network: Network, device: torch.device,
                      dtype: torch.dtype = torch.float32) -> CompiledNetwork:
    """Takes the thresholds and initial membranes of ``network``'s populations into ``compiled`` in
    place, keeping its compiled projections: for networks that differ from the compiled one only in
    those neuron parameters (the scale optimizer evaluates thousands of such variants)."""
    for layer in compiled.layers:
        if layer.role != "input":
            _set_threshold_and_v_init(layer, network.populations[layer.name], device, dtype)
        for incoming in layer.incoming:
            incoming.binary_fn = None  # its weights hold the old amplitudes: the float path takes over
        layer.bias_in_projection = False
        layer.fused_neuron = None  # its readers now take float spikes
    return compiled


def _cast_wrapper(fn: TensorFn, op_dtype: torch.dtype, dtype: torch.dtype) -> TensorFn:
    return lambda x: fn(x.to(op_dtype)).to(dtype)
