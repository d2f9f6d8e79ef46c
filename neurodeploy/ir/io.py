"""IR file format: ``network.json`` (structure) + ``arrays.npz`` (arrays), in a folder or a ``.zip``.

No pickle anywhere: arrays load with ``allow_pickle=False``. Loading checks the format name and
version, every field's type, array dtypes, shapes and finiteness (through ``Network.validate``), and
fails with an :class:`IRFormatError` that names the file and the bad field.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from neurodeploy.errors import IRFormatError, IRValidationError
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import op_from_parts
from neurodeploy.ir.population import NeuronSpec, Population

FORMAT_NAME = "neurodeploy-ir"
FORMAT_VERSION = 1
STRUCTURE_FILE = "network.json"
ARRAYS_FILE = "arrays.npz"


def _array_or_value(value, arrays: dict[str, np.ndarray], key: str):
    """Arrays go to the npz under ``key``; JSON keeps a reference ``{"array": key}``."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"array": key}
    return value


def _to_parts(network: Network) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    populations = []
    for name, pop in network.populations.items():
        entry: dict = {"name": name, "shape": list(pop.shape), "role": pop.role, "metadata": pop.metadata}
        entry["bias"] = _array_or_value(pop.bias, arrays, f"population/{name}/bias")
        if pop.neuron is not None:
            neuron = pop.neuron
            entry["neuron"] = {
                "threshold": _array_or_value(
                    np.asarray(neuron.threshold, np.float32) if np.ndim(neuron.threshold) else float(neuron.threshold),
                    arrays,
                    f"population/{name}/threshold",
                ),
                "reset": neuron.reset,
                "v_init": _array_or_value(
                    neuron.v_init if isinstance(neuron.v_init, str) or np.ndim(neuron.v_init)
                    else float(neuron.v_init),
                    arrays,
                    f"population/{name}/v_init",
                ),
                "v_init_seed": int(neuron.v_init_seed),
                "leak_tau": neuron.leak_tau,
                "spike_cap": neuron.spike_cap,
                "negative_spikes": bool(neuron.negative_spikes),
                "readout": neuron.readout,
            }
        populations.append(entry)
    projections = []
    for p_index, proj in enumerate(network.projections):
        ops = []
        for o_index, op in enumerate(proj.ops):
            keys = {}
            for array_name, array in op.arrays().items():
                key = f"projection/{p_index}/op/{o_index}/{array_name}"
                arrays[key] = np.asarray(array)
                keys[array_name] = key
            ops.append({"kind": op.kind, "params": op.params(), "arrays": keys})
        projections.append({"source": proj.source, "target": proj.target, "ops": ops})
    structure = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "populations": populations,
        "projections": projections,
        "metadata": network.metadata,
    }
    return structure, arrays


def save_network(network: Network, path: str | Path) -> Path:
    """Writes ``network`` to ``path``: a ``.zip`` archive, or else a folder. Returns the path."""
    network.validate()
    structure, arrays = _to_parts(network)
    path = Path(path)
    text = json.dumps(structure, indent=1, sort_keys=False)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    if path.suffix == ".zip":
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(STRUCTURE_FILE, text)
            archive.writestr(ARRAYS_FILE, buffer.getvalue())
    else:
        path.mkdir(parents=True, exist_ok=True)
        (path / STRUCTURE_FILE).write_text(text)
        (path / ARRAYS_FILE).write_bytes(buffer.getvalue())
    return path


