"""Export: the IR to a ``nir.NIRGraph`` and to NIR's HDF5 file (docs/nir.md, "The mapping (export)")."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import AvgPool2d, Conv2d, Dense, Flatten, Identity, Op, Scale
from neurodeploy.ir.population import Population, initial_membrane, per_neuron
from neurodeploy.nir.vocabulary import (
    DEFAULT_DT,
    DIALECTS,
    NIR_FORMAT,
    NIR_FORMAT_VERSION,
    NIRError,
    _channel_form,
    _full,
    _Names,
    _nir,
    _SumPool2d,
    _ungroup,
)


def fold_network_thresholds(network: Network) -> Network:
    """An equivalent copy of ``network`` whose spiking populations have threshold 1: each membrane is
    divided by its threshold (incoming weights, bias and absolute initial membranes / theta) and the
    spike amplitude theta moves into the outgoing weights. For importers that take one threshold or
    unit spikes. Scalar and per-channel thresholds fold; a per-neuron threshold that varies over the
    spatial axes of a multi-dimensional population cannot (NIRError). Lossy in the last bits."""
    from neurodeploy.convert.fold import fold_scales  # convert -> ir only; no cycle at call time

    net = copy.deepcopy(network)
    theta: dict[str, np.ndarray] = {}
    for name, pop in net.populations.items():
        neuron = pop.neuron
        if pop.role == "input" or neuron is None:
            continue
        t = np.asarray(neuron.threshold, np.float64)
        if np.all(t == 1.0):
            continue
        spiking = pop.role == "hidden" or neuron.readout == "spikes"
        if not spiking:
            neuron.threshold = 1.0  # a membrane readout never compares with its threshold
            continue
        form = _channel_form(t if t.ndim == 0 else per_neuron(t, pop.shape), pop.shape)
        if form is None:
            raise NIRError(f"population {name!r}: per-neuron thresholds that vary inside a channel of a "
                           f"{pop.shape} population cannot be folded into the weights")
        theta[name] = form
        full = per_neuron(form, pop.shape)
        if not isinstance(neuron.v_init, str):
            v = np.asarray(neuron.v_init, np.float64)
            neuron.v_init = float(v / form) if v.ndim == 0 and form.ndim == 0 else (
                per_neuron(v, pop.shape) / full).astype(np.float32)
        neuron.threshold = 1.0
        if pop.bias is not None:
            bias = np.asarray(pop.bias, np.float64)
            divisor = form if form.ndim == 0 else form.reshape((-1,) + (1,) * (bias.ndim - 1))
            pop.bias = (bias / divisor).astype(np.float32)
    for projection in net.projections:
        ops = list(projection.ops)
        if projection.source in theta:
            ops.insert(0, Scale(theta[projection.source]))
        if projection.target in theta:
            ops.append(Scale(1.0 / theta[projection.target]))
        if len(ops) != len(projection.ops):
            projection.ops = fold_scales(ops, net.populations[projection.source].shape)
    return net.validate()


def _sinabs_chain(ops: list[Op], in_shape: tuple[int, ...]) -> list[Op]:
    """Average pools become sum pools with 1 / area folded into a weighted op of the chain."""
    from neurodeploy.convert.fold import fold_scales

    if not any(isinstance(op, AvgPool2d) for op in ops):
        return ops
    out: list[Op] = []
    for op in ops:
        if isinstance(op, AvgPool2d) and not isinstance(op, _SumPool2d):
            out += [_SumPool2d(op.kernel, op.stride, op.padding),
                    Scale(np.float32(1.0 / (op.kernel[0] * op.kernel[1])))]
        else:
            out.append(op)
    return fold_scales(out, in_shape)


@dataclass
class _Export:
    nir: object
    dt: float
    dialect: str
    delays: bool
    names: _Names = field(default_factory=_Names)
    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)


def _neuron_meta(pop: Population) -> dict:
    neuron = pop.neuron
    meta: dict = {"population": pop.name, "role": pop.role, "shape": np.asarray(pop.shape, np.int64)}
    if pop.metadata:
        meta["population_metadata"] = json.dumps(pop.metadata)
    if neuron is None:
        return meta
    threshold = neuron.threshold
    meta["threshold"] = float(threshold) if np.ndim(threshold) == 0 else np.asarray(threshold)
    meta["reset"] = neuron.reset
    v_init = neuron.v_init
    meta["v_init"] = v_init if isinstance(v_init, str) else (
        float(v_init) if np.ndim(v_init) == 0 else np.asarray(v_init))
    meta["v_init_seed"] = int(neuron.v_init_seed)
    values = initial_membrane(neuron, pop.shape)
    if np.any(values != 0):
        meta["v_init_values"] = values
    if neuron.leak_tau is not None:
        meta["leak_tau"] = _meta_number(neuron.leak_tau)
    for key in ("v_leak", "v_reset"):
        if np.any(np.asarray(getattr(neuron, key)) != 0):
            meta[key] = _meta_number(getattr(neuron, key))
    if neuron.tau_syn is not None:
        meta["tau_syn"] = _meta_number(neuron.tau_syn)
    if neuron.reset_timing != "immediate":
        meta["reset_timing"] = neuron.reset_timing
    if neuron.spike_cap is not None:
        meta["spike_cap"] = int(neuron.spike_cap)
    meta["negative_spikes"] = bool(neuron.negative_spikes)
    meta["readout"] = neuron.readout
    return meta


def _meta_number(value):
    """A scalar as a float, an array as a float64 array (metadata of docs/nir.md)."""
    return float(value) if np.ndim(value) == 0 else np.asarray(value, np.float64)


def _population_node(ex: _Export, pop: Population):
    """The NIR node of a population (None for a membrane readout in the sinabs dialect): IF / LIF / CubaLIF
    for a spiking population, I / LI / CubaLI for a membrane readout. Time constants are written as
    tau = steps * dt with the input gains r dt / tau = 1 and w_in dt / tau_syn = 1 (r = tau / dt, w_in =
    tau_syn / dt, as snnTorch writes them); a non-leaky current-based neuron has tau_mem = r = inf."""
    nir, neuron, shape = ex.nir, pop.neuron, pop.shape
    meta = _neuron_meta(pop)
    if pop.role == "input":
        return nir.Input(input_type=np.asarray(shape), metadata=meta)
    ones = np.ones(shape, np.float32)
    zeros = np.zeros(shape, np.float32)
    spiking = pop.role == "hidden" or neuron.readout == "spikes"
    leak, syn = neuron.leak_tau, neuron.tau_syn
    # NIR's LIF (tau dv/dt = v_leak - v + R I) with tau = leak_tau * dt and R = tau / dt: per step the
    # input enters with gain R dt / tau = 1; the sinabs dialect counts time in steps and leaves R = 1
    steps = None if leak is None else _full(leak, shape)
    tau = None if leak is None else (steps * ex.dt).astype(np.float32)
    r_leaky = None if leak is None else (ones if ex.dialect == "sinabs" else steps.astype(np.float32))
    v_leak = _full(neuron.v_leak, shape)
    v_reset = _full(neuron.v_reset, shape) if neuron.reset == "zero" else zeros
    if syn is not None:
        syn_steps = _full(syn, shape)
        tau_mem = np.full(shape, np.inf, np.float32) if leak is None else tau
        cuba = {"tau_mem": tau_mem, "tau_syn": (syn_steps * ex.dt).astype(np.float32),
                "r": np.full(shape, np.inf, np.float32) if leak is None else r_leaky,
                "v_leak": v_leak, "w_in": syn_steps.astype(np.float32), "metadata": meta}
        if spiking:
            return nir.CubaLIF(**cuba, v_threshold=_full(neuron.threshold, shape), v_reset=v_reset)
        return nir.CubaLI(**cuba)
    if spiking:
        theta = _full(neuron.threshold, shape)
        if leak is None:
            return nir.IF(r=ones, v_threshold=theta, v_reset=v_reset, metadata=meta)
        return nir.LIF(tau=tau, r=r_leaky, v_leak=v_leak, v_threshold=theta, v_reset=v_reset, metadata=meta)
    if ex.dialect == "sinabs":
        return None
    if leak is None:
        return nir.I(r=ones, metadata=meta)
    return nir.LI(tau=tau, r=r_leaky, v_leak=v_leak, metadata=meta)


def _op_node(ex: _Export, op: Op, in_shape: tuple[int, ...], meta: dict, bias: np.ndarray | None):
    nir = ex.nir
    if isinstance(op, Dense):
        if bias is not None or ex.dialect == "sinabs":
            b = np.zeros(op.weight.shape[0], op.weight.dtype) if bias is None else bias
            return nir.Affine(weight=op.weight, bias=b, metadata=meta)
        return nir.Linear(weight=op.weight, metadata=meta)
    if isinstance(op, Conv2d):
        b = np.zeros(op.weight.shape[0], op.weight.dtype) if bias is None else bias
        weight = op.weight
        if op.groups > 1:  # NIR 1.0.8 takes a Conv2d's input channels from weight.shape[1], ignoring groups
            weight = _ungroup(op.weight, op.groups)
            meta["groups"] = op.groups
        return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=weight, stride=op.stride, padding=op.padding,
                          dilation=op.dilation, groups=1, bias=b, metadata=meta)
    if isinstance(op, _SumPool2d):
        return nir.SumPool2d(kernel_size=np.asarray(op.kernel), stride=np.asarray(op.stride),
                             padding=np.asarray(op.padding), metadata=meta)
    if isinstance(op, AvgPool2d):
        return nir.AvgPool2d(kernel_size=np.asarray(op.kernel), stride=np.asarray(op.stride),
                             padding=np.asarray(op.padding), metadata=meta)
    if isinstance(op, Flatten):
        return nir.Flatten(input_type={"input": np.asarray(in_shape)}, start_dim=0, end_dim=-1, metadata=meta)
    if isinstance(op, Scale):
        meta["scale_form"] = "scalar" if op.factor.ndim == 0 else "channel"
        return nir.Scale(scale=_full(op.factor, in_shape), metadata=meta)
    raise NIRError(f"op {op.kind!r} has no NIR node")


def _bias_plan(network: Network) -> dict[int, str]:
    """Projection index whose last op carries its target's bias -> target name."""
    plan: dict[int, str] = {}
    for name, pop in network.populations.items():
        if pop.bias is None:
            continue
        bias = np.asarray(pop.bias)
        for index, projection in enumerate(network.projections):
            if projection.target != name or not projection.ops:
                continue
            last = projection.ops[-1]
            if isinstance(last, Dense) or (isinstance(last, Conv2d) and bias.shape == pop.shape[:1]):
                plan[index] = name
                break
    return plan


