"""IR -> plain arrays a PyNN script can build from (``docs/semantics.md``, "PyNN lowering").

Every projection's op chain (pooling, flatten, dense or convolution) is unrolled into an explicit
list of synapses (pre index, post index, weight) with the source's spike amplitude (its threshold)
folded into the weights. Projections from the input population are not lowered to synapses: with the
analog encoding their current is the same every step, so it becomes a per-item constant "drive"
current of the target neurons (current injection), computed here with the IR's own op chain.
Populations are indexed in C order of their shape, as ``reshape(-1)`` does.

Trained-SNN dynamics (``docs/semantics.md``, "Neuron model"): each population carries its per-step
factors (membrane decay beta, the leak drive (1 - beta) v_leak, the synaptic decay, the hard-reset value, the
delayed reset) and each synapse list its projection's delay in steps; a cell profile that cannot compute
some of them says so through ``carries`` and the lowering refuses the network in one line.

Local-only variant (``lower_network(..., local_only=True)``, sPyNNaker's ConvolutionConnector and
PoolDenseConnector, :func:`local_connector_kinds` decides): a (C, H, W) population that a local-only
projection leaves or enters is split into C populations of H x W (one per channel, raster order = C order
of (H, W)); a projection ``[AvgPool2d(k)] + Conv2d`` (stride 1, odd square kernel) or a plain pooling
between such populations becomes a :class:`ConvProjection` (one kernel per channel pair), and
``[AvgPool2d(k)] + Flatten + Dense`` into a 1-D population a :class:`PoolDenseProjection` (one weight
array per source channel); everything else stays a synapse list (FromList). All projections into one
population use one connector kind (sPyNNaker's rule for local-only populations), else all are synapse
lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from neurodeploy.errors import BackendError
from neurodeploy.ir.connectivity import fan_maps, projection_fan
from neurodeploy.ir.network import Network, Projection
from neurodeploy.ir.ops import AvgPool2d, Conv2d, Dense, Flatten, Identity
from neurodeploy.ir.population import Population, initial_membrane, per_neuron
from neurodeploy.ir.torch_ops import compile_chain
from neurodeploy.passes.reset_compensation import v_reset
from neurodeploy.passes.synapse_matrix import projection_matrix, spike_amplitude

#: most neurons on one core of a channel population (a block of rows x columns that divides the map): local-
#: only cores hold no synaptic matrices, so they take the ordinary maximum
LOCAL_NEURONS_PER_CORE = 256
#: most neurons on one core of a spike source (more than 100 spikes per tick from one core are a danger)
SOURCE_NEURONS_PER_CORE = 100
#: bytes of int16 pool-dense weights one core may hold in DTCM (64 KiB in all; sPyNNaker does not check this
#: when mapping): a pool-dense population gets at most this / (2 * pooled inputs) neurons per core
POOL_DENSE_WEIGHT_BYTES = 32 * 1024


@dataclass
class SynapseList:
    """Synapses of one projection: ``weight[k]`` from source neuron ``pre[k]`` to target ``post[k]``."""

    source: str
    target: str
    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    delay: int = 0  # the projection's delay in steps (machines apply at least one)

    def __len__(self) -> int:
        return int(self.pre.size)


@dataclass
class LoweredPopulation:
    """Per-neuron parameters (flat arrays of ``size``) of one non-input population."""

    name: str
    role: str
    size: int
    threshold: np.ndarray
    bias: np.ndarray
    v_init: np.ndarray
    reset_zero: bool
    spiking: bool
    fan_out: np.ndarray  # synapses leaving each neuron (counts synaptic events)
    v_reset: np.ndarray  # reset value of a hard-reset cell: the IR's v_reset for reset "zero", else the
    # hard-reset compensation's (``passes.reset_compensation``; zeros without it)
    decay: np.ndarray | None = None       # per-step membrane decay beta, None = non-leaky
    leak_drive: np.ndarray | None = None  # (1 - beta) v_leak added every step, None = 0
    syn_decay: np.ndarray | None = None   # per-step synaptic current decay, None = no synaptic current
    reset_next_step: bool = False         # theta subtracted in the step after a spike
    drive_delay: int = 1                  # steps after which the analog input's current arrives (>= 1)


@dataclass
class ChannelGrid:
    """A (C, H, W) population as C populations of H x W; ``block`` (rows, columns) per core divides (H, W)."""

    channels: int
    height: int
    width: int
    block: tuple[int, int]

    @property
    def channel_size(self) -> int:
        return self.height * self.width


@dataclass
class ConvProjection:
    """A ConvolutionConnector per channel pair: ``kernels[(c_in, c_out)]`` is the signed K x K kernel in
    sPyNNaker's orientation (the IR's cross-correlation kernel flipped in both axes; the source's spike
    amplitude folded in; the pooling area not divided out, the connector does that), zero padding
    ``padding`` on both axes, average pooling ``pool`` x ``pool`` (stride ``pool``) of the source first."""

    source: str
    target: str
    kernels: dict[tuple[int, int], np.ndarray]
    padding: int
    pool: int | None
    n_synapses: int


@dataclass
class PoolDenseProjection:
    """A PoolDenseConnector per source channel: ``weights[c]`` ``[W', H', n_target]`` (sPyNNaker's layout:
    the pooled source map's column, row, then the target neuron; source amplitude folded in, pooling area
    not divided out) after ``pool`` x ``pool`` average pooling."""

    source: str
    target: str
    weights: list[np.ndarray]
    pool: int | None
    n_synapses: int


@dataclass
class LoweredNetwork:
    populations: list[LoweredPopulation]
    synapses: list[SynapseList]
    #: (target population, op chain) of the projections from the input population
    input_projections: list[Projection] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()
    #: local-only variant: populations split per channel (the input included), local-only projections,
    #: neurons per core of pool-dense targets, synapses leaving each input neuron
    grids: dict[str, ChannelGrid] = field(default_factory=dict)
    local: list[ConvProjection | PoolDenseProjection] = field(default_factory=list)
    neurons_per_core: dict[str, int] = field(default_factory=dict)
    input_fan_out: np.ndarray | None = None

    def drive(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per-item constant input current of each first-layer population: ``x [B, *input_shape]`` ->
        ``{population: [B, size]}``."""
        out: dict[str, np.ndarray] = {}
        with torch.no_grad():
            for projection in self.input_projections:
                current = compile_chain(projection.ops, dtype=torch.float64)(torch.as_tensor(x, dtype=torch.float64))
                flat = current.reshape(x.shape[0], -1).numpy()
                out[projection.target] = out.get(projection.target, 0.0) + flat
        return out