def _read_parts(path: Path) -> tuple[bytes, bytes]:
    if not path.exists():
        raise IRFormatError(f"{path}: no such IR file or folder")
    try:
        if path.is_dir():
            return (path / STRUCTURE_FILE).read_bytes(), (path / ARRAYS_FILE).read_bytes()
        with zipfile.ZipFile(path) as archive:
            return archive.read(STRUCTURE_FILE), archive.read(ARRAYS_FILE)
    except FileNotFoundError as err:
        raise IRFormatError(f"{path}: missing {Path(err.filename).name} (an IR folder holds "
                            f"{STRUCTURE_FILE} and {ARRAYS_FILE})") from None
    except KeyError as err:
        raise IRFormatError(f"{path}: archive lacks {err.args[0]}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise IRFormatError(f"{path}: not a readable IR archive ({err}); it may be truncated or corrupt") from None


class _Reader:
    """Pulls typed fields out of the parsed JSON, naming the field in every error."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray]):
        self.path = path
        self.arrays = arrays

    def fail(self, where: str, message: str) -> IRFormatError:
        return IRFormatError(f"{self.path}: {where}: {message}")

    def field(self, entry: dict, key: str, types: type | tuple, where: str):
        if not isinstance(entry, dict) or key not in entry:
            raise self.fail(where, f"missing field {key!r}")
        value = entry[key]
        if not isinstance(value, types):
            raise self.fail(f"{where}.{key}", f"expected {types}, got {type(value).__name__}")
        return value

    def array(self, key: str, where: str) -> np.ndarray:
        if key not in self.arrays:
            raise self.fail(where, f"array {key!r} missing from {ARRAYS_FILE}")
        array = self.arrays[key]
        if array.dtype.kind not in "fiu":
            raise self.fail(where, f"array {key!r} has non-numeric dtype {array.dtype}")
        return array

    def value(self, value, where: str):
        if isinstance(value, dict):
            return self.array(self.field(value, "array", str, where), where)
        return value


def load_network(path: str | Path) -> Network:
    """Reads and validates an IR file written by :func:`save_network`, or a NIR file (HDF5), which
    :func:`neurodeploy.ir.nir.read_nir` reads (docs/nir.md)."""
    path = Path(path)
    from neurodeploy.ir.nir import is_nir_file, read_nir  # lazy: the 'nir' package is optional

    if is_nir_file(path):
        return read_nir(path)
    structure_bytes, array_bytes = _read_parts(path)
    try:
        structure = json.loads(structure_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IRFormatError(f"{path}: {STRUCTURE_FILE} is not valid JSON ({err})") from None
    try:
        with np.load(io.BytesIO(array_bytes), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise IRFormatError(f"{path}: {ARRAYS_FILE} is not a readable npz ({err})") from None
    reader = _Reader(path, arrays)
    if not isinstance(structure, dict) or structure.get("format") != FORMAT_NAME:
        raise reader.fail("format", f"not a {FORMAT_NAME} file")
    version = structure.get("version")
    if version != FORMAT_VERSION:
        raise reader.fail("version", f"format version {version!r} is not supported (this is {FORMAT_VERSION})")
    network = Network(metadata=reader.field(structure, "metadata", dict, "root"))
    try:
        for i, entry in enumerate(reader.field(structure, "populations", list, "root")):
            where = f"populations[{i}]"
            neuron = None
            if entry.get("neuron") is not None:
                n = reader.field(entry, "neuron", dict, where)
                neuron = NeuronSpec(
                    threshold=reader.value(reader.field(n, "threshold", (int, float, dict), where), where),
                    reset=reader.field(n, "reset", str, where),
                    v_init=reader.value(reader.field(n, "v_init", (str, int, float, dict), where), where),
                    v_init_seed=reader.field(n, "v_init_seed", int, where),
                    leak_tau=n.get("leak_tau"),
                    spike_cap=n.get("spike_cap"),
                    negative_spikes=bool(n.get("negative_spikes", False)),
                    readout=reader.field(n, "readout", str, where),
                )
            bias = entry.get("bias")
            network.add_population(
                Population(
                    name=reader.field(entry, "name", str, where),
                    shape=tuple(reader.field(entry, "shape", list, where)),
                    role=reader.field(entry, "role", str, where),
                    neuron=neuron,
                    bias=None if bias is None else reader.value(bias, where),
                    metadata=entry.get("metadata", {}),
                )
            )
        for i, entry in enumerate(reader.field(structure, "projections", list, "root")):
            where = f"projections[{i}]"
            ops = []
            for j, op in enumerate(reader.field(entry, "ops", list, where)):
                op_where = f"{where}.ops[{j}]"
                keys = reader.field(op, "arrays", dict, op_where)
                ops.append(
                    op_from_parts(
                        reader.field(op, "kind", str, op_where),
                        reader.field(op, "params", dict, op_where),
                        {name: reader.array(key, op_where) for name, key in keys.items()},
                    )
                )
            network.connect(reader.field(entry, "source", str, where), reader.field(entry, "target", str, where), ops)
        network.validate()
    except (IRValidationError, TypeError) as err:
        raise IRFormatError(f"{path}: invalid network: {err}") from None
    return network
