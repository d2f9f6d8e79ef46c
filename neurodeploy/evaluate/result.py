"""SimulationResult: the one result format every backend returns (``docs/semantics.md``).

Arrays (per test item n, step t = 1..T, class c, population p):
    readout          float32 [N, T, C]  output O(t) after step t (cumulative membrane or spike count)
    labels           int64   [N]
    spike_counts     float32 [N, T, P]  spikes emitted at step t by population p (|spikes| for signed)
    synaptic_events  float32 [N, T, P]  synaptic events caused by those spikes (spikes x fan-out)
    stop_times       int64   [N]        optional: 1-based exit step of runs with early exit (after it
                                        the readout is frozen and counts are zero)
    neuron_counts    float32 [N, M]     optional: spikes of every neuron over the whole run (|spikes| for
                                        signed), the populations of ``metadata["populations"]``
                                        concatenated in that order, each in C order of its shape
    recorded_spikes  int8    [N, T, R]  optional: the spikes (-1, 0 or 1) of every neuron of the populations of
                                        ``metadata["recorded_populations"]`` (name, size) at step t, those
                                        populations concatenated in that order (``RunOptions.record_spikes``)
Metadata (JSON): backend, T, dt_ms, profile, pipeline_delay, populations (name, role, size),
n_neurons, n_synapses, timings, and whatever the producer adds (ann_accuracy, model, ...).

Saved as one ``.npz`` (numeric arrays + the metadata as a JSON string; no pickle).

Memory: the evaluator works on item chunks (:func:`item_chunks`) of at most :data:`CHUNK_BYTES` of
temporaries, so what it allocates beyond the result grows with N x T by a few bytes per item and step
(the [N, T] curves it needs), not by float64 copies of the [N, T, C] readout.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neurodeploy.errors import NeurodeployError, ResultFormatError
from neurodeploy.safe_io import NpyHeader, atomic_write, open_zip_file, parse_json, pydantic_message

FORMAT_NAME = "neurodeploy-result"
FORMAT_VERSION = 1
_ARRAYS = {"readout": 3, "labels": 1, "spike_counts": 3, "synaptic_events": 3}
_OPTIONAL = ("stop_times", "neuron_counts", "recorded_spikes")
#: dtype kinds of every array: readout and counts numbers, labels and stop times integers
_KINDS = {"readout": "fiu", "labels": "iu", "spike_counts": "fiu", "synaptic_events": "fiu", "stop_times": "iu",
          "neuron_counts": "fiu", "recorded_spikes": "i"}
_NDIM = {**_ARRAYS, "stop_times": 1, "neuron_counts": 2, "recorded_spikes": 3}
_DTYPES = frozenset(np.dtype(t).str for t in ("<f2", "<f4", "<f8", "i1", "<i2", "<i4", "<i8", "u1", "<u2", "<u4",
                                              "<u8"))
_MAX_METADATA_BYTES = 64 << 20
_LOW_LEVEL_ERRORS = (OSError, EOFError, ValueError, zlib.error, MemoryError, OverflowError, RecursionError)
#: bytes of temporaries one item chunk of the evaluator may allocate (float64 copies of its readout)
CHUNK_BYTES = 16 << 20


def item_chunks(n_items: int, bytes_per_item: int, budget: int | None = None) -> Iterator[slice]:
    """Consecutive slices over ``n_items`` items, each holding as many items as fit ``budget`` bytes
    (default :data:`CHUNK_BYTES`) at ``bytes_per_item`` (at least one)."""
    size = max(1, (CHUNK_BYTES if budget is None else budget) // max(bytes_per_item, 1))
    for start in range(0, n_items, size):
        yield slice(start, min(start + size, n_items))


class _Loose(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


_Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
_Count = Annotated[int, Field(ge=0, lt=1 << 62)]


class _PopulationInfo(_Loose):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    role: Literal["input", "hidden", "output"]
    size: Annotated[int, Field(ge=1, lt=1 << 31)]


class _ExitPolicyInfo(_Loose):
    alpha: float | None
    threshold_log_odds: float | None  # may be infinite in memory (saved as null)


class ResultMetadata(_Loose):
    """What a result's metadata must say where it says it (producers may add other keys)."""

    backend: Annotated[str, Field(max_length=256)] | None = None
    T: Annotated[int, Field(ge=1, lt=1 << 31)] | None = None
    dt_ms: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    encoding: Annotated[str, Field(max_length=64)] | None = None
    populations: Annotated[list[_PopulationInfo], Field(max_length=100_000)] | None = None
    pipeline_delay: _Count | None = None
    n_neurons: _Count | None = None
    n_synapses: _Count | None = None
    ann_accuracy: _Fraction | None = None
    activation_sparsity: _Fraction | None = None
    weight_sparsity: _Fraction | None = None
    timings: dict[str, _NonNegative | None] | None = None
    exit_policy: _ExitPolicyInfo | None = None
    recorded_populations: Annotated[list[_PopulationInfo], Field(max_length=100_000)] | None = None


