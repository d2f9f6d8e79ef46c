"""Import: a NIR file or ``nir.NIRGraph`` into the IR. Graphs written here come back exactly from their
metadata; graphs written elsewhere go to :mod:`neurodeploy.nir.foreign` (docs/nir.md, "Import")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import AvgPool2d, Conv2d, Dense, Flatten, Identity, Op, Scale
from neurodeploy.ir.population import NeuronSpec, Population
from neurodeploy.nir.foreign import _ForeignReader
from neurodeploy.nir.hdf5 import MAX_BYTES, read_graph
from neurodeploy.nir.vocabulary import (
    HDF5_SIGNATURE,
    NIR_FORMAT,
    NIR_FORMAT_VERSION,
    ImportOptions,
    NIRError,
    NIRUnsupportedError,
    _channel_form,
    _full,
    _nir,
    _regroup,
    _scalar,
    _SumPool2d,
    _warn,
)


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


def _read_graph(path: str | Path, max_bytes: int = MAX_BYTES):
    """The graph in ``path``, read with the checks of :mod:`neurodeploy.nir.hdf5` (links, dtypes, sizes)."""
    return read_graph(path, max_bytes)


def read_nir(path: str | Path, *, dt: float | None = None, reset: str | None = None, leak: str | None = None,
             writer: str | None = None, max_bytes: int = MAX_BYTES) -> Network:
    """Reads a NIR file into a validated :class:`Network` (see :func:`from_nir_graph`); the file is read with
    the checks of :mod:`neurodeploy.nir.hdf5` (``max_bytes``: the most its arrays may declare)."""
    options = ImportOptions(writer, dt, reset, leak)
    graph = _read_graph(path, max_bytes)
    try:
        return from_nir_graph(graph, **_as_keywords(options))
    except NIRError as err:
        raise type(err)(f"{path}: {err}") from None


def _as_keywords(options: ImportOptions) -> dict:
    return {"writer": options.writer, "dt": options.dt, "reset": options.reset, "leak": options.leak}


def from_nir_graph(graph, *, dt: float | None = None, reset: str | None = None, leak: str | None = None,
                   writer: str | None = None) -> Network:
    """The IR network of a ``nir.NIRGraph``.

    A graph written here (graph metadata ``format`` = "neurodeploy-nir") comes back exactly as it was
    written; it states its own time base and reset, so the options below are ignored (with a note). Any
    other graph is read with NIR's semantics and these options (:class:`ImportOptions`, docs/nir.md,
    "Import options"), each assumption stated in a NIRWarning and in ``network.metadata["nir_import"]``:

    writer: "nir" (default), "sinabs", "snntorch" or "norse": the preset of the three below.
    dt: seconds per step, needed for leaky (``LIF``/``LI``/``CubaLIF``) and ``Delay`` nodes (snnTorch writes
        with dt = 1e-4 s; sinabs counts tau in steps: dt = 1). A ``dt`` in the graph's metadata wins.
    reset: how spiking nodes reset: "zero" (to ``v_reset``, NIR's meaning) or "subtract" (sinabs, snnTorch).
    leak: "exp" (decay exp(-dt / tau) per step) or "euler" (snnTorch's and Norse's 1 - dt / tau).
    """
    _nir()
    options = ImportOptions(writer, dt, reset, leak)
    if not isinstance(graph, _nir().NIRGraph):
        raise NIRUnsupportedError(f"the file holds a single {type(graph).__name__} node, not a graph")
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if meta.get("format") == NIR_FORMAT:
        version = int(_scalar(meta.get("format_version", 0)))
        if version > NIR_FORMAT_VERSION:
            raise NIRError(f"written with neurodeploy NIR vocabulary version {version}; this reads up to "
                           f"{NIR_FORMAT_VERSION}")
        if options.given:
            _warn("this graph was written by neurodeploy and states its own time step, reset and leak: the import "
                  "options are not used")
        try:
            network = _OwnReader(graph).network()
        except MALFORMED as err:  # our vocabulary's metadata damaged or missing after writing
            raise NIRUnsupportedError(f"the graph's neurodeploy metadata is malformed ({_what(err)})") from None
        if options.given:
            network.metadata["nir_import"] = {"options": None, "notes": ["written by neurodeploy: the graph's own "
                                                                         "metadata is used, the import options not"]}
        return network
    try:
        return _ForeignReader(graph, options).network()
    except MALFORMED as err:  # a node nir let through malformed
        raise NIRUnsupportedError(f"the graph has malformed nodes ({_what(err)})") from None


#: what reading a node whose fields nir did not check can raise (wrong types, shapes, missing keys, infinities)
MALFORMED = (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError)


def _what(err: Exception) -> str:
    """One line on a malformed field: a missing key is named as such."""
    if isinstance(err, KeyError):
        return f"missing field {str(err)[:80]}"
    return f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"


# ---- graphs written here


def _meta(node) -> dict:
    return node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}


def _meta_value(value):
    if isinstance(value, np.ndarray):
        return value
    return _scalar(value)


def _number(value):
    """A metadata number: a float, or a float64 array."""
    value = _meta_value(value)
    return np.asarray(value, np.float64) if isinstance(value, np.ndarray) else float(value)


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
            network.connect(entry["source"], entry["target"], ops, delay=int(entry.get("delay", 0)))
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
            leak_tau=_number(meta["leak_tau"]) if "leak_tau" in meta else None,
            v_leak=_number(meta.get("v_leak", 0.0)),
            v_reset=_number(meta.get("v_reset", 0.0)),
            tau_syn=_number(meta["tau_syn"]) if "tau_syn" in meta else None,
            reset_timing=str(meta.get("reset_timing", "immediate")),
            spike_cap=int(_scalar(meta["spike_cap"])) if "spike_cap" in meta else None,
            negative_spikes=bool(_scalar(meta.get("negative_spikes", False))),
            readout=str(meta.get("readout", "membrane")),
        )
        nir = self.nir
        if isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
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