def _bias_carrier(ex: _Export, pop: Population, meta: dict):
    """A node that adds ``pop``'s bias and passes its input through unchanged (identity weights)."""
    nir, bias = ex.nir, np.asarray(pop.bias)
    if len(pop.shape) == 1:
        weight = np.eye(pop.shape[0], dtype=np.float32)
        return nir.Affine(weight=weight, bias=bias, metadata=meta)
    if bias.shape == pop.shape[:1] and len(pop.shape) == 3:
        weight = np.eye(pop.shape[0], dtype=np.float32)[:, :, None, None]
        return nir.Conv2d(input_shape=tuple(pop.shape[1:]), weight=weight, stride=1, padding=0, dilation=1,
                          groups=1, bias=bias, metadata=meta)
    raise NIRError(f"population {pop.name!r}: a per-neuron bias on a {pop.shape} population reached by no "
                   "dense projection has no NIR node (NIR biases live in Affine and per-channel Conv2d nodes)")


def to_nir_graph(network: Network, fold_thresholds: bool = False, delays: bool = False, *,
                 dt: float = DEFAULT_DT, T: int | None = None, dialect: str = "nir"):
    """The ``nir.NIRGraph`` of ``network`` (see :func:`write_nir` and docs/nir.md)."""
    nir = _nir()
    if dialect not in DIALECTS:
        raise NIRError(f"unknown NIR dialect {dialect!r}; choose from {DIALECTS}")
    network.validate()
    if dialect == "sinabs":
        if delays:
            raise NIRError("sinabs imports no Delay node: write the sinabs dialect without delays")
        beyond = [what for _, used in network.beyond(("leak",)) for what in used]
        if beyond:
            raise NIRError(f"the sinabs dialect writes IF / LIF neurons and feed-forward projections without delay; "
                           f"this network uses {beyond[0]}")
        fold_thresholds, dt = True, 1.0
    if not dt > 0:
        raise NIRError(f"dt must be a positive number of seconds, got {dt}")
    if fold_thresholds:
        network = fold_network_thresholds(network)
    ex = _Export(nir, float(dt), dialect, delays)
    pop_node: dict[str, str | None] = {}
    amplitude: dict[str, str] = {}
    output_meta: dict = {}
    for name, pop in network.populations.items():
        node = _population_node(ex, pop)
        if node is None:  # membrane readout integrated by the receiver (sinabs dialect)
            pop_node[name] = None
            output_meta = _neuron_meta(pop)
            continue
        node_name = "input" if pop.role == "input" else ex.names.take(name)
        pop_node[name] = node_name
        ex.nodes[node_name] = node
        theta = None if pop.neuron is None else np.asarray(pop.neuron.threshold)
        spiking = pop.role == "hidden" or (pop.neuron is not None and pop.neuron.readout == "spikes")
        if spiking and np.any(theta != 1) and any(p.source == name for p in network.projections):
            if dialect == "sinabs":
                raise NIRError(f"population {name!r}: sinabs imports no Scale node for the spike amplitude")
            amp = ex.names.take(f"{node_name}_amplitude")
            ex.nodes[amp] = nir.Scale(scale=_full(theta, pop.shape),
                                      metadata={"role": "spike_amplitude", "population": name})
            ex.edges.append((node_name, amp))
            amplitude[name] = amp
    output = network.output
    out_node = pop_node[output.name]
    ex.nodes["output"] = nir.Output(output_type=np.asarray(output.shape), metadata=output_meta)
    if out_node is not None:
        ex.edges.append((out_node, "output"))
    bias_plan = _bias_plan(network)
    carried = set(bias_plan.values())
    table = []
    for index, projection in enumerate(network.projections):
        source = network.populations[projection.source]
        target = network.populations[projection.target]
        ops = _sinabs_chain(projection.ops, source.shape) if dialect == "sinabs" else list(projection.ops)
        previous = amplitude.get(source.name, pop_node[source.name])
        steps = max(projection.delay, int(delays))  # the pynn profile: at least one step on every projection
        entry: dict = {"source": source.name, "target": target.name, "ops": [], "delay_steps": int(delays)}
        if projection.delay:
            entry["delay"] = int(projection.delay)
        if steps:
            name = ex.names.take(f"p{index}_delay")
            ex.nodes[name] = nir.Delay(delay=np.full(source.shape, steps * ex.dt, np.float32),
                                       metadata={"role": "delay", "projection": index, "delay_steps": steps})
            ex.edges.append((previous, name))
            previous = name
        shape = source.shape
        for j, op in enumerate(ops):
            if isinstance(op, Identity):
                entry["ops"].append(None)
                shape = op.out_shape(shape)
                continue
            if dialect == "sinabs" and isinstance(op, Scale):
                raise NIRError(f"projection {projection.label}: sinabs imports no Scale node and this scale "
                               "has no weighted op to fold into")
            meta = {"projection": index, "op": j, "kind": op.kind}
            bias = None
            if bias_plan.get(index) == target.name and j == len(ops) - 1:
                bias = np.asarray(target.bias)
                meta["population_bias"] = target.name
            name = ex.names.take(f"p{index}_{j}_{op.kind}")
            ex.nodes[name] = _op_node(ex, op, shape, meta, bias)
            ex.edges.append((previous, name))
            entry["ops"].append(name)
            previous = name
            shape = op.out_shape(shape)
        if target.bias is not None and target.name not in carried:
            carried.add(target.name)
            name = ex.names.take(f"{target.name}_bias")
            ex.nodes[name] = _bias_carrier(ex, target, {"role": "bias", "population_bias": target.name})
            ex.edges.append((previous, name))
            entry["bias_node"] = name
            previous = name
        ex.edges.append((previous, pop_node[target.name] or "output"))
        table.append(entry)
    metadata = {
        "format": NIR_FORMAT,
        # version 2 adds v_leak, v_reset, tau_syn, reset_timing, per-neuron leak_tau and per-projection delays;
        # a network that uses none of them is written as version 1, as before
        "format_version": NIR_FORMAT_VERSION if network.beyond(("spike-count readouts",)) else 1,
        "dialect": dialect,
        "dt": float(ex.dt),
        "spike_condition": "v >= v_threshold",
        "spike_amplitude": "threshold",
        "delay_steps": int(delays),
        "thresholds_folded": bool(fold_thresholds),
        "readout": output.neuron.readout,
        "readout_integrated_by": "receiver" if out_node is None else "node",
        "input": "current",
        "populations": json.dumps(list(network.populations)),
        "projections": json.dumps(table),
        "network_metadata": json.dumps(network.metadata),
    }
    if T is not None:
        metadata["T"] = int(T)
    try:
        return nir.NIRGraph(nodes=ex.nodes, edges=ex.edges, metadata=metadata)
    except (ValueError, AssertionError) as err:
        raise NIRError(f"NIR rejected the exported graph: {err}") from None