class ResultHeader(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    format: Literal["neurodeploy-result"]
    version: Annotated[int, Field(ge=FORMAT_VERSION, le=FORMAT_VERSION)]
    metadata: ResultMetadata


def _json_value(value):
    """Metadata as strict JSON types: numpy scalars and arrays as numbers and lists, non-finite floats
    as null (the project's JSON rule)."""
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist())
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class SimulationResult:
    readout: np.ndarray
    labels: np.ndarray
    spike_counts: np.ndarray
    synaptic_events: np.ndarray
    metadata: dict = field(default_factory=dict)
    stop_times: np.ndarray | None = None
    neuron_counts: np.ndarray | None = None
    recorded_spikes: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return int(self.labels.shape[0])

    @property
    def T(self) -> int:
        return int(self.readout.shape[1])

    @property
    def populations(self) -> list[dict]:
        return self.metadata.get("populations", [])

    def _describe(self) -> tuple[str, list[tuple[str, str]]]:
        """A title and (field, text) lines: shapes and metadata, never array contents."""
        def shape(name: str) -> str:
            array = getattr(self, name)
            return "-" if array is None else f"{array.dtype} {list(array.shape)}"

        meta = self.metadata
        where = ", ".join(f"{key} {meta[key]}" for key in ("backend", "profile", "device", "encoding") if meta.get(key))
        title = (f"SimulationResult: {self.n_items} items x {self.T} steps x {self.readout.shape[2]} classes"
                 f"{f' ({where})' if where else ''}")
        lines = [(name, shape(name)) for name in ("readout", "labels", "spike_counts", "synaptic_events",
                                                   "stop_times", "neuron_counts", "recorded_spikes")]
        if self.populations:
            lines.append(("populations", ", ".join(f"{p['name']} ({p['role']}, {p['size']})"
                                                   for p in self.populations)))
        if self.n_items and self.T:
            lines.append(("accuracy at T", f"{float((self.readout[:, -1].argmax(1) == self.labels).mean()):.4f}"))
        shown = ("ann_accuracy", "model", "dataset", "dt_ms", "pipeline_delay", "n_neurons", "n_synapses")
        lines += [(key, str(meta[key])) for key in shown if meta.get(key) is not None]
        other = [key for key in meta if key not in shown + ("backend", "profile", "device", "encoding", "populations")]
        if other:
            lines.append(("other metadata", ", ".join(other)))
        return title, lines

    def __repr__(self) -> str:
        title, lines = self._describe()
        width = max(len(name) for name, _ in lines)
        return "\n".join([title] + [f"  {name:<{width}}  {text}" for name, text in lines])

    def _repr_html_(self) -> str:
        from html import escape

        title, lines = self._describe()
        rows = "".join(f"<tr><th style='text-align:left'>{escape(name)}</th><td style='text-align:left'>"
                       f"{escape(text)}</td></tr>" for name, text in lines)
        return f"<table><caption>{escape(title)}</caption>{rows}</table>"

    def predictions(self) -> np.ndarray:
        """Predicted class at every step, ``[N, T]`` (argmax of O(t); ties go to the lowest class)."""
        return self.readout.argmax(axis=2)

    def correct(self, index: np.ndarray | None = None) -> np.ndarray:
        """``[N, T]`` bool: prediction at step t equals the label; with ``index`` only those items
        (``[len(index), T]``). Computed per item chunk: no [N, T] int64 predictions are made."""
        items = np.arange(self.n_items) if index is None else np.asarray(index)
        out = np.empty((len(items), self.T), dtype=bool)
        for rows in item_chunks(len(items), self.T * (self.readout.shape[2] * self.readout.itemsize + 8)):
            chunk = self.readout[rows] if index is None else self.readout[items[rows]]  # a copy with an index
            np.equal(chunk.argmax(axis=2), self.labels[items[rows], None], out=out[rows])
        return out

    def accuracy_curve(self) -> np.ndarray:
        """a(t) for t = 1..T as fractions in [0, 1], shape ``[T]`` (correct items counted per chunk)."""
        hits = np.zeros(self.T, dtype=np.int64)
        for rows in item_chunks(self.n_items, self.T * 9):
            hits += (self.readout[rows].argmax(axis=2) == self.labels[rows, None]).sum(axis=0)
        return hits / self.n_items

    def population_neuron_counts(self) -> dict[str, np.ndarray]:
        """``neuron_counts`` split per population: ``{name: [N, size]}``."""
        if self.neuron_counts is None:
            raise ResultFormatError("this result has no per-neuron counts (run with record_neuron_counts)")
        sizes = [p["size"] for p in self.populations]
        parts = np.split(self.neuron_counts, np.cumsum(sizes)[:-1], axis=1)
        return {p["name"]: part for p, part in zip(self.populations, parts, strict=True)}

    def population_recorded_spikes(self) -> dict[str, np.ndarray]:
        """``recorded_spikes`` split per recorded population: ``{name: [N, T, size]}``."""
        if self.recorded_spikes is None:
            raise ResultFormatError("this result recorded no spikes (run with record_spikes)")
        recorded = self.metadata.get("recorded_populations", [])
        parts = np.split(self.recorded_spikes, np.cumsum([p["size"] for p in recorded])[:-1], axis=2)
        return {p["name"]: part for p, part in zip(recorded, parts, strict=True)}

    def select(self, index: np.ndarray) -> SimulationResult:
        """A result holding only the items ``index`` (e.g. a validation or test part)."""
        return SimulationResult(self.readout[index], self.labels[index], self.spike_counts[index],
                                self.synaptic_events[index], dict(self.metadata),
                                *(None if a is None else a[index]
                                  for a in (self.stop_times, self.neuron_counts, self.recorded_spikes)))

    def exit_correct(self) -> np.ndarray:
        """``[N]`` bool: the prediction at each item's stop step is right (needs ``stop_times``)."""
        if self.stop_times is None:
            raise ResultFormatError("this result has no stop times (it was not run with early exit)")
        at_stop = self.readout[np.arange(self.n_items), self.stop_times - 1]
        return at_stop.argmax(axis=1) == self.labels

    @staticmethod
    def concatenate(parts: list[SimulationResult]) -> SimulationResult:
        """Joins per-batch results along the item axis (metadata of the first part; every part has the
        first one's shapes beyond the item axis, see :class:`ResultAssembler`)."""
        assembler = ResultAssembler(sum(part.n_items for part in parts))
        start = 0
        for part in parts:
            assembler.add(start, part)
            start += part.n_items
        return assembler.result()

    def validate(self, where: str = "result") -> SimulationResult:
        """Checks what the result says: array kinds and shapes agree ([N, T, C] readout, [N] labels in
        [0, C), [N, T, P] non-negative finite counts, stop times in [1, T]) and with the metadata where it
        speaks (T, one population per count column, per-neuron counts of their sizes, accuracies in
        [0, 1]); raises ResultFormatError naming the field."""
        present = {name: getattr(self, name) for name in _NDIM if getattr(self, name) is not None}
        for name, array in present.items():
            if not isinstance(array, np.ndarray):
                raise ResultFormatError(f"{where}: {name} must be a numpy array, got {type(array).__name__}")
            _check_kind(where, name, array.dtype, array.ndim)
        _check_shapes(where, {name: array.shape for name, array in present.items()})
        metadata = _check_metadata(where, self.metadata)
        _check_against_metadata(where, metadata, {name: array.shape for name, array in present.items()})
        for name, array in present.items():
            if not array.size:
                continue
            low = array.min()  # min and max propagate NaN: no [N, T, C] mask is needed to find one
            if array.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(array.max())):
                raise ResultFormatError(f"{where}: {name} contains NaN or infinite values")
            if name in ("spike_counts", "synaptic_events", "neuron_counts") and low < 0:
                raise ResultFormatError(f"{where}: {name} holds negative counts (min {low})")
            if name == "recorded_spikes" and (low < -1 or array.max() > 1):
                raise ResultFormatError(f"{where}: recorded_spikes holds values other than -1, 0 and 1")
        classes = self.readout.shape[2]
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= classes):
            bad = self.labels[(self.labels < 0) | (self.labels >= classes)][0]
            raise ResultFormatError(f"{where}: labels must lie in [0, {classes}) (the readout's classes), found {bad}")
        if self.stop_times is not None and self.stop_times.size and (
                self.stop_times.min() < 1 or self.stop_times.max() > self.T):
            raise ResultFormatError(f"{where}: stop_times must hold one step in [1, T={self.T}] per item")
        return self

    def save(self, path: str | Path) -> Path:
        """Writes the result as one ``.npz`` (added to a name without it), atomically: a temporary file
        renamed over ``path``. Metadata is written as strict JSON (non-finite numbers as null)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "metadata": _json_value(self.metadata)}
        optional = {name: getattr(self, name) for name in _OPTIONAL if getattr(self, name) is not None}
        with atomic_write(path) as handle:
            np.savez_compressed(handle, metadata_json=np.array(json.dumps(header, allow_nan=False)),
                                **{name: getattr(self, name) for name in _ARRAYS}, **optional)
        return path

    @staticmethod
    def load(path: str | Path) -> SimulationResult:
        """Reads a result strictly: a regular file; a zip of stored or deflated members, each read up
        to the size it declares; every array's header (dtype, byte order, shape) checked against the
        others and the size limit before it is read; the metadata against its schema; then the values
        (:meth:`validate`). Every failure, whatever its cause, is one ResultFormatError."""
        path = Path(path)
        try:
            return _load(path)
        except NeurodeployError as err:
            if isinstance(err, ResultFormatError):
                raise
            raise ResultFormatError(str(err)) from None
        except _LOW_LEVEL_ERRORS as err:
            raise ResultFormatError(f"{path}: not a readable result file ({type(err).__name__}: "
                                    f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None
        except Exception as err:  # last resort, so a resume always simulates an unreadable batch again
            raise ResultFormatError(f"{path}: not a readable result file (unexpected {type(err).__name__}: "
                                    f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None


class ResultAssembler:
    """Joins the per-batch results of a run of ``n_items`` items as they arrive, in place.

    The first part fixes every array's shape beyond the item axis and the metadata; arrays for the
    whole run are allocated once and each part is copied into its rows, so a run holds the whole result
    plus the part at hand, never every part and their concatenation. A run of one part keeps that
    part's arrays. dtypes are promoted as ``np.concatenate`` would; optional arrays are kept when every
    part has them.
    """

    def __init__(self, n_items: int):
        self.n_items = n_items
        #: shape beyond the item axis of every array of the first part, None where it has none
        self.shapes: dict[str, tuple[int, ...] | None] | None = None
        self.metadata: dict = {}
        self.joined: dict[str, np.ndarray | None] | SimulationResult | None = None
        self.filled = 0

    def fits(self, part: SimulationResult) -> bool:
        """Whether ``part`` has the first part's shapes beyond the item axis (True before the first)."""
        if self.shapes is None:
            return True
        arrays = {name: getattr(part, name) for name in _NDIM}
        return all(self.shapes[name] == array.shape[1:]
                   for name, array in arrays.items() if array is not None and self.shapes[name] is not None)

    def add(self, start: int, part: SimulationResult) -> None:
        """Places ``part`` at items ``start .. start + part.n_items - 1``; raises ResultFormatError when it
        does not fit (:meth:`fits`) or leaves the run's items."""
        if not self.fits(part):
            raise ResultFormatError("a batch's result differs from the first batch's in shape")
        if start < 0 or start + part.n_items > self.n_items or isinstance(self.joined, SimulationResult):
            raise ResultFormatError(f"a batch of {part.n_items} items at item {start} leaves the run's "
                                    f"{self.n_items} items")
        if self.shapes is None:
            arrays = {name: getattr(part, name) for name in _NDIM}
            self.shapes = {name: None if array is None else array.shape[1:] for name, array in arrays.items()}
            self.metadata = dict(part.metadata)
            if part.n_items == self.n_items:
                self.joined, self.filled = part, part.n_items
                return
            self.joined = {name: None if array is None else np.empty((self.n_items, *array.shape[1:]), array.dtype)
                           for name, array in arrays.items()}
        for name, target in self.joined.items():
            source = getattr(part, name)
            if source is None:
                self.joined[name] = None
                continue
            if target is None:
                continue
            if not np.can_cast(source.dtype, target.dtype):  # a wider batch: widen the whole, as concatenate does
                target = self.joined[name] = target.astype(np.result_type(target.dtype, source.dtype))
            target[start:start + part.n_items] = source
        self.filled += part.n_items

    def result(self) -> SimulationResult:
        """The joined result (metadata of the first part); raises ResultFormatError before every item
        arrived."""
        if self.joined is None or self.filled != self.n_items:
            raise ResultFormatError(f"{self.filled} of {self.n_items} items arrived")
        if isinstance(self.joined, SimulationResult):
            return self.joined
        return SimulationResult(**self.joined, metadata=self.metadata)