def projection_synapses(network: Network, projection: Projection) -> SynapseList:
    """Unrolls the op chain into the non-zero entries of its matrix; weights are multiplied by the
    source's spike amplitude."""
    matrix = projection_matrix(network, projection).tocoo()
    return SynapseList(projection.source, projection.target, matrix.col.astype(np.int64),
                       matrix.row.astype(np.int64), matrix.data, int(projection.delay))


def _lowered_population(network: Network, pop: Population, fan_out: np.ndarray) -> LoweredPopulation:
    """One non-input population's per-neuron parameters (flat, C order)."""
    neuron, shape = pop.neuron, pop.shape

    def flat(value) -> np.ndarray:
        return per_neuron(value, shape).reshape(-1)

    bias = np.zeros(pop.size) if pop.bias is None else flat(pop.bias)
    hard_reset = flat(neuron.v_reset) if neuron.reset == "zero" else v_reset(network, pop.name)
    spiking = pop.role == "hidden" or neuron.readout == "spikes"
    lowered = LoweredPopulation(pop.name, pop.role, pop.size, flat(neuron.threshold), bias,
                                initial_membrane(neuron, shape).reshape(-1).astype(np.float64), neuron.reset == "zero",
                                spiking, fan_out.reshape(-1).astype(np.float64), hard_reset,
                                reset_next_step=neuron.reset_timing == "next_step")
    if neuron.leak_tau is not None:
        lowered.decay = np.exp(-1.0 / flat(neuron.leak_tau))
        if np.any(np.asarray(neuron.v_leak) != 0):
            lowered.leak_drive = (1.0 - lowered.decay) * flat(neuron.v_leak)
    if neuron.tau_syn is not None:
        lowered.syn_decay = np.exp(-1.0 / flat(neuron.tau_syn))
    return lowered