def write_nir(network: Network, path: str | Path, fold_thresholds: bool = False, delays: bool = False,
              reference=None, *, T: int | None = None, dt: float = DEFAULT_DT, dialect: str = "nir") -> Path:
    """Writes ``network`` as a NIR graph (HDF5) to ``path``; returns the path.

    Populations become ``IF`` nodes (``LIF`` with a leak), a membrane readout an ``I`` node (``LI``),
    projections chains of ``Linear``/``Affine``/``Conv2d``/``AvgPool2d``/``Flatten``/``Scale`` nodes
    with each population's bias in the last one, and a ``Scale`` node after a population whose
    threshold is not 1 gives its spikes their amplitude theta. What NIR cannot say goes into metadata
    (docs/nir.md).

    fold_thresholds: write threshold 1 everywhere (see :func:`fold_network_thresholds`), for importers
        that take one threshold or unit spikes.
    delays: the one-step-delay profile ("pynn"): a ``Delay`` node of one step starts every projection.
    reference: a few input items ``[n, *input_shape]`` (analog encoding): simulates them with the
        gpu backend for ``T`` steps and embeds the trace (``nir.write_data`` format, in the same file)
        so a receiver can check itself (:func:`check_reference`).
    T: the steps the network is meant to run (written to metadata; needed with ``reference``).
    dt: seconds per step (NIR times are in seconds).
    dialect: "nir", or "sinabs" (only nodes that ``sinabs.from_nir`` imports: thresholds folded,
        ``Affine`` for every dense op, sum pooling, no readout node: the ``Output`` gets the readout
        current, which the receiver integrates; time in steps, dt = 1).
    """
    nir = _nir()
    path = Path(path)
    if reference is not None and T is None:
        raise NIRError("a reference trace needs T, the number of steps to simulate")
    graph = to_nir_graph(network, fold_thresholds, delays, dt=dt, T=T, dialect=dialect)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, graph)
    if reference is not None:
        from neurodeploy.nir.reference import embed_reference  # the gpu backend, only when asked

        embed_reference(nir, path, network, graph, reference, T, delays)
    return path