def _check_kind(where: str, name: str, dtype: np.dtype, ndim: int) -> None:
    if dtype.kind not in _KINDS[name]:
        expected = "integers" if _KINDS[name] == "iu" else "numbers"
        raise ResultFormatError(f"{where}: {name} has dtype {dtype.str} (expected {expected})")
    if ndim != _NDIM[name]:
        raise ResultFormatError(f"{where}: {name} must be a {_NDIM[name]}-d array, got {ndim}-d")


def _check_shapes(where: str, shapes: dict[str, tuple[int, ...]]) -> None:
    """Shapes agree: N items everywhere, T steps in readout and counts, C >= 1 classes, P populations."""
    for name in _ARRAYS:
        if name not in shapes:
            raise ResultFormatError(f"{where}: missing array {name!r}")
    n, steps, classes = shapes["readout"]
    for name, shape in shapes.items():
        if shape[0] != n:
            raise ResultFormatError(f"{where}: {name} has {shape[0]} items, readout has {n}")
    if steps < 1 or classes < 1:
        raise ResultFormatError(f"{where}: readout of shape {list(shapes['readout'])} needs T >= 1 and C >= 1")
    for name in ("spike_counts", "synaptic_events", "recorded_spikes"):
        if name in shapes and shapes[name][1] != steps:
            raise ResultFormatError(f"{where}: {name} has {shapes[name][1]} steps, readout {steps}")
    if shapes["synaptic_events"][2] != shapes["spike_counts"][2]:
        raise ResultFormatError(f"{where}: synaptic_events has {shapes['synaptic_events'][2]} populations, "
                                f"spike_counts {shapes['spike_counts'][2]}")