def structure(network: Network, lowered: LoweredNetwork) -> dict:
    """What a PyNN backend's session reports of the network it built: the pipeline delay of one-step
    projections, the populations in topological order (name, role, size), and the lowered neurons and
    synapses."""
    return {"pipeline_delay": network.pipeline_delay(1),
            "populations": [{"name": n, "role": network.populations[n].role, "size": network.populations[n].size}
                            for n in network.topological_order()],
            "n_neurons": sum(p.size for p in lowered.populations),
            "n_synapses": int(sum(len(s) for s in lowered.synapses))}


def lower_network(network: Network, encoding: str = "analog", input_as_synapses: bool = False,
                  local_only: bool = False, carries: tuple[str, ...] | frozenset[str] = (),
                  cell: str = "the PyNN cell") -> LoweredNetwork:
    """Lowers a validated IR network. Raises BackendError for what PyNN machines cannot express
    here: spike caps (``--conversion qffs``) and negative spikes, spiking encodings, and what of
    ``neurodeploy.ir.network.BEYOND_IF`` the ``cell`` does not carry (``carries``), in one line.
    ``input_as_synapses`` unrolls the input projections into synapses from a spike-source
    population (for machines that receive input as spikes) instead of the per-item drive current.
    ``local_only`` (with ``input_as_synapses``): the local-only variant of the module docstring."""
    network.validate()
    missing = network.beyond(carries)
    if missing:
        where, what = missing[0]
        raise BackendError(f"{where} uses {', '.join(what)}, which {cell} does not implement; use the gpu backend")
    kinds = local_connector_kinds(network) if local_only else [None] * len(network.projections)
    if encoding != "analog":
        raise BackendError(f"the PyNN backends take the analog encoding (current injection), not {encoding!r}")
    populations = []
    fan_out, _ = fan_maps(network)
    for name in network.topological_order():
        pop = network.populations[name]
        if pop.role == "input":
            continue
        neuron = pop.neuron
        if neuron.spike_cap is not None:
            raise BackendError(f"population {name!r} has a spike cap (--conversion qffs), which the exact PyNN cell "
                               "does not implement; use --conversion qcfs or the gpu backend")
        if neuron.negative_spikes:
            raise BackendError(f"population {name!r} has negative spikes (--negative-spikes; convert(..., "
                               "negative_spikes=True)), which the exact PyNN cell does not implement; leave them "
                               "out or use the gpu backend")
        populations.append(_lowered_population(network, pop, fan_out[name]))
    synapses, inputs = [], []
    for projection, kind in zip(network.projections, kinds, strict=True):
        if kind is not None:
            continue
        if network.populations[projection.source].role == "input" and not (input_as_synapses or local_only):
            inputs.append(projection)
        else:
            synapses.append(projection_synapses(network, projection))
    for pop in populations:
        delays = {max(p.delay, 1) for p in inputs if p.target == pop.name}
        if len(delays) > 1:
            raise BackendError(f"population {pop.name!r} receives the analog input through projections of different "
                               f"delays {sorted(delays)}, which one drive current cannot carry; use the gpu backend")
        pop.drive_delay = delays.pop() if delays else 1
    lowered = LoweredNetwork(populations, synapses, inputs, network.input.shape)
    if local_only:
        _add_local(lowered, network, kinds, fan_out)
    return lowered

