"""IR file format: ``network.json`` (structure) + ``arrays.npz`` (arrays), in a folder or a ``.zip``.

No pickle anywhere. Reading is strict and bounded (:mod:`neurodeploy.safe_io`): only regular files are
opened; ``network.json`` (at most 64 MiB, nested at most 64 deep) must match the schema below exactly
(pydantic, strict: no coercion, no unknown fields, enumerations for roles, resets, readouts and op
kinds, integers where integers are meant, bounds on every size); every array's ``.npy`` header
(dtype, byte order, shape) is checked against the structure, with arrays standing in as placeholders
that allocate nothing, before any array is read; every array in ``arrays.npz`` must be referred to;
then the arrays are read and the network is validated with its values (``Network.validate``). Any
failure is one :class:`IRFormatError` naming the file, the field and what was expected.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from neurodeploy.errors import IRFormatError, IRValidationError
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import op_from_parts
from neurodeploy.ir.population import NeuronSpec, Population
from neurodeploy.safe_io import (
    UNION_TAGS,
    Budget,
    NpyHeader,
    SafeZip,
    atomic_write,
    check_regular,
    clip,
    open_regular,
    parse_json,
    pydantic_message,
    read_stream,
    write_bytes,
)

FORMAT_NAME = "neurodeploy-ir"
#: version 2 adds the trained-SNN fields (v_leak, v_reset, tau_syn, per-neuron leak_tau, reset_timing,
#: projection delays); a network that uses none of them is written as version 1, and both are read
FORMAT_VERSION = 2
FIRST_VERSION = 1
STRUCTURE_FILE = "network.json"
ARRAYS_FILE = "arrays.npz"
#: largest network.json read
MAX_STRUCTURE_BYTES = 64 << 20
#: dtypes IR arrays may have (little-endian); scale factors are float32
ARRAY_DTYPES = frozenset(np.dtype(t).str for t in ("<f2", "<f4", "<f8", "i1", "<i2", "<i4", "<i8", "u1", "<u2",
                                                   "<u4", "<u8"))
_BIG = 1 << 31

def _array_or_value(value, arrays: dict[str, np.ndarray], key: str):
    """Arrays go to the npz under ``key``; JSON keeps a reference ``{"array": key}``."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"array": key}
    return value


def _threshold_array(threshold) -> np.ndarray:
    """Array thresholds keep their float dtype; anything else is stored as float32."""
    if isinstance(threshold, np.ndarray) and threshold.dtype.kind == "f":
        return threshold
    return np.asarray(threshold, np.float32)


def _to_parts(network: Network) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    populations = []
    for name, pop in network.populations.items():
        entry: dict = {"name": name, "shape": list(pop.shape), "role": pop.role, "metadata": pop.metadata}
        bias = pop.bias if pop.bias is None or isinstance(pop.bias, np.ndarray) else np.asarray(pop.bias, np.float32)
        entry["bias"] = _array_or_value(bias, arrays, f"population/{name}/bias")
        if pop.neuron is not None:
            neuron = pop.neuron
            entry["neuron"] = {
                "threshold": _array_or_value(
                    _threshold_array(neuron.threshold) if isinstance(neuron.threshold, np.ndarray) or np.ndim(
                        neuron.threshold) else float(neuron.threshold),
                    arrays,
                    f"population/{name}/threshold",
                ),
                "reset": neuron.reset,
                "v_init": _array_or_value(
                    neuron.v_init if isinstance(neuron.v_init, str | np.ndarray) else
                    np.asarray(neuron.v_init, np.float32) if np.ndim(neuron.v_init) else float(neuron.v_init),
                    arrays,
                    f"population/{name}/v_init",
                ),
                "v_init_seed": int(neuron.v_init_seed),
                "leak_tau": _optional_parameter(neuron.leak_tau, arrays, f"population/{name}/leak_tau"),
                "spike_cap": None if neuron.spike_cap is None else int(neuron.spike_cap),
                "negative_spikes": bool(neuron.negative_spikes),
                "readout": neuron.readout,
            }
            if neuron.dynamics() not in ([], ["leak"]):  # version 2 fields, written only when used
                for key in ("v_leak", "v_reset", "tau_syn"):
                    entry["neuron"][key] = _optional_parameter(getattr(neuron, key), arrays,
                                                               f"population/{name}/{key}")
                entry["neuron"]["reset_timing"] = neuron.reset_timing
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
        if proj.delay:
            projections[-1]["delay"] = int(proj.delay)
    uses_v2 = any("reset_timing" in p.get("neuron", {}) for p in populations) or any(
        "delay" in p for p in projections)
    structure = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION if uses_v2 else FIRST_VERSION,
        "populations": populations,
        "projections": projections,
        "metadata": network.metadata,
    }
    return structure, arrays


