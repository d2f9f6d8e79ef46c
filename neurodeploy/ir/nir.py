"""NIR interchange: the IR to and from the Neuromorphic Intermediate Representation (PyPI ``nir``).

``write_nir`` / ``read_nir`` (and the in-memory ``to_nir_graph`` / ``from_nir_graph``) move a network
through NIR's HDF5 format. NIR cannot say everything a rate-coded IF network needs (reset by
subtraction, the time step, the initial membrane, the readout kind, per-projection delays, QFFS);
those facts travel in node and graph metadata with the vocabulary of docs/nir.md, so that a file
written here reads back bit-identical. Graphs without that metadata (sinabs, snnTorch, ...) are read
with NIR's own semantics, and each assumption is stated in a :class:`NIRWarning`.

The ``nir`` package is optional and imported lazily: without it these functions raise
:class:`NIRNotInstalledError`.
"""

from __future__ import annotations

import copy
import json
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import AvgPool2d, Conv2d, Dense, Flatten, Identity, Op, Scale, chain_out_shape
from neurodeploy.ir.population import NeuronSpec, Population, initial_membrane, per_neuron

#: graph metadata ``format`` of files written here, and the version of the vocabulary (docs/nir.md)
NIR_FORMAT = "neurodeploy-nir"
NIR_FORMAT_VERSION = 1
#: seconds per step written when the caller gives none (the backends' 1 ms step)
DEFAULT_DT = 1e-3
#: "nir": faithful NIR; "sinabs": only what ``sinabs.from_nir`` imports (see docs/nir.md)
DIALECTS = ("nir", "sinabs")
#: discretizations of a foreign leaky node: exact exponential decay, or snnTorch's Euler step
LEAK_RULES = ("exp", "euler")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NIR_PIP = "nir==1.0.8"


class NIRError(NeurodeployError):
    """A network cannot be written to NIR, or a NIR file cannot be read into the IR."""


class NIRNotInstalledError(NIRError):
    """The optional ``nir`` package is not installed."""


class NIRUnsupportedError(NIRError):
    """A NIR graph uses something outside the IR (recurrence, synaptic state, ...); the message
    names the node."""


class NIRWarning(UserWarning):
    """An assumption made while reading or writing NIR (e.g. NIR's reset-to-``v_reset``)."""


def _nir():
    try:
        import nir
    except ImportError:
        raise NIRNotInstalledError(
            f"NIR interchange needs the optional package 'nir': pip install '{NIR_PIP}' "
            "(or the project's 'nir' extra)") from None
    return nir