def _channel_uniform(pop: Population) -> bool:
    """A (C, H, W) population whose spike amplitude (threshold) is the same within each channel: its
    projections fold into per-channel-pair kernels."""
    if len(pop.shape) != 3:
        return False
    amplitude = spike_amplitude(pop)
    if amplitude is None:
        return True
    per_channel = amplitude.reshape(pop.shape[0], -1)
    return bool((per_channel == per_channel[:, :1]).all())


def _local_spec(projection: Projection, source_shape: tuple[int, ...]) -> tuple[str, int | None, object] | None:
    """(kind, pool, weighted op) when the op chain is one a local-only connector computes exactly, else None:
    ``conv``: [AvgPool2d(k, stride k)] + Conv2d with stride 1, dilation 1, one group, an odd square kernel
    and equal padding of at most half the kernel, or only pooling / identity (a 1 x 1 kernel per channel);
    ``pool_dense``: [AvgPool2d(k, stride k)] + Flatten + Dense."""
    ops = [op for op in projection.ops if not isinstance(op, Identity)]
    pool = None
    if ops and isinstance(ops[0], AvgPool2d):
        first = ops.pop(0)
        k = first.kernel[0]
        if (first.kernel != (k, k) or first.stride != (k, k) or first.padding != (0, 0) or len(source_shape) != 3
                or source_shape[1] % k or source_shape[2] % k):
            return None
        pool = k
    if not ops:
        return ("conv", pool, None) if len(source_shape) == 3 else None
    if len(ops) == 1 and isinstance(ops[0], Conv2d):
        conv = ops[0]
        _, _, kh, kw = conv.weight.shape
        if (conv.groups == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1) and kh == kw and kh % 2 == 1
                and conv.padding[0] == conv.padding[1] <= kh // 2):
            return "conv", pool, conv
        return None
    if len(ops) == 2 and isinstance(ops[0], Flatten) and isinstance(ops[1], Dense) and len(source_shape) == 3:
        return "pool_dense", pool, ops[1]
    return None


def _pooled_size(shape: tuple[int, ...], pool: int | None) -> int:
    k = pool or 1
    return shape[1] // k * (shape[2] // k)


def local_connector_kinds(network: Network) -> list[str | None]:
    """For every projection of ``network`` (in order): "conv" (ConvolutionConnector), "pool_dense"
    (PoolDenseConnector) or None (FromList). A local-only projection needs a (C, H, W) source with the same
    threshold within each channel (its spike amplitude folds into the kernels; the input's is 1), a
    (C, H, W) target for "conv" and a 1-D one for "pool_dense" whose weights fit
    ``POOL_DENSE_WEIGHT_BYTES`` at one neuron per core; every projection into a target must be of the
    same kind."""
    populations = network.populations
    kinds: list[str | None] = []
    for projection in network.projections:
        source, target = populations[projection.source], populations[projection.target]
        spec = _local_spec(projection, source.shape)
        kind = None
        if spec is not None and _channel_uniform(source):
            if spec[0] == "conv" and len(target.shape) == 3:
                kind = "conv"
            elif spec[0] == "pool_dense" and len(target.shape) == 1:
                kind = "pool_dense"
        kinds.append(kind)
    by_target: dict[str, set] = {}
    pooled_inputs: dict[str, int] = {}
    for projection, kind in zip(network.projections, kinds, strict=True):
        by_target.setdefault(projection.target, set()).add(kind)
        if kind == "pool_dense":
            spec = _local_spec(projection, populations[projection.source].shape)
            pooled_inputs[projection.target] = pooled_inputs.get(projection.target, 0) + populations[
                projection.source].shape[0] * _pooled_size(populations[projection.source].shape, spec[1])
    too_big = {name for name, n in pooled_inputs.items() if 2 * n > POOL_DENSE_WEIGHT_BYTES}
    return [kind if len(by_target[p.target]) == 1 and p.target not in too_big else None
            for p, kind in zip(network.projections, kinds, strict=True)]