def _check_metadata(where: str, metadata) -> ResultMetadata:
    if not isinstance(metadata, dict):
        raise ResultFormatError(f"{where}: metadata must be a JSON object, got {type(metadata).__name__}")
    try:
        return ResultMetadata.model_validate(_json_value(metadata))
    except ValidationError as err:
        raise ResultFormatError(f"{where}: metadata.{pydantic_message(err)}") from None


def _check_against_metadata(where: str, metadata: ResultMetadata, shapes: dict[str, tuple[int, ...]]) -> None:
    steps, populations = shapes["readout"][1], shapes["spike_counts"][2]
    if metadata.T is not None and steps != metadata.T:
        raise ResultFormatError(f"{where}: metadata.T is {metadata.T}, the arrays hold {steps} steps")
    if metadata.populations is not None:
        if len(metadata.populations) != populations:
            raise ResultFormatError(f"{where}: metadata.populations lists {len(metadata.populations)} populations, "
                                    f"spike_counts has {populations}")
        if "neuron_counts" in shapes:
            expected = sum(p.size for p in metadata.populations)
            if shapes["neuron_counts"][1] != expected:
                raise ResultFormatError(f"{where}: neuron_counts has {shapes['neuron_counts'][1]} neurons per item, "
                                        f"the populations have {expected}")
    if "recorded_spikes" in shapes and metadata.recorded_populations is not None:
        expected = sum(p.size for p in metadata.recorded_populations)
        if shapes["recorded_spikes"][2] != expected:
            raise ResultFormatError(f"{where}: recorded_spikes has {shapes['recorded_spikes'][2]} neurons per step, "
                                    f"metadata.recorded_populations {expected}")


