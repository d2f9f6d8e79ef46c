"""Reference traces: a few items simulated by the gpu backend, embedded in a NIR file in
``nir.write_data``'s layout so a receiver can check itself (docs/nir.md, "Options")."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from neurodeploy.ir.network import Network
from neurodeploy.nir.hdf5 import check_file, read_graph
from neurodeploy.nir.reader import nir_info, read_nir
from neurodeploy.nir.vocabulary import NIRError, NIRWarning, _nir


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


def embed_reference(nir, path: Path, network: Network, graph, x, T: int, delays: bool) -> None:
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
    check_file(path)  # no links followed, real arrays within the size budget
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
    graph = read_graph(path)
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