def grid_block(height: int, width: int, limit: int) -> tuple[int, int]:
    """Rows x columns per core: divisors of (height, width) with the largest area up to ``limit``, the
    squarest of those (the least halo for kernels)."""
    rows = [d for d in range(1, height + 1) if height % d == 0]
    cols = [d for d in range(1, width + 1) if width % d == 0]
    return max(((r, c) for r in rows for c in cols if r * c <= limit), key=lambda b: (b[0] * b[1], -abs(b[0] - b[1])))


def pool_dense_neurons_per_core(pooled_inputs: int, limit: int) -> int:
    """Neurons per core of a pool-dense target whose neurons read ``pooled_inputs`` int16 weights each."""
    return max(1, min(limit, POOL_DENSE_WEIGHT_BYTES // (2 * pooled_inputs)))


def _conv_kernels(conv: Conv2d | None, source: Population, target: Population) -> dict[tuple[int, int], np.ndarray]:
    """Per channel pair, the kernel in sPyNNaker's orientation with the source amplitude folded in."""
    amplitude = spike_amplitude(source)
    per_channel = np.ones(source.shape[0]) if amplitude is None else amplitude.reshape(source.shape[0], -1)[:, 0]
    if conv is None:  # pooling or identity: channel c to channel c, weight 1
        return {(c, c): np.full((1, 1), per_channel[c]) for c in range(source.shape[0])}
    weight = np.asarray(conv.weight, np.float64)[:, :, ::-1, ::-1]
    return {(ci, co): weight[co, ci] * per_channel[ci] for co in range(target.shape[0]) for ci in range(source.shape[0])
            if np.any(weight[co, ci])}


def _pool_dense_weights(dense: Dense, source: Population, pool: int | None) -> list[np.ndarray]:
    """Per source channel, the dense weights as ``[W', H', n_target]`` with the source amplitude folded in."""
    c, h, w = source.shape
    k = pool or 1
    amplitude = spike_amplitude(source)
    per_channel = np.ones(c) if amplitude is None else amplitude.reshape(c, -1)[:, 0]
    weight = np.asarray(dense.weight, np.float64).reshape(-1, c, h // k, w // k)
    return [weight[:, ci].transpose(2, 1, 0) * per_channel[ci] for ci in range(c)]


def _add_local(lowered: LoweredNetwork, network: Network, kinds: list[str | None], fan_out: dict) -> None:
    """Fills the local-only fields of ``lowered`` (the local-only variant of the module docstring)."""
    populations = network.populations
    touched = {name for projection, kind in zip(network.projections, kinds, strict=True) if kind
               for name in (projection.source, projection.target) if len(populations[name].shape) == 3}
    for name in sorted(touched):
        pop = populations[name]
        limit = SOURCE_NEURONS_PER_CORE if pop.role == "input" else LOCAL_NEURONS_PER_CORE
        lowered.grids[name] = ChannelGrid(*pop.shape, grid_block(*pop.shape[1:], limit))
    pooled_inputs: dict[str, int] = {}
    for projection, kind in zip(network.projections, kinds, strict=True):
        if kind is None:
            continue
        source, target = populations[projection.source], populations[projection.target]
        _, pool, op = _local_spec(projection, source.shape)
        n_synapses = int(projection_fan(projection, source.shape)[1].sum())
        if kind == "conv":
            kernels = _conv_kernels(op, source, target)
            lowered.local.append(ConvProjection(projection.source, projection.target, kernels,
                                                0 if op is None else op.padding[0], pool, n_synapses))
        else:
            weights = _pool_dense_weights(op, source, pool)
            lowered.local.append(PoolDenseProjection(projection.source, projection.target, weights, pool, n_synapses))
            pooled_inputs[projection.target] = (pooled_inputs.get(projection.target, 0)
                                                + source.shape[0] * _pooled_size(source.shape, pool))
    lowered.neurons_per_core = {name: pool_dense_neurons_per_core(n, LOCAL_NEURONS_PER_CORE)
                                for name, n in pooled_inputs.items()}
    lowered.input_fan_out = fan_out[network.input.name].reshape(-1).astype(np.float64)