def _load(path: Path) -> SimulationResult:
    archive, _ = open_zip_file(path, ResultFormatError, "result file")
    with archive:
        names = {name[:-4]: name for name in archive.members if name.endswith(".npy")}
        unknown = sorted(set(archive.members) - {f"{n}.npy" for n in ("metadata_json", *_NDIM)})
        if unknown:
            raise ResultFormatError(f"{path}: holds {unknown[0]!r}, which is not part of a result file")
        for name in ("metadata_json", *_ARRAYS):
            if name not in names:
                raise ResultFormatError(f"{path}: missing array {name!r}")
        headers: dict[str, NpyHeader] = {name: archive.array_header(member) for name, member in names.items()}
        meta = headers.pop("metadata_json")
        if meta.dtype.kind != "U" or meta.shape != () or meta.nbytes > _MAX_METADATA_BYTES:
            raise ResultFormatError(f"{path}: metadata_json must be one string of at most {_MAX_METADATA_BYTES:,} "
                                    f"bytes, got {meta.describe()}")
        for name, found in headers.items():
            if found.dtype.str not in _DTYPES:
                raise ResultFormatError(f"{path}: {name} has dtype {found.dtype.str} (expected little-endian "
                                        "numbers)")
            _check_kind(str(path), name, found.dtype, len(found.shape))
        _check_shapes(str(path), {name: found.shape for name, found in headers.items()})
        as_int64 = headers["labels"].size * 8 if headers["labels"].dtype != np.int64 else 0
        archive.budget.charge(sum(found.nbytes for found in headers.values()) + meta.nbytes + as_int64, "its arrays")
        archive.budget.used = 0  # charged again as they are read
        text = str(archive.read_array(names["metadata_json"], meta)[()])
        header = parse_json(text.encode("utf-8", "surrogatepass"), ResultFormatError, f"{path}: metadata_json")
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME or header.get("version") != \
                FORMAT_VERSION or type(header.get("version")) is not int:
            raise ResultFormatError(f"{path}: not a {FORMAT_NAME} v{FORMAT_VERSION} file")
        try:
            checked = ResultHeader.model_validate(header)
        except ValidationError as err:
            raise ResultFormatError(f"{path}: {pydantic_message(err)}") from None
        _check_against_metadata(str(path), checked.metadata, {name: found.shape for name, found in headers.items()})
        arrays = {name: archive.read_array(names[name], found) for name, found in headers.items()}
    labels = arrays.pop("labels").astype(np.int64, copy=False)
    return SimulationResult(labels=labels, metadata=header["metadata"], **arrays).validate(str(path))