def _warn(message: str) -> None:
    warnings.warn(message, NIRWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# helpers shared by both directions


def _sanitize(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return text if text and not text[0].isdigit() else f"n_{text}"


class _Names:
    """Unique NIR node names (HDF5 group and torch module safe)."""

    def __init__(self, reserved: Iterable[str] = ("input", "output")):
        self.used = set(reserved)

    def take(self, wanted: str) -> str:
        base = _sanitize(wanted)
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _channel_form(value, shape: tuple[int, ...]) -> np.ndarray | None:
    """A per-neuron array as a scalar (0-d) or per-channel ``[C]`` array when it is constant enough,
    else None."""
    array = np.asarray(value)
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return np.asarray(flat[0])
    if array.shape == shape and len(shape) > 1:
        rows = array.reshape(shape[0], -1)
        if np.all(rows == rows[:, :1]):
            return rows[:, 0].copy()
        return None
    if array.ndim == 1:
        return array.copy()
    return None


def _scalar(value) -> float | int | bool | str:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _full(value, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    return per_neuron(value, shape).astype(dtype)


# ----------------------------------------------------------------------------------------------
# export


class _SumPool2d(AvgPool2d):
    """Sum pooling (the sinabs dialect's form of an average pool whose 1 / area was folded away)."""

    kind = "sumpool2d"


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
        meta["leak_tau"] = float(neuron.leak_tau)
    if neuron.spike_cap is not None:
        meta["spike_cap"] = int(neuron.spike_cap)
    meta["negative_spikes"] = bool(neuron.negative_spikes)
    meta["readout"] = neuron.readout
    return meta


def _population_node(ex: _Export, pop: Population):
    """The NIR node of a population (None for a membrane readout in the sinabs dialect)."""
    nir, neuron, shape = ex.nir, pop.neuron, pop.shape
    meta = _neuron_meta(pop)
    if pop.role == "input":
        return nir.Input(input_type=np.asarray(shape), metadata=meta)
    ones = np.ones(shape, np.float32)
    zeros = np.zeros(shape, np.float32)
    spiking = pop.role == "hidden" or neuron.readout == "spikes"
    leak = neuron.leak_tau
    # NIR's LIF (tau dv/dt = v_leak - v + R I) with tau = leak_tau * dt and R = tau / dt: per step the
    # input enters with gain R dt / tau = 1; the sinabs dialect counts time in steps and leaves R = 1
    tau = None if leak is None else np.full(shape, leak * ex.dt, np.float32)
    r_leaky = None if leak is None else (ones if ex.dialect == "sinabs" else np.full(shape, leak, np.float32))
    if spiking:
        theta = _full(neuron.threshold, shape)
        if leak is None:
            return nir.IF(r=ones, v_threshold=theta, v_reset=zeros, metadata=meta)
        return nir.LIF(tau=tau, r=r_leaky, v_leak=zeros, v_threshold=theta, v_reset=zeros, metadata=meta)
    if ex.dialect == "sinabs":
        return None
    if leak is None:
        return nir.I(r=ones, metadata=meta)
    return nir.LI(tau=tau, r=r_leaky, v_leak=zeros, metadata=meta)


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


def _ungroup(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped convolution's weight ``[C_out, C_in / g, kh, kw]`` as the block-diagonal weight of the
    same convolution with one group ``[C_out, C_in, kh, kw]``."""
    c_out, c_in_g = weight.shape[:2]
    full = np.zeros((c_out, c_in_g * groups, *weight.shape[2:]), weight.dtype)
    per_group = c_out // groups
    for g in range(groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        full[rows, g * c_in_g:(g + 1) * c_in_g] = weight[rows]
    return full


def _regroup(weight: np.ndarray, groups: int) -> np.ndarray:
    """Inverse of :func:`_ungroup`."""
    c_out, c_in = weight.shape[:2]
    c_in_g, per_group = c_in // groups, c_out // groups
    return np.concatenate([weight[g * per_group:(g + 1) * per_group, g * c_in_g:(g + 1) * c_in_g]
                           for g in range(groups)])


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
        entry: dict = {"source": source.name, "target": target.name, "ops": [], "delay_steps": int(delays)}
        if delays:
            name = ex.names.take(f"p{index}_delay")
            ex.nodes[name] = nir.Delay(delay=np.full(source.shape, ex.dt, np.float32),
                                       metadata={"role": "delay", "projection": index, "delay_steps": 1})
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
        "format_version": NIR_FORMAT_VERSION,
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
        _embed_reference(nir, path, network, graph, reference, T, delays)
    return path


# ----------------------------------------------------------------------------------------------
# reference traces


def _simulate_steps(network: Network, x, T: int, delay: int):
    """Per-step spikes (|s|, ``[n, T, size]``) of every population and the output readout
    ``[n, T, C]``, from the gpu backend's engine stepped one step at a time."""
    import torch

    from neurodeploy.backends.gpu.compiled import compile_network
    from neurodeploy.backends.gpu.engine import BatchSimulation

    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    compiled = compile_network(network, torch.device("cpu"), torch.float32, None, delay)
    with torch.inference_mode():
        sim = BatchSimulation(compiled, x, "analog", delay, 0, record_neurons=True)
        previous = [c.clone() for c in sim.neuron_counts]
        spikes = {layer.name: [] for layer in compiled.layers}
        readout = []
        for _ in range(T):
            chunk, _ = sim.step_chunk(1)
            readout.append(chunk[:, 0].clone())
            for layer, now, before in zip(compiled.layers, sim.neuron_counts, previous, strict=True):
                spikes[layer.name].append((now - before).clone())
            previous = [c.clone() for c in sim.neuron_counts]
    return ({name: torch.stack(s, 1).numpy() for name, s in spikes.items()},
            torch.stack(readout, 1).numpy())


def _embed_reference(nir, path: Path, network: Network, graph, x, T: int, delays: bool) -> None:
    import tempfile

    import h5py

    x = np.asarray(x, np.float32)
    if x.shape[1:] != network.input.shape:
        raise NIRError(f"reference items have shape {x.shape[1:]}, the network's input is {network.input.shape}")
    spikes, readout = _simulate_steps(network, x, int(T), int(delays))
    by_population = {}
    for node_name, node in graph.nodes.items():
        meta = getattr(node, "metadata", {}) or {}
        if "population" in meta and "role" in meta and meta.get("role") != "spike_amplitude":
            by_population[meta["population"]] = node_name
    dt = float(graph.metadata["dt"])
    nodes = {"input": nir.NIRNodeData({"input": nir.TimeGriddedData(
        np.repeat(x.reshape(len(x), 1, -1), T, axis=1), dt)})}
    for name, pop in network.populations.items():
        if pop.role == "input":
            continue
        node = by_population.get(name, "output")
        observables = {}
        if pop.role == "hidden" or pop.neuron.readout == "spikes":
            observables["spikes"] = nir.TimeGriddedData(spikes[name].reshape(len(x), T, -1) != 0, dt)
        if pop.role == "output":
            observables["v" if pop.neuron.readout == "membrane" else "count"] = nir.TimeGriddedData(
                readout.astype(np.float32), dt)
        nodes[node] = nir.NIRNodeData(observables)
    with tempfile.TemporaryDirectory() as folder:
        data_path = Path(folder) / "reference.h5"
        nir.write_data(data_path, nir.NIRGraphData(nodes))
        with h5py.File(path, "a") as target, h5py.File(data_path, "r") as source:
            target.attrs["__type__"] = source.attrs["__type__"]
            source.copy(source["nodes"], target, "nodes")


def read_reference(path: str | Path):
    """The reference trace embedded by :func:`write_nir` (a ``nir.NIRGraphData``), or None."""
    import h5py

    nir = _nir()
    with h5py.File(path, "r") as f:
        if "nodes" not in f:
            return None
    return nir.read_data(str(path))


def check_reference(path: str | Path, network: Network | None = None) -> dict:
    """Re-simulates the embedded reference items with the gpu backend on the network read from
    ``path`` (or ``network``) and compares: ``{"items", "T", "spike_mismatches": {population: n},
    "readout_max_abs_diff", "ok"}``."""
    data = read_reference(path)
    if data is None:
        raise NIRError(f"{path}: no reference trace embedded")
    info = nir_info(path)
    if network is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NIRWarning)
            network = read_nir(path)
    current = data.nodes["input"].observables["input"].data
    T = current.shape[1]
    if not np.all(current == current[:, :1]):
        raise NIRError(f"{path}: the reference input varies over time; only analog (constant) inputs are checked")
    x = current[:, 0].reshape(len(current), *network.input.shape)
    spikes, readout = _simulate_steps(network, x, T, int(info.get("delay_steps", 0)))
    graph = _nir().read(str(path), type_check=False)
    node_of = {(n.metadata or {}).get("population"): k for k, n in graph.nodes.items()
               if (n.metadata or {}).get("role") not in (None, "spike_amplitude", "bias", "delay")}
    mismatches, readout_diff = {}, 0.0
    for name, pop in network.populations.items():
        node = data.nodes.get(node_of.get(name, "output"))
        if pop.role == "input" or node is None:
            continue
        if "spikes" in node.observables:
            expected = node.observables["spikes"].data
            mismatches[name] = int(np.sum(expected != (spikes[name].reshape(expected.shape) != 0)))
        for key in ("v", "count"):
            if key in node.observables:
                readout_diff = float(np.max(np.abs(node.observables[key].data - readout)))
    ok = not any(mismatches.values()) and readout_diff == 0.0
    return {"items": int(len(x)), "T": int(T), "spike_mismatches": mismatches,
            "readout_max_abs_diff": readout_diff, "ok": ok}


# ----------------------------------------------------------------------------------------------
# import


def is_nir_file(path: str | Path) -> bool:
    """True when ``path`` is a file that starts with the HDF5 signature (NIR's container)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return path.is_file() and f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def nir_info(path: str | Path) -> dict:
    """The graph-level facts of a NIR file (docs/nir.md): dialect, dt, T, delay_steps, ... ({} for a
    graph not written here)."""
    graph = _read_graph(path)
    return {k: _scalar(v) for k, v in (graph.metadata or {}).items()
            if k not in ("populations", "projections", "network_metadata")}


def _read_graph(path: str | Path):
    nir = _nir()
    path = Path(path)
    if not path.exists():
        raise NIRError(f"{path}: no such NIR file")
    try:
        return nir.read(str(path), type_check=False)
    except (OSError, KeyError, ValueError, TypeError, AssertionError) as err:
        raise NIRError(f"{path}: not a readable NIR file ({type(err).__name__}: {err})") from None


def read_nir(path: str | Path, *, dt: float | None = None, reset: str | None = None, leak: str = "exp") -> Network:
    """Reads a NIR file into a validated :class:`Network` (see :func:`from_nir_graph`)."""
    graph = _read_graph(path)
    try:
        return from_nir_graph(graph, dt=dt, reset=reset, leak=leak)
    except NIRError as err:
        raise type(err)(f"{path}: {err}") from None


def from_nir_graph(graph, *, dt: float | None = None, reset: str | None = None, leak: str = "exp") -> Network:
    """The IR network of a ``nir.NIRGraph``.

    A graph written here (graph metadata ``format`` = "neurodeploy-nir") comes back exactly as it was
    written. Any other graph is read with NIR's semantics, each assumption stated in a NIRWarning:

    dt: seconds per step, needed for leaky (``LIF``/``LI``) and ``Delay`` nodes of graphs that do not
        state it (snnTorch writes with dt = 1e-4 s; sinabs counts tau in steps: dt = 1).
    reset: how ``IF``/``LIF`` nodes reset: None follows NIR (reset to ``v_reset``, which must be 0),
        "subtract" reads the graph as sinabs and snnTorch mean it (reset by subtraction).
    leak: "exp" (decay exp(-dt / tau) per step) or "euler" (snnTorch's beta = 1 - dt / tau).
    """
    _nir()
    if reset not in (None, "subtract", "zero"):
        raise NIRError(f"reset must be None, 'subtract' or 'zero', not {reset!r}")
    if leak not in LEAK_RULES:
        raise NIRError(f"leak must be one of {LEAK_RULES}, not {leak!r}")
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if meta.get("format") == NIR_FORMAT:
        version = int(_scalar(meta.get("format_version", 0)))
        if version > NIR_FORMAT_VERSION:
            raise NIRError(f"written with neurodeploy NIR vocabulary version {version}; this reads up to "
                           f"{NIR_FORMAT_VERSION}")
        return _OwnReader(graph).network()
    return _ForeignReader(graph, dt, reset, leak).network()


# ---- graphs written here


def _meta(node) -> dict:
    return node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}


def _meta_value(value):
    if isinstance(value, np.ndarray):
        return value
    return _scalar(value)


def _threshold_value(value):
    value = _meta_value(value)
    return float(value) if not isinstance(value, np.ndarray) else value


def _op_from_node(nir, node, in_shape: tuple[int, ...], where: str) -> Op:
    """The IR op of an op node written here (exact arrays)."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        return Dense(np.asarray(node.weight))
    if isinstance(node, nir.Conv2d):
        groups = int(_scalar(_meta(node).get("groups", node.groups)))
        weight = np.asarray(node.weight)
        return Conv2d(_regroup(weight, groups) if groups > 1 else weight, tuple(int(s) for s in np.ravel(node.stride)),
                      tuple(int(p) for p in np.ravel(node.padding)), tuple(int(d) for d in np.ravel(node.dilation)),
                      groups)
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        op_type = _SumPool2d if isinstance(node, nir.SumPool2d) else AvgPool2d
        return op_type(tuple(int(k) for k in np.ravel(node.kernel_size)), tuple(int(s) for s in np.ravel(node.stride)),
                       tuple(int(p) for p in np.ravel(node.padding)))
    if isinstance(node, nir.Flatten):
        return Flatten()
    if isinstance(node, nir.Scale):
        full = np.asarray(node.scale, np.float32)
        if _meta(node).get("scale_form") == "scalar":
            return Scale(np.asarray(full.reshape(-1)[0]))
        return Scale(full.reshape(full.shape[0], -1)[:, 0].copy() if full.ndim > 1 else full.copy())
    raise NIRError(f"{where}: unexpected {type(node).__name__} node")


class _OwnReader:
    def __init__(self, graph):
        self.nir = _nir()
        self.graph = graph
        self.meta = graph.metadata

    def _json(self, key: str):
        try:
            return json.loads(self.meta[key])
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise NIRError(f"graph metadata {key!r} is missing or not JSON ({err})") from None

    def _node(self, name: str, where: str):
        if name not in self.graph.nodes:
            raise NIRError(f"{where}: metadata names node {name!r}, which the graph does not have")
        return self.graph.nodes[name]

    def network(self) -> Network:
        nir = self.nir
        order = self._json("populations")
        table = self._json("projections")
        by_population = {}
        for name, node in self.graph.nodes.items():
            meta = _meta(node)
            if "population" in meta and "role" in meta and meta["role"] in ("input", "hidden", "output"):
                by_population[str(meta["population"])] = (name, node)
        network = Network(metadata=self._json("network_metadata"))
        for name in order:
            if name not in by_population:
                raise NIRError(f"population {name!r} has no node in the graph")
            network.add_population(self._population(name, *by_population[name]))
        biases: dict[str, np.ndarray] = {}
        for node in self.graph.nodes.values():
            target = _meta(node).get("population_bias")
            if target is not None:
                biases[str(target)] = np.asarray(node.bias)
        for index, entry in enumerate(table):
            source = network.populations[entry["source"]]
            ops, shape = [], source.shape
            for j, node_name in enumerate(entry["ops"]):
                if node_name is None:
                    op = Identity()
                else:
                    op = _op_from_node(nir, self._node(node_name, f"projection {index}"), shape,
                                       f"projection {index} op {j}")
                ops.append(op)
                shape = op.out_shape(shape)
            if any(isinstance(op, _SumPool2d) for op in ops):
                ops = _plain_ops(ops)
            network.connect(entry["source"], entry["target"], ops)
        for name, bias in biases.items():
            network.populations[name].bias = bias
        if int(_scalar(self.meta.get("delay_steps", 0))):
            _warn("this graph was written for the one-step-delay profile: simulate it with profile 'pynn'")
        try:
            return network.validate()
        except NeurodeployError as err:
            raise NIRError(f"the graph's network is invalid: {err}") from None

    def _population(self, name: str, node_name: str, node) -> Population:
        meta = _meta(node)
        shape = tuple(int(s) for s in np.ravel(meta["shape"]))
        role = str(meta["role"])
        metadata = json.loads(meta["population_metadata"]) if "population_metadata" in meta else {}
        if role == "input":
            return Population(name, shape, "input", metadata=metadata)
        v_init = _meta_value(meta["v_init"])
        v_init = v_init if isinstance(v_init, (str, np.ndarray)) else float(v_init)
        neuron = NeuronSpec(
            threshold=_threshold_value(meta["threshold"]),
            reset=str(meta["reset"]),
            v_init=v_init,
            v_init_seed=int(_scalar(meta["v_init_seed"])),
            leak_tau=float(_scalar(meta["leak_tau"])) if "leak_tau" in meta else None,
            spike_cap=int(_scalar(meta["spike_cap"])) if "spike_cap" in meta else None,
            negative_spikes=bool(_scalar(meta.get("negative_spikes", False))),
            readout=str(meta.get("readout", "membrane")),
        )
        nir = self.nir
        if isinstance(node, (nir.IF, nir.LIF)):
            written = np.asarray(node.v_threshold, np.float32)
            if not np.array_equal(written, _full(neuron.threshold, shape)):
                _warn(f"population {name!r}: node {node_name!r}'s v_threshold differs from its metadata "
                      "(edited after writing?); the node's values are used")
                neuron.threshold = _channel_form(written, shape) if _channel_form(written, shape) is not None \
                    else written
        return Population(name, shape, role, neuron, metadata=metadata)


def _plain_ops(ops: list[Op]) -> list[Op]:
    """Sum pools read back as average pools times their area (a chain rewritten for sinabs)."""
    out: list[Op] = []
    for op in ops:
        if isinstance(op, _SumPool2d):
            out += [AvgPool2d(op.kernel, op.stride, op.padding),
                    Scale(np.float32(op.kernel[0] * op.kernel[1]))]
        else:
            out.append(op)
    return out


# ---- graphs written elsewhere


_NEURONS = ("IF", "LIF", "I", "LI")
_OPS = ("Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten", "Scale", "Delay")
_REFUSED = {
    "CubaLIF": "its synaptic current state (tau_syn) has no IR equivalent",
    "CubaLI": "its synaptic current state (tau_syn) has no IR equivalent",
    "Threshold": "a stateless threshold (no membrane) has no IR equivalent",
    "NIRGraph": "nested graphs (e.g. snnTorch's recurrent RLeaky/RSynaptic) are recurrent",
}


def _pair(value) -> tuple[int, int]:
    flat = [int(v) for v in np.ravel(value)]
    return (flat[0], flat[0]) if len(flat) == 1 else (flat[0], flat[1])


class _ForeignReader:
    def __init__(self, graph, dt, reset, leak):
        self.nir = _nir()
        self.graph = graph
        self.dt = dt
        self.reset = reset
        self.leak = leak
        self.notes: list[str] = []
        self.kind = {name: type(node).__name__ for name, node in graph.nodes.items()}

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            _warn(text)

    def _dt(self, name: str, what: str) -> float:
        if self.dt is None:
            raise NIRError(f"node {name!r}: {what} needs the time step, which this graph does not state: "
                           "pass dt (snnTorch writes dt = 1e-4 s; sinabs counts in steps, dt = 1)")
        return float(self.dt)

    def network(self) -> Network:
        graph = self.graph
        for name in graph.nodes:
            kind = self.kind[name]
            if kind in _REFUSED:
                raise NIRUnsupportedError(f"node {name!r} ({kind}): {_REFUSED[kind]}")
            if kind not in _NEURONS + _OPS + ("Input", "Output"):
                raise NIRUnsupportedError(f"node {name!r}: NIR primitive {kind} is not supported")
        for a, b in graph.edges:
            for end in (a, b):
                if end not in graph.nodes:
                    raise NIRUnsupportedError(f"edge {a!r} -> {b!r} names {end!r}, which is not a node of this graph "
                                              "(sub-graph ports are not supported)")
        digraph = nx.DiGraph()
        digraph.add_nodes_from(graph.nodes)
        digraph.add_edges_from(graph.edges)
        if not nx.is_directed_acyclic_graph(digraph):
            cycle = " -> ".join(a for a, _ in nx.find_cycle(digraph))
            raise NIRUnsupportedError(f"recurrence through nodes {cycle}: the IR is feed-forward")
        inputs = [n for n in graph.nodes if self.kind[n] == "Input"]
        outputs = [n for n in graph.nodes if self.kind[n] == "Output"]
        if len(inputs) != 1 or len(outputs) != 1:
            raise NIRUnsupportedError(f"the IR takes one Input and one Output node; this graph has {inputs} and "
                                      f"{outputs}")
        self.digraph = digraph
        self.input, self.output = inputs[0], outputs[0]
        order = list(nx.lexicographical_topological_sort(digraph))
        self._shapes(order)
        return self._build(order)

    # shapes and op translation

    def _shapes(self, order: list[str]) -> None:
        nir = self.nir
        self.in_shape: dict[str, tuple[int, ...]] = {}
        self.out_shape: dict[str, tuple[int, ...]] = {}
        self.ops: dict[str, list[Op]] = {}
        self.bias: dict[str, np.ndarray | None] = {}
        self.delay: dict[str, int] = {}
        for name in order:
            node = self.graph.nodes[name]
            preds = list(self.digraph.predecessors(name))
            if name == self.input:
                shape = tuple(int(s) for s in np.ravel(node.input_type["input"]))
                self.in_shape[name] = self.out_shape[name] = _unit_height(shape)
                continue
            if not preds:
                raise NIRUnsupportedError(f"node {name!r} has no input")
            shapes = {self.out_shape[p] for p in preds}
            if len(shapes) != 1:
                raise NIRUnsupportedError(f"node {name!r} sums inputs of different shapes {sorted(shapes)}")
            shape = shapes.pop()
            self.in_shape[name] = shape
            kind = self.kind[name]
            if kind in _NEURONS or kind == "Output":
                self.out_shape[name] = shape
                continue
            ops, bias = self._op(name, node, shape, nir)
            self.ops[name] = ops
            out = chain_out_shape(ops, shape) if ops else shape
            self.out_shape[name] = out
            self.bias[name] = None if bias is None else np.broadcast_to(bias, out).astype(np.float64)

    def _op(self, name: str, node, shape: tuple[int, ...], nir) -> tuple[list[Op], np.ndarray | None]:
        kind = self.kind[name]
        try:
            if kind in ("Affine", "Linear"):
                weight = np.asarray(node.weight, np.float32)
                if weight.ndim != 2 or len(shape) != 1:
                    raise NIRUnsupportedError(f"node {name!r}: {kind} weight {weight.shape} on input {shape}")
                bias = np.asarray(node.bias, np.float64) if kind == "Affine" else None
                return [Dense(weight)], bias
            if kind in ("Conv2d", "Conv1d"):
                weight = np.asarray(node.weight, np.float32)
                one_d = kind == "Conv1d"
                if one_d:
                    weight = weight[:, :, None, :]
                kernel = weight.shape[2:]
                dilation = (1, int(np.ravel(node.dilation)[0])) if one_d else _pair(node.dilation)
                stride = (1, int(np.ravel(node.stride)[0])) if one_d else _pair(node.stride)
                padding = node.padding
                if isinstance(padding, (str, bytes)):
                    padding = padding.decode() if isinstance(padding, bytes) else padding
                    if padding == "valid":
                        padding = (0, 0)
                    elif padding == "same" and stride == (1, 1) and all(k % 2 for k in kernel):
                        padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
                    else:
                        raise NIRUnsupportedError(f"node {name!r}: padding {padding!r} with stride {stride}")
                else:
                    padding = (0, int(np.ravel(padding)[0])) if one_d else _pair(padding)
                bias = np.asarray(node.bias, np.float64).reshape(-1)
                op = Conv2d(weight, stride, padding, dilation, int(np.ravel(node.groups)[0]))
                out = op.out_shape(shape)
                return [op], bias.reshape((-1, 1, 1)) * np.ones(out) if np.any(bias != 0) else None
            if kind in ("AvgPool2d", "SumPool2d"):
                pool = AvgPool2d(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
                if kind == "AvgPool2d":
                    self.note("AvgPool2d is read with zero padding counted in the divisor (PyTorch's default)")
                    return [pool], None
                return [pool, Scale(np.float32(pool.kernel[0] * pool.kernel[1]))], None
            if kind == "Flatten":
                start, end = int(node.start_dim), int(node.end_dim)
                n = len(shape)
                if start % max(n, 1) == 0 and end % max(n, 1) == (n - 1) % max(n, 1):
                    return ([Flatten()] if n > 1 else []), None
                raise NIRUnsupportedError(f"node {name!r}: a partial Flatten (dims {start}..{end} of {shape})")
            if kind == "Scale":
                form = _channel_form(_fit(node.scale, shape).astype(np.float32), shape)
                if form is None:
                    raise NIRUnsupportedError(f"node {name!r}: a per-neuron Scale on a {shape} signal")
                return [Scale(form)], None
            if kind == "Delay":
                delays = np.asarray(node.delay, np.float64)
                exact = delays / self._dt(name, "a Delay")
                steps = np.round(exact)
                if not np.allclose(exact, steps, rtol=1e-5, atol=0) or not np.all(steps == steps.reshape(-1)[0]):
                    raise NIRUnsupportedError(f"node {name!r}: delays {np.unique(delays)} are not one whole number "
                                              f"of steps of {self.dt} s")
                self.delay[name] = int(round(float(steps.reshape(-1)[0])))
                return [], None
        except NIRError:
            raise
        except NeurodeployError as err:
            raise NIRUnsupportedError(f"node {name!r} ({kind}): {err}") from None
        raise NIRUnsupportedError(f"node {name!r}: {kind}")

    # populations and projections

    def _gain_and_neuron(self, name: str, node, shape, spiking: bool):
        """(input gain per neuron or None, NeuronSpec) of a neuron node."""
        kind = self.kind[name]
        r = _fit(node.r, shape)
        leak_tau = None
        if kind in ("LIF", "LI"):
            v_leak = _fit(node.v_leak, shape)
            if np.any(v_leak != 0):
                raise NIRUnsupportedError(f"node {name!r} ({kind}): v_leak != 0 is not supported")
            tau = _fit(node.tau, shape)
            if np.all(np.isinf(tau)):
                if not np.all(np.isinf(r)):
                    raise NIRUnsupportedError(f"node {name!r}: tau = inf with finite r passes no input")
                self.note(f"node {name!r}: tau = inf with r = inf (snnTorch's beta = 1) is read as a non-leaky "
                          "neuron with input gain 1 (r = tau / dt)")
                gain = np.ones(shape)
            else:
                if not np.all(tau == tau.reshape(-1)[0]):
                    raise NIRUnsupportedError(f"node {name!r}: per-neuron tau (the IR has one leak per population)")
                dt = self._dt(name, f"a leaky {kind}")
                ratio = dt / float(tau.reshape(-1)[0])
                if self.leak == "exp":
                    leak_tau = 1.0 / ratio
                else:
                    if not ratio < 1:
                        raise NIRUnsupportedError(f"node {name!r}: dt / tau = {ratio} >= 1 has no Euler decay")
                    leak_tau = -1.0 / math.log1p(-ratio)
                gain = r * ratio
                self.note(f"leaky nodes: decay per step {'exp(-dt/tau)' if self.leak == 'exp' else '1 - dt/tau'} "
                          f"with dt = {dt} s, input gain r * dt / tau")
        else:
            gain = r
        if np.allclose(gain, 1.0, rtol=1e-6, atol=0):
            gain = None
        neuron = NeuronSpec(threshold=1.0, leak_tau=leak_tau, readout="spikes" if spiking else "membrane")
        if spiking:
            theta = _fit(node.v_threshold, shape)
            form = _channel_form(theta.astype(np.float32), shape)
            if form is None:
                raise NIRUnsupportedError(f"node {name!r}: thresholds vary inside a channel of a {shape} population")
            neuron.threshold = float(form) if form.ndim == 0 else form
            v_reset = np.asarray(node.v_reset, np.float64) if node.v_reset is not None else np.zeros(1)
            if self.reset is None:
                if np.any(v_reset != 0):
                    raise NIRUnsupportedError(f"node {name!r}: v_reset != 0 (the IR resets to 0 or subtracts)")
                neuron.reset = "zero"
                self.note("spiking nodes follow NIR's semantics: reset to v_reset = 0 (no metadata says otherwise; "
                          "pass reset='subtract' to read sinabs or snnTorch graphs as they mean it)")
            else:
                neuron.reset = self.reset
                self.note(f"spiking nodes are read with reset {self.reset!r} (the caller's choice), not NIR's v_reset")
            self.note("spikes are emitted at v >= v_threshold (NIR says v > v_threshold; snnTorch uses >, sinabs >=)")
        return gain, neuron

    def _build(self, order: list[str]) -> Network:
        graph, digraph = self.graph, self.digraph
        populations: dict[str, str] = {}  # node -> population name
        names = _Names(reserved=("input",))
        network = Network()
        network.add_population(Population("input", self.in_shape[self.input], "input"))
        populations[self.input] = "input"
        output_preds = list(digraph.predecessors(self.output))
        direct_output = (len(output_preds) == 1 and self.kind[output_preds[0]] in _NEURONS)
        gains: dict[str, np.ndarray | None] = {}
        amplitude: dict[str, np.ndarray] = {}
        for name in order:
            kind = self.kind[name]
            if kind not in _NEURONS:
                continue
            succs = list(digraph.successors(name))
            is_output = direct_output and output_preds[0] == name
            spiking = kind in ("IF", "LIF")
            if not spiking and not is_output:
                raise NIRUnsupportedError(f"node {name!r} ({kind}): a non-spiking node is read only as the readout "
                                          "right before the Output")
            if is_output and len(succs) > 1:
                raise NIRUnsupportedError(f"node {name!r}: the readout population feeds other nodes")
            shape = self.in_shape[name]
            gain, neuron = self._gain_and_neuron(name, graph.nodes[name], shape, spiking)
            gains[name] = gain
            pop_name = names.take(name)
            network.add_population(Population(pop_name, shape, "output" if is_output else "hidden", neuron))
            populations[name] = pop_name
            theta = np.asarray(neuron.threshold, np.float32)
            if spiking and np.any(theta != 1):
                amplitude[name] = theta
        if not direct_output:
            out_name = names.take("output")
            network.add_population(Population(out_name, self.in_shape[self.output], "output",
                                               NeuronSpec(readout="membrane")))
            populations[self.output] = out_name
            self.note("the Output node receives a current: it is read as a membrane readout (the current summed "
                      "over steps)")
        biases: dict[str, np.ndarray] = {}
        delays = set()
        for source in [n for n in order if n in populations and n != self.output]:
            for path in self._paths(source, populations):
                target = path[-1]
                ops = []
                if source in amplitude:
                    theta = amplitude[source]
                    ops.append(Scale((1.0 / theta).astype(np.float32)))
                for node in path[1:-1]:
                    ops += self.ops[node]
                delays.add(sum(self.delay.get(node, 0) for node in path[1:-1]))
                gain = gains.get(target)
                if gain is not None:
                    form = _channel_form(gain.astype(np.float32), self.in_shape[target])
                    if form is None:
                        raise NIRUnsupportedError(f"node {target!r}: an input gain (r) that varies inside a channel")
                    ops.append(Scale(form))
                network.connect(populations[source], populations[target], ops)
        for name in order:
            if self.bias.get(name) is None:
                continue
            for path in self._paths(name, populations):
                target = path[-1]
                contribution = _push_bias(self.bias[name], [op for n in path[1:-1] for op in self.ops[n]])
                gain = gains.get(target)
                if gain is not None:
                    contribution = contribution * gain
                key = populations[target]
                biases[key] = contribution if key not in biases else biases[key] + contribution
        for key, bias in biases.items():
            pop = network.populations[key]
            compact = _channel_form(bias, pop.shape)
            pop.bias = (compact if compact is not None and compact.ndim == 1 and len(pop.shape) > 1 else
                        np.broadcast_to(bias, pop.shape)).astype(np.float32)
        if len(delays) > 1:
            raise NIRUnsupportedError(f"projections with different delays ({sorted(delays)} steps): the IR has one "
                                      "delay profile for the whole network")
        delay = delays.pop() if delays else 0
        if delay > 1:
            raise NIRUnsupportedError(f"a delay of {delay} steps per projection (the IR knows 0 and 1)")
        network.metadata = {"source": "nir", "nir_import": {"notes": list(self.notes), "delay_steps": delay}}
        if delay:
            self.note("every projection is delayed by one step: simulate with profile 'pynn'")
            network.metadata["nir_import"]["notes"] = list(self.notes)
        try:
            return network.validate()
        except NeurodeployError as err:
            raise NIRError(f"the graph's network is invalid: {err}") from None

    def _paths(self, start: str, populations: dict) -> list[list[str]]:
        """Paths from ``start`` through op nodes to the next population nodes (or the Output)."""
        paths, stack = [], [[start]]
        while stack:
            path = stack.pop()
            for nxt in self.digraph.successors(path[-1]):
                if nxt in populations:
                    paths.append(path + [nxt])
                elif self.kind[nxt] == "Output":
                    continue  # a population feeding the Output directly is the readout itself
                else:
                    stack.append(path + [nxt])
        return sorted(paths)


def _fit(value, shape: tuple[int, ...]) -> np.ndarray:
    """A node parameter as a float64 array of the signal's ``shape`` (a (C, N) parameter of a Conv1d-shaped
    signal is reshaped to (C, 1, N); a scalar or (1,) broadcasts)."""
    array = np.asarray(value, np.float64)
    if array.size == math.prod(shape) and array.shape != shape:
        return array.reshape(shape)
    try:
        return np.broadcast_to(array, shape)
    except ValueError:
        raise NIRUnsupportedError(f"a parameter of shape {array.shape} does not fit the signal {shape}") from None


def _unit_height(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A (C, N) signal (Conv1d) is carried as (C, 1, N): the same neurons in the same order."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else shape


def _push_bias(bias: np.ndarray, ops: list[Op]) -> np.ndarray:
    """A constant carried through a chain of linear ops (float64)."""
    if not ops:
        return np.asarray(bias, np.float64)
    import torch

    from neurodeploy.ir.torch_ops import compile_chain

    chain = compile_chain(ops, dtype=torch.float64)
    with torch.no_grad():
        return chain(torch.as_tensor(np.asarray(bias, np.float64))[None])[0].numpy()


__all__ = [
    "DEFAULT_DT", "DIALECTS", "NIRError", "NIRNotInstalledError", "NIRUnsupportedError", "NIRWarning",
    "check_reference", "fold_network_thresholds", "from_nir_graph", "is_nir_file", "nir_info", "read_nir",
    "read_reference", "to_nir_graph", "write_nir",
]