def _optional_parameter(value, arrays: dict[str, np.ndarray], key: str):
    """None, a float, or an array (kept float, else stored as float32) referred to under ``key``."""
    if value is None:
        return None
    if isinstance(value, np.ndarray) or np.ndim(value):
        array = value if isinstance(value, np.ndarray) and value.dtype.kind == "f" else np.asarray(value, np.float32)
        return _array_or_value(array, arrays, key)
    return float(value)


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
        with atomic_write(path) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(STRUCTURE_FILE, text)
            archive.writestr(ARRAYS_FILE, buffer.getvalue())
    else:
        path.mkdir(parents=True, exist_ok=True)
        write_bytes(path / STRUCTURE_FILE, text.encode())
        write_bytes(path / ARRAYS_FILE, buffer.getvalue())
    return path


# --- the schema of network.json --------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


ArrayKey = Annotated[str, Field(min_length=1, max_length=1024)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Dim = Annotated[int, Field(ge=1, lt=_BIG)]
Pair1 = Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=2, max_length=2)]
Pair0 = Annotated[list[Annotated[int, Field(ge=0, le=65536)]], Field(min_length=2, max_length=2)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class ArrayRef(_Strict):
    """``{"array": key}``: the array stored in arrays.npz under ``key``."""

    array: ArrayKey


def _number_or_array(value) -> str:
    return "array" if isinstance(value, dict) else "number"


def _vinit_kind(value) -> str:
    return "name" if isinstance(value, str) else _number_or_array(value)


UNION_TAGS.update({"array", "number", "name", "dense", "conv2d", "avgpool2d", "flatten", "identity", "scale",
                   "conv1d", "avgpool1d", "channel_slice", "spatial_linear", "gather"})
ThresholdField = Annotated[Annotated[PositiveFinite, Tag("number")] | Annotated[ArrayRef, Tag("array")],
                           Discriminator(_number_or_array)]
VInitField = Annotated[Annotated[Literal["zero", "half", "uniform"], Tag("name")] | Annotated[Finite, Tag("number")]
                       | Annotated[ArrayRef, Tag("array")], Discriminator(_vinit_kind)]


PositiveField = Annotated[Annotated[PositiveFinite, Tag("number")] | Annotated[ArrayRef, Tag("array")],
                          Discriminator(_number_or_array)]
FiniteField = Annotated[Annotated[Finite, Tag("number")] | Annotated[ArrayRef, Tag("array")],
                        Discriminator(_number_or_array)]


class NeuronSchema(_Strict):
    threshold: ThresholdField
    reset: Literal["subtract", "zero"]
    v_init: VInitField
    v_init_seed: Annotated[int, Field(ge=0, lt=1 << 64)]
    leak_tau: PositiveField | None
    spike_cap: Annotated[int, Field(ge=1, lt=_BIG)] | None
    negative_spikes: bool
    readout: Literal["membrane", "spikes"]
    # version 2
    v_leak: FiniteField = 0.0
    v_reset: FiniteField = 0.0
    tau_syn: PositiveField | None = None
    reset_timing: Literal["immediate", "next_step"] = "immediate"


class PopulationSchema(_Strict):
    name: Name
    shape: Annotated[list[Dim], Field(min_length=1, max_length=8)]
    role: Literal["input", "hidden", "output"]
    metadata: dict[str, Any]
    bias: ArrayRef | None
    neuron: NeuronSchema | None = None


class _NoParams(_Strict):
    pass


class _WeightArrays(_Strict):
    weight: ArrayKey


class _FactorArrays(_Strict):
    factor: ArrayKey


class _ConvParams(_Strict):
    stride: Pair1
    padding: Pair0
    dilation: Pair1
    groups: Annotated[int, Field(ge=1, le=65536)]


class _PoolParams(_Strict):
    kernel: Pair1
    stride: Pair1
    padding: Pair0


class DenseSchema(_Strict):
    kind: Literal["dense"]
    params: _NoParams
    arrays: _WeightArrays


class Conv2dSchema(_Strict):
    kind: Literal["conv2d"]
    params: _ConvParams
    arrays: _WeightArrays


class AvgPool2dSchema(_Strict):
    kind: Literal["avgpool2d"]
    params: _PoolParams
    arrays: _NoParams


class FlattenSchema(_Strict):
    kind: Literal["flatten"]
    params: _NoParams
    arrays: _NoParams


class IdentitySchema(_Strict):
    kind: Literal["identity"]
    params: _NoParams
    arrays: _NoParams


class ScaleSchema(_Strict):
    kind: Literal["scale"]
    params: _NoParams
    arrays: _FactorArrays


class _Conv1dParams(_Strict):
    stride: Annotated[int, Field(ge=1, le=65536)]
    padding: Annotated[int, Field(ge=0, le=65536)]
    dilation: Annotated[int, Field(ge=1, le=65536)]
    groups: Annotated[int, Field(ge=1, le=65536)]


class _Pool1dParams(_Strict):
    kernel: Annotated[int, Field(ge=1, le=65536)]
    stride: Annotated[int, Field(ge=1, le=65536)]
    padding: Annotated[int, Field(ge=0, le=65536)]


class _ChannelSliceParams(_Strict):
    offset: Annotated[int, Field(ge=0, lt=_BIG)]
    channels: Annotated[int, Field(ge=1, lt=_BIG)]


class Conv1dSchema(_Strict):
    kind: Literal["conv1d"]
    params: _Conv1dParams
    arrays: _WeightArrays


class AvgPool1dSchema(_Strict):
    kind: Literal["avgpool1d"]
    params: _Pool1dParams
    arrays: _NoParams


class ChannelSliceSchema(_Strict):
    kind: Literal["channel_slice"]
    params: _ChannelSliceParams
    arrays: _NoParams


class _SpatialArrays(_Strict):
    rows: ArrayKey
    cols: ArrayKey | None = None


class SpatialLinearSchema(_Strict):
    kind: Literal["spatial_linear"]
    params: _NoParams
    arrays: _SpatialArrays


class _IndexArrays(_Strict):
    index: ArrayKey


class GatherSchema(_Strict):
    kind: Literal["gather"]
    params: _NoParams
    arrays: _IndexArrays


OpSchema = Annotated[DenseSchema | Conv2dSchema | AvgPool2dSchema | FlattenSchema | IdentitySchema | ScaleSchema
                     | Conv1dSchema | AvgPool1dSchema | ChannelSliceSchema | SpatialLinearSchema | GatherSchema,
                     Field(discriminator="kind")]


class ProjectionSchema(_Strict):
    source: Name
    target: Name
    ops: Annotated[list[OpSchema], Field(max_length=256)]
    delay: Annotated[int, Field(ge=0, le=65536)] = 0  # version 2


class NetworkSchema(_Strict):
    format: Literal["neurodeploy-ir"]
    version: Annotated[int, Field(ge=FIRST_VERSION, le=FORMAT_VERSION)]
    populations: Annotated[list[PopulationSchema], Field(min_length=2, max_length=100_000)]
    projections: Annotated[list[ProjectionSchema], Field(max_length=1_000_000)]
    metadata: dict[str, Any]


# --- reading -----------------------------------------------------------------------------------------


class _Parts:
    """network.json's bytes and arrays.npz as a :class:`SafeZip`, from a folder or a ``.zip``."""

    def __init__(self, path: Path):
        self.path = path
        self.handles: list = []
        self.arrays: SafeZip | None = None
        try:
            if path.is_dir():
                self._folder(path)
            else:
                self._archive(path)
        except BaseException:
            self.close()
            raise

    def _folder(self, path: Path) -> None:
        for name in (STRUCTURE_FILE, ARRAYS_FILE):
            if not (path / name).exists():
                raise IRFormatError(f"{path}: missing {name} (an IR folder holds {STRUCTURE_FILE} and {ARRAYS_FILE})")
        structure, info = open_regular(path / STRUCTURE_FILE, IRFormatError, STRUCTURE_FILE)
        self.handles.append(structure)
        arrays, arrays_info = open_regular(path / ARRAYS_FILE, IRFormatError, ARRAYS_FILE)
        self.handles.append(arrays)
        self.budget = Budget(info.st_size + arrays_info.st_size, IRFormatError, str(path))
        if info.st_size > MAX_STRUCTURE_BYTES:
            raise IRFormatError(f"{path / STRUCTURE_FILE}: {info.st_size:,} bytes, more than the "
                                f"{MAX_STRUCTURE_BYTES:,} allowed")
        try:
            self.structure = read_stream(structure, MAX_STRUCTURE_BYTES, IRFormatError, str(path / STRUCTURE_FILE))
        except OSError as err:
            raise IRFormatError(f"{path / STRUCTURE_FILE}: cannot be read ({err.strerror or err})") from None
        self.arrays = SafeZip(arrays, IRFormatError, str(path / ARRAYS_FILE), self.budget, what="npz archive")

    def _archive(self, path: Path) -> None:
        handle, info = open_regular(path, IRFormatError, "IR file")
        self.handles.append(handle)
        self.budget = Budget(info.st_size, IRFormatError, str(path))
        outer = SafeZip(handle, IRFormatError, str(path), self.budget, what="IR archive")
        self.handles.append(outer)
        for name in (STRUCTURE_FILE, ARRAYS_FILE):
            if name not in outer.members:
                raise IRFormatError(f"{path}: archive lacks {name}")
        extra = sorted(set(outer.members) - {STRUCTURE_FILE, ARRAYS_FILE})
        if extra:
            raise IRFormatError(f"{path}: archive holds {clip(extra[0])}, which is not part of an IR file (only "
                                f"{STRUCTURE_FILE} and {ARRAYS_FILE} are)")
        self.structure = outer.read(STRUCTURE_FILE, MAX_STRUCTURE_BYTES)
        arrays = outer.read(ARRAYS_FILE, self.budget.allowed)
        self.arrays = SafeZip(io.BytesIO(arrays), IRFormatError, f"{path}: {ARRAYS_FILE}", self.budget,
                              what="npz archive")

    def close(self) -> None:
        for handle in reversed(self.handles):
            handle.close()
        if self.arrays is not None:
            self.arrays.close()


def _check_header(path: Path, key: str, header: NpyHeader, slot: str) -> None:
    if header.dtype.str not in ARRAY_DTYPES:
        raise IRFormatError(f"{path}: {slot}: array {clip(key)} has dtype {header.dtype.str} (expected a "
                            "little-endian float or integer dtype)")
    if slot.endswith("factor") and header.dtype != np.float32:
        raise IRFormatError(f"{path}: {slot}: scale factor {clip(key)} has dtype {header.dtype.str} (expected "
                            "float32, the dtype the IR keeps scale factors in)")


class _Builder:
    """Builds the Network the schema describes, with arrays from ``lookup(key, slot)``."""

    def __init__(self, schema: NetworkSchema, lookup):
        self.schema = schema
        self.lookup = lookup

    def value(self, value, slot: str):
        return self.lookup(value.array, slot) if isinstance(value, ArrayRef) else value

    def network(self) -> Network:
        network = Network(metadata=dict(self.schema.metadata))
        for i, entry in enumerate(self.schema.populations):
            where = f"populations[{i}]"
            neuron = None
            if entry.neuron is not None:
                n = entry.neuron
                neuron = NeuronSpec(
                    threshold=self.value(n.threshold, f"{where}.neuron.threshold"), reset=n.reset,
                    v_init=self.value(n.v_init, f"{where}.neuron.v_init"), v_init_seed=n.v_init_seed,
                    leak_tau=self.value(n.leak_tau, f"{where}.neuron.leak_tau"), spike_cap=n.spike_cap,
                    negative_spikes=n.negative_spikes, readout=n.readout,
                    v_leak=self.value(n.v_leak, f"{where}.neuron.v_leak"),
                    v_reset=self.value(n.v_reset, f"{where}.neuron.v_reset"),
                    tau_syn=self.value(n.tau_syn, f"{where}.neuron.tau_syn"), reset_timing=n.reset_timing,
                )
            if entry.name in network.populations:
                raise IRValidationError(f"{where}: population {entry.name!r} appears twice")
            network.add_population(Population(
                name=entry.name, shape=tuple(entry.shape), role=entry.role, neuron=neuron,
                bias=None if entry.bias is None else self.value(entry.bias, f"{where}.bias"),
                metadata=dict(entry.metadata),
            ))
        for i, entry in enumerate(self.schema.projections):
            ops = []
            for j, op in enumerate(entry.ops):
                where = f"projections[{i}].ops[{j}]"
                arrays = {name: self.lookup(key, f"{where}.arrays.{name}") for name, key in op.arrays
                          if key is not None}
                params = {name: value for name, value in op.params}
                try:
                    ops.append(op_from_parts(op.kind, params, arrays))
                except IRValidationError as err:
                    raise IRValidationError(f"{where}: {err}") from None
            network.connect(entry.source, entry.target, ops, entry.delay)
        return network


def _structure(path: Path, data: bytes) -> NetworkSchema:
    structure = parse_json(data, IRFormatError, f"{path}: {STRUCTURE_FILE}")
    if not isinstance(structure, dict) or structure.get("format") != FORMAT_NAME:
        raise IRFormatError(f"{path}: format: not a {FORMAT_NAME} file")
    version = structure.get("version")
    if type(version) is not int or not FIRST_VERSION <= version <= FORMAT_VERSION:
        raise IRFormatError(f"{path}: version: format version {clip(version)} is not supported (this reads "
                            f"{FIRST_VERSION} to {FORMAT_VERSION})")
    if version == 1:
        _refuse_v2_fields(path, structure)
    try:
        return NetworkSchema.model_validate(structure)
    except ValidationError as err:
        message = pydantic_message(err)
        if "unknown kind" in message:
            message = message.replace("unknown kind", "unknown op kind")
        raise IRFormatError(f"{path}: {message}") from None


V2_NEURON_FIELDS = ("v_leak", "v_reset", "tau_syn", "reset_timing")


def _refuse_v2_fields(path: Path, structure: dict) -> None:
    """A version-1 file holds none of the fields version 2 added."""
    for kind, entries, fields in (("populations", structure.get("populations"), V2_NEURON_FIELDS),
                                  ("projections", structure.get("projections"), ("delay",))):
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            holder = entry.get("neuron") if kind == "populations" and isinstance(entry, dict) else entry
            found = [key for key in fields if isinstance(holder, dict) and key in holder]
            if found:
                raise IRFormatError(f"{path}: {kind}[{i}]: field {found[0]!r} needs format version 2, the file says 1")


def load_network(path: str | Path) -> Network:
    """Reads and validates an IR file written by :func:`save_network`, or a NIR file (HDF5), which
    :func:`neurodeploy.ir.nir.read_nir` reads (docs/nir.md)."""
    path = Path(path)
    check_regular(path, IRFormatError, "IR file or folder", folder_ok=True)  # a FIFO or device is never opened
    from neurodeploy.ir.nir import is_nir_file, read_nir  # lazy: the 'nir' package is optional

    if is_nir_file(path):
        return read_nir(path)
    parts = _Parts(path)
    try:
        return _load(path, parts)
    finally:
        parts.close()


def _load(path: Path, parts: _Parts) -> Network:
    schema = _structure(path, parts.structure)
    members = parts.arrays.members
    headers: dict[str, NpyHeader] = {}

    def header(key: str, slot: str) -> NpyHeader:
        member = f"{key}.npy"
        if member not in members:
            raise IRFormatError(f"{path}: {slot}: array {clip(key)} missing from {ARRAYS_FILE}")
        if key not in headers:
            headers[key] = parts.arrays.array_header(member)
        _check_header(path, key, headers[key], slot)
        return headers[key]

    def placeholder(key: str, slot: str) -> np.ndarray:
        found = header(key, slot)
        return np.broadcast_to(np.zeros((), found.dtype), found.shape)

    try:
        _Builder(schema, placeholder).network().validate(values=False)  # shapes and dtypes; nothing allocated
    except IRValidationError as err:
        raise IRFormatError(f"{path}: invalid network: {err}") from None
    unreferenced = sorted(set(members) - {f"{key}.npy" for key in headers})
    if unreferenced:
        raise IRFormatError(f"{path}: {ARRAYS_FILE} holds {clip(unreferenced[0])}, which no field of "
                            f"{STRUCTURE_FILE} refers to")
    for key, found in headers.items():
        parts.budget.charge(found.nbytes, f"array {clip(key)} ({found.describe()})")
    parts.budget.used -= sum(found.nbytes for found in headers.values())  # charged again as they are read
    arrays = {key: parts.arrays.read_array(f"{key}.npy", found) for key, found in headers.items()}
    try:
        return _Builder(schema, lambda key, slot: arrays[key]).network().validate()
    except IRValidationError as err:
        raise IRFormatError(f"{path}: invalid network: {err}") from None
