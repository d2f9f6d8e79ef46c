"""Seeded fuzzing of every file kind neurodeploy reads: IR files, results, dataset folders, model files.

Each case is a valid file mutated by one to three seeded operators (a JSON field given a value of
another type or out of range, a field dropped or added, an array's dtype, byte order, shape or values
changed, an ``.npy`` header that lies, a zip member compressed with another method, encrypted,
repeated or inflating to 1 GiB, a truncated or bit-flipped file, deeply nested JSON, a FIFO or
``/dev/urandom`` in the file's place, ...). Its reader must then either refuse it with one
:class:`~neurodeploy.errors.NeurodeployError` line, or accept it with the meaning the file states:

* ``refused``    one NeurodeployError, one line (fine);
* ``accepted``   and the meaning checks passed (fine): the object read equals what a plain, permissive
  reading of the bytes says (IR: re-saved and compared field by field and array by array; results:
  every array and the metadata; data: every pixel / 255 and every label, the class count) and obeys
  the documented invariants, and it can be used (an accepted network simulates two steps, an
  accepted result is evaluated, an accepted model runs forward);
* ``traceback``  any other exception, in reading or in use (a defect);
* ``multiline``  a NeurodeployError whose message spans lines (a defect);
* ``changed``    accepted with another meaning than the file's (a defect);
* ``hang``       no answer within :data:`HANG_S` seconds (a defect);
* ``memory``     more than 1 GiB allocated while reading a file under 10 MB (a defect, ``tracemalloc``).

``python tests/fuzz/fuzzlib.py --cases 2000`` runs the harness outside pytest and prints the table.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import copy
import functools
import gzip
import io
import json
import os
import pickle
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import tracemalloc
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from neurodeploy.errors import NeurodeployError

HANG_S = 10
MEMORY_LIMIT = 1 << 30
SMALL_FILE = 10 << 20
#: share of NEURODEPLOY_FUZZ_CASES per file kind
SHARES = {"ir": 0.5, "result": 0.3, "data": 0.15, "model": 0.05}
DEFAULT_CASES = 300
DEFECTS = ("traceback", "multiline", "changed", "hang", "memory")


class Hang(BaseException):
    """Raised by the alarm when a case runs past HANG_S (a BaseException so no reader swallows it)."""


@contextlib.contextmanager
def deadline(seconds: int):
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def ring(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Case:
    kind: str
    index: int
    operators: list[str]
    path: Path
    expect: dict = field(default_factory=dict)  # what the generator knows about the file's meaning


@dataclass
class Report:
    kind: str
    outcomes: Counter = field(default_factory=Counter)
    defects: list[str] = field(default_factory=list)
    peak_bytes: int = 0
    largest_file: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        counts = ", ".join(f"{k} {self.outcomes[k]}" for k in ("accepted", "refused", *DEFECTS))
        return (f"{self.kind:7s} {sum(self.outcomes.values()):5d} files: {counts}; peak {self.peak_bytes / 2**20:.0f} "
                f"MiB while reading, {self.seconds:.1f} s")


# --- raw zip writing (full control over methods, flags, repeated names, lying sizes) ---------------------


@dataclass
class Member:
    name: str
    data: bytes  # uncompressed
    method: int = zipfile.ZIP_STORED
    flags: int = 0
    raw: bytes | None = None  # already compressed payload (then size and crc must be given)
    size: int | None = None
    crc: int | None = None


def _compress(data: bytes, method: int) -> bytes:
    if method == zipfile.ZIP_STORED:
        return data
    if method == zipfile.ZIP_DEFLATED:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if method == zipfile.ZIP_BZIP2:
        return bz2.compress(data)
    if method == zipfile.ZIP_LZMA:
        c = zipfile.LZMACompressor()
        return c.compress(data) + c.flush()
    return data


def raw_zip(members: list[Member]) -> bytes:
    out = io.BytesIO()
    central = []
    for m in members:
        payload = m.raw if m.raw is not None else _compress(m.data, m.method)
        size = m.size if m.size is not None else len(m.data)
        crc = m.crc if m.crc is not None else zlib.crc32(m.data)
        name = m.name.encode()
        offset = out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, m.flags, m.method, 0, 0x21, crc, len(payload),
                              size, len(name), 0))
        out.write(name)
        out.write(payload)
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, m.flags, m.method, 0, 0x21, crc,
                                   len(payload), size, len(name), 0, 0, 0, 0, 0, offset) + name)
    start = out.tell()
    for entry in central:
        out.write(entry)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


_BOMBS: dict[bytes, tuple[bytes, int, int]] = {}


def bomb(prefix: bytes = b"", size: int = 1 << 30) -> Member:
    """A deflated member of ``prefix`` + zeros, ``size`` bytes in all (about 1 MB compressed)."""
    key = prefix + size.to_bytes(8, "little")
    if key not in _BOMBS:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts = [c.compress(prefix)]
        crc = zlib.crc32(prefix)
        zeros = bytes(1 << 20)
        left = size - len(prefix)
        while left > 0:
            chunk = zeros[: min(len(zeros), left)]
            parts.append(c.compress(chunk))
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
        parts.append(c.flush())
        _BOMBS[key] = (b"".join(parts), crc, size)
    raw, crc, size = _BOMBS[key]
    return Member("", b"", zipfile.ZIP_DEFLATED, raw=raw, size=size, crc=crc)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def load_member(data: bytes) -> np.ndarray | None:
    """The array of an ``.npy`` member the generator wrote (None once a mutation made it unreadable)."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=True)
    except Exception:
        return None


def npy_header(descr: str, shape: tuple, fortran: bool = False, payload: bytes = b"") -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1") + payload


def npy_fields(data: bytes) -> tuple[np.dtype, tuple, int] | None:
    """dtype, shape and header length of an ``.npy`` member (None if unreadable)."""
    try:
        stream = io.BytesIO(data)
        version = np.lib.format.read_magic(stream)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(stream)
        return dtype, shape, stream.tell()
    except Exception:
        return None


def set_flag_bits(data: bytes, bit: int) -> bytes:
    """Sets ``bit`` in the flags of every local and central zip header (e.g. 1: encrypted)."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := out.find(signature, start)) >= 0:
            flags = struct.unpack_from("<H", out, found + offset)[0]
            struct.pack_into("<H", out, found + offset, flags | bit)
            start = found + 4
    return bytes(out)


def npz_members(arrays: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> list[Member]:
    return [Member(f"{key}.npy", data, method) for key, data in arrays.items()]


# --- generic mutation helpers -------------------------------------------------------------------------

VALUES = [True, False, None, 0, -1, 1, 2, 1.5, -2.5, 0.0, 2**31, 2**63, 10**30, 1e308, "abc", "", "false", "true",
          "1", [], {}, [1, 2, 3], [1], [0, 0], [-1, 2], ["abc"], {"array": "nope"}, "subtract", "zero", "spikes",
          "membrane", "hidden", "input", "output", "dense", "conv2d", "uniform", [[1]], 3, 64]


def json_paths(value, prefix=()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += json_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += json_paths(child, prefix + (index,))
    return paths


def get_path(value, path):
    for part in path:
        value = value[part]
    return value


def set_path(value, path, new) -> None:
    get_path(value, path[:-1])[path[-1]] = new


def delete_path(value, path) -> None:
    parent = get_path(value, path[:-1])
    del parent[path[-1]]


def variant(rng: random.Random, old):
    """A value related to ``old``: another type with the same look, off by a bit, or from VALUES."""
    choices = [rng.choice(VALUES)]
    if isinstance(old, bool):
        choices += [int(old), str(old).lower(), not old]
    elif isinstance(old, int):
        choices += [float(old), old + 0.5, -old, str(old), old * 10**6, 0, [old], old + 1]
    elif isinstance(old, float):
        choices += [int(old), -old, str(old), old * 1e30, 0.0, [old]]
    elif isinstance(old, str):
        choices += [old.upper(), old + "x", old[:-1], 1, None, [old]]
    elif isinstance(old, list):
        choices += [old + old[-1:] if old else [1], old[:-1], [str(v) for v in old], tuple(old) and old[::-1],
                    [v + 0.5 if isinstance(v, int) and not isinstance(v, bool) else v for v in old],
                    [-v if isinstance(v, int | float) and not isinstance(v, bool) else v for v in old], {}]
    elif isinstance(old, dict):
        choices += [[], None, {**old, "unknown_field": 1}, {}]
    return copy.deepcopy(rng.choice(choices))


def mutate_json(rng: random.Random, doc, protect: tuple = ()) -> str:
    """One random edit of a JSON document in place; returns the operator's name."""
    paths = [p for p in json_paths(doc) if p and not any(p[:len(q)] == q for q in protect)]
    path = rng.choice(paths)
    op = rng.choice(["set", "set", "set", "delete", "add"])
    if op == "set":
        set_path(doc, path, variant(rng, get_path(doc, path)))
        return f"set {'/'.join(map(str, path))}"
    if op == "delete":
        parent = get_path(doc, path[:-1])
        if isinstance(parent, dict | list):
            delete_path(doc, path)
        return f"delete {'/'.join(map(str, path))}"
    target = get_path(doc, path[:-1])
    if isinstance(target, dict):
        target[rng.choice(["extra", "Name", "weights", "role2", "threshold_"])] = rng.choice(VALUES)
    elif isinstance(target, list):
        target.append(copy.deepcopy(rng.choice(target)) if target else 1)
    return f"add at {'/'.join(map(str, path[:-1]))}"


def mutate_array(rng: random.Random, array: np.ndarray) -> tuple[np.ndarray, str]:
    op = rng.choice(["dtype", "dtype", "shape", "shape", "values", "values", "empty"])
    if op == "dtype":
        dtype = rng.choice(["<f8", "<f2", "<i4", "<i8", "u1", "?", "<c8", ">f4", ">f8", ">i8", "<U3", "O", "<f4"])
        if dtype == "O":
            out = np.empty(array.shape, object)
            out[...] = 1.0
            return out, "dtype object"
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return array.astype(dtype), f"dtype {dtype}"
    if op == "shape":
        choice = rng.choice(["flat", "extra", "transpose", "drop", "grow", "scalar"])
        if choice == "flat":
            return array.reshape(-1), "shape flattened"
        if choice == "extra":
            return array[None], "shape extra axis"
        if choice == "transpose":
            return np.ascontiguousarray(array.T), "shape transposed"
        if choice == "drop" and array.ndim and array.shape[0] > 1:
            return array[:-1], "shape one item less"
        if choice == "grow" and array.ndim:
            return np.concatenate([array, array[:1]]), "shape one item more"
        return np.asarray(array.reshape(-1)[:1].reshape(()) if array.size else np.zeros(())), "shape scalar"
    if op == "values":
        out = array.copy()
        if out.size == 0:
            return out, "values (empty)"
        flat = out.reshape(-1)
        value = rng.choice([np.nan, np.inf, -np.inf, -1, -5, 0, 1e38, 2**31 - 1, 99, 255, 0.5])
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                flat[rng.randrange(flat.size)] = value
            except (ValueError, OverflowError, TypeError):  # NaN into integers, 2**31 into bytes
                return out, f"value {value} (not representable)"
        return out, f"value {value}"
    shape = (0,) + array.shape[1:] if array.ndim else (0,)
    return np.zeros(shape, array.dtype), "empty array"


def lying_header(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """An ``.npy`` member whose header declares something else than its payload holds."""
    fields = npy_fields(data)
    if fields is None:
        return data, "header (unreadable)"
    dtype, shape, start = fields
    payload = data[start:]
    choice = rng.choice(["huge", "negative", "bigger", "fortran", "garbage", "version", "descr"])
    if choice == "huge":
        return npy_header(dtype.str, (10**6, 10**6), payload=payload), "header declares 10^12 elements"
    if choice == "negative":
        return npy_header(dtype.str, tuple(-d for d in shape) or (-1,), payload=payload), "header negative shape"
    if choice == "bigger":
        return npy_header(dtype.str, tuple(d + 1 for d in shape) or (2,), payload=payload), "header one more"
    if choice == "fortran":
        return npy_header(dtype.str, shape, True, payload), "header fortran order"
    if choice == "garbage":
        return data[:8] + b"\xff\xff" + b"{'descr': os.system('x')}" + payload, "header garbage"
    if choice == "version":
        return b"\x93NUMPY\x03\x00" + data[8:], "header version 3"
    return npy_header("[('a', '<f4')]" if rng.random() < 0.5 else "<V4", shape, payload=payload), "header descr"


def byte_damage(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    choice = rng.choice(["truncate", "flip", "flip", "zero", "append"])
    if choice == "truncate":
        return data[: rng.randrange(len(data))], "truncated"
    if choice == "append":
        return data + os.urandom(rng.randrange(1, 64)), "trailing bytes"
    out = bytearray(data)
    for _ in range(rng.randrange(1, 8)):
        i = rng.randrange(len(out))
        out[i] = rng.randrange(256) if choice == "flip" else 0
    return bytes(out), f"bytes {choice}ped" if choice == "flip" else "bytes zeroed"


def special_file(rng: random.Random, path: Path) -> str | None:
    """Replaces ``path`` by a FIFO, a device, a folder, a dangling or looping link; None if impossible."""
    choices = ["urandom", "zero", "folder", "dangling", "loop", "empty"] + (["fifo"] * 3 if hasattr(os, "mkfifo")
                                                                             else [])
    choice = rng.choice(choices)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if choice == "fifo":
        os.mkfifo(path)
    elif choice in ("urandom", "zero"):
        if not Path(f"/dev/{choice}").exists():
            path.write_bytes(b"")
            return "empty file"
        path.symlink_to(f"/dev/{choice}")
    elif choice == "folder":
        path.mkdir()
    elif choice == "dangling":
        path.symlink_to(path.with_name("nowhere"))
    elif choice == "loop":
        path.symlink_to(path)
    else:
        path.write_bytes(b"")
    return f"special file: {choice}"


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- comparisons ------------------------------------------------------------------------------------


def same(a, b, where: str = "") -> str | None:
    """None when ``a`` and ``b`` say the same (numbers by value, bools and strings exactly, arrays by
    dtype, shape and bytes); else where they differ."""
    if isinstance(a, bool) or isinstance(b, bool):
        return None if type(a) is type(b) and a == b else f"{where}: {a!r} vs {b!r}"
    if isinstance(a, int | float) and isinstance(b, int | float):
        return None if a == b else f"{where}: {a!r} vs {b!r}"
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return f"{where}: array vs {type(b).__name__}"
        if a.dtype.newbyteorder("=") != b.dtype.newbyteorder("=") or a.dtype.byteorder == ">" or b.dtype.byteorder \
                == ">" or a.shape != b.shape:
            return f"{where}: {a.dtype.str} {a.shape} vs {b.dtype.str} {b.shape}"
        return None if np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes() else f"{where}: values"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{where}: keys {sorted(map(str, set(a) ^ set(b)))}"
        for key in a:
            found = same(a[key], b[key], f"{where}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = same(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if type(a) is type(b) and a == b else f"{where}: {a!r:.40} vs {b!r:.40}"


# --- IR cases ---------------------------------------------------------------------------------------


def base_networks():
    from neurodeploy.ir import AvgPool2d, Conv2d, Dense, Flatten, Identity, Network, NeuronSpec, Population, Scale
    from neurodeploy.ir.ops import OP_TYPES

    rng = np.random.default_rng(0)
    conv = Network(metadata={"source": "fuzz", "notes": {"a": [1, 2.5, None, "x"]}})
    conv.add_population(Population("input", (2, 6, 6), "input"))
    conv.add_population(Population("c1", (4, 6, 6), "hidden", NeuronSpec(
        threshold=np.linspace(0.5, 1.5, 4).astype(np.float32), reset="subtract", v_init="uniform", v_init_seed=7,
        spike_cap=3, negative_spikes=True), bias=rng.normal(size=4).astype(np.float32), metadata={"layer": 1}))
    conv.add_population(Population("d1", (8,), "hidden", NeuronSpec(
        threshold=rng.uniform(0.5, 1.5, 8).astype(np.float32), reset="zero",
        v_init=rng.uniform(0, 0.5, 8).astype(np.float32), leak_tau=20.0)))
    conv.add_population(Population("output", (3,), "output", NeuronSpec(readout="membrane", v_init=0.25)))
    conv.connect("input", "c1", [Conv2d(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), 1, 1, 1, 2)])
    conv.connect("c1", "d1", [AvgPool2d(2, 2), Flatten(), Dense(rng.normal(size=(8, 36)).astype(np.float32)),
                              Scale(np.float32(0.5))])
    conv.connect("d1", "output", [Dense(rng.normal(size=(3, 8)).astype(np.float32))])
    conv.connect("input", "d1", [Flatten(), Dense(rng.normal(size=(8, 72)).astype(np.float32))])
    dense = Network(metadata={})
    dense.add_population(Population("input", (5,), "input"))
    dense.add_population(Population("h", (4,), "hidden", NeuronSpec(threshold=1.0, v_init="half")))
    dense.add_population(Population("h2", (4,), "hidden", NeuronSpec(threshold=0.75)))
    dense.add_population(Population("output", (3,), "output", NeuronSpec(readout="spikes", threshold=2)))
    dense.connect("input", "h", [Dense(rng.normal(size=(4, 5)))])  # float64 weights
    dense.connect("h", "h2", [Identity(), Scale(np.linspace(1, 2, 4).astype(np.float32))])
    dense.connect("h2", "output", [Dense(rng.normal(size=(3, 4)).astype(np.float32))])
    ops1d = None
    if {"conv1d", "avgpool1d", "channel_slice"} <= set(OP_TYPES):
        ops1d = Network(metadata={"kind": "1d"})
        ops1d.add_population(Population("input", (2, 8), "input"))
        ops1d.add_population(Population("cat", (5, 8), "hidden", NeuronSpec(threshold=np.full(5, 0.8, np.float32))))
        ops1d.add_population(Population("output", (2,), "output", NeuronSpec()))
        ops1d.connect("input", "cat", [OP_TYPES["channel_slice"](0, 5)])
        ops1d.connect("input", "cat", [OP_TYPES["conv1d"](rng.normal(size=(3, 2, 3)).astype(np.float32), 1, 1),
                                       OP_TYPES["channel_slice"](2, 5)])
        ops1d.connect("cat", "output", [OP_TYPES["avgpool1d"](2, 2), Flatten(),
                                        Dense(rng.normal(size=(2, 20)).astype(np.float32))])
    return [n.validate() for n in (conv, dense, ops1d) if n is not None]


def ir_parts(network) -> tuple[dict, dict[str, bytes]]:
    from neurodeploy.ir.io import _to_parts

    structure, arrays = _to_parts(network)
    return structure, {key: npy_bytes(np.asarray(value)) for key, value in arrays.items()}


def write_ir(path: Path, structure_bytes: bytes, arrays: list[Member], layout: str, outer_method: int,
             outer_extra: list[Member] | None = None) -> None:
    inner = raw_zip(arrays)
    if layout == "folder":
        path.mkdir()
        (path / "network.json").write_bytes(structure_bytes)
        (path / "arrays.npz").write_bytes(inner)
    else:
        members = [Member("network.json", structure_bytes, outer_method), Member("arrays.npz", inner, outer_method)]
        path.write_bytes(raw_zip(members + (outer_extra or [])))


def ir_text(rng: random.Random, choice: str, text: str) -> bytes:
    """network.json's text, spoiled as ``choice`` says."""
    if choice == "deep":
        return text[:-1].encode() + b', "deep": ' + deep_json(rng.choice([100, 10**5])) + b"}"
    if choice == "nan":
        return text.replace("1.0", "NaN", 1).encode()
    if choice == "inf":
        return text.replace("1.0", "1e999", 1).encode()
    if choice == "dup":
        return text.replace('"version": 1', '"version": 1, "version": 1', 1).replace(
            '"role": "hidden"', '"role": "hidden", "role": "output"', 1).encode()
    if choice == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if choice == "latin1":
        return text.replace('"source"', '"s\u00f6urce"').encode("latin1", "replace") + b"\xff"
    if choice == "bigint":
        return text.replace('"v_init_seed": 7', '"v_init_seed": ' + "9" * 5000, 1).encode()
    if choice == "garbage":
        return os.urandom(rng.randrange(1, 200))
    return b""


def make_ir_case(rng: random.Random, folder: Path, index: int, bases) -> Case:
    structure, arrays = copy.deepcopy(rng.choice(bases))
    layout = rng.choice(["zip", "zip", "zip", "folder"])
    path = folder / (f"ir{index}.zip" if layout == "zip" else f"ir{index}")
    ops: list[str] = []
    outer_method, inner_method = zipfile.ZIP_STORED, zipfile.ZIP_STORED
    structure_text: bytes | None = None
    members_extra: list[Member] = []
    outer_extra: list[Member] = []
    post: Callable[[bytes], bytes] | None = None
    special = False
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        family = rng.choices(["json", "array", "header", "zip", "text", "special", "bomb", "ref"],
                             [30, 20, 8, 10, 6, 3, 3, 5])[0]
        if family == "json":
            ops.append(mutate_json(rng, structure))
        elif family == "array" and arrays:
            key = rng.choice(sorted(arrays))
            array = load_member(arrays[key])
            if array is not None:
                mutated, name = mutate_array(rng, array)
                arrays[key] = npy_bytes(mutated)
                ops.append(f"array {key}: {name}")
        elif family == "header" and arrays:
            key = rng.choice(sorted(arrays))
            arrays[key], name = lying_header(rng, arrays[key])
            ops.append(f"array {key}: {name}")
        elif family == "zip":
            choice = rng.choice(["deflate", "bzip2", "lzma", "encrypt", "repeat", "extra", "missing", "damage",
                                 "inner-deflate", "unreferenced", "aes"])
            if choice == "deflate":
                outer_method = zipfile.ZIP_DEFLATED
            elif choice == "aes":
                outer_method = 99
            elif choice == "bzip2":
                outer_method = zipfile.ZIP_BZIP2 if rng.random() < 0.5 else outer_method
                inner_method = zipfile.ZIP_BZIP2 if outer_method != zipfile.ZIP_BZIP2 else inner_method
            elif choice == "lzma":
                inner_method = zipfile.ZIP_LZMA
            elif choice == "inner-deflate":
                inner_method = zipfile.ZIP_DEFLATED
            elif choice == "encrypt":
                post = lambda data: set_flag_bits(data, 1)  # noqa: E731
            elif choice == "repeat" and arrays:
                key = rng.choice(sorted(arrays))
                members_extra.append(Member(f"{key}.npy", npy_bytes(np.zeros(3, np.float32))))
            elif choice == "extra":
                outer_extra.append(Member(rng.choice(["README", "network.json", "arrays.npz", "x/"]), b"hello"))
            elif choice == "missing" and arrays:
                arrays.pop(rng.choice(sorted(arrays)))
            elif choice == "damage":
                post = lambda data: byte_damage(rng, data)[0]  # noqa: E731
            elif choice == "unreferenced":
                members_extra.append(Member("spare.npy", npy_bytes(np.arange(rng.randrange(1, 100), dtype=np.float32))))
            ops.append(f"zip {choice}")
        elif family == "text":
            choice = rng.choice(["deep", "nan", "inf", "dup", "bom", "latin1", "bigint", "garbage", "empty"])
            structure_text = ir_text(rng, choice, json.dumps(structure))
            ops.append(f"json text {choice}")
        elif family == "special":
            special = True
            ops.append("special")
        elif family == "bomb":
            choice = rng.choice(["outer", "inner", "unreferenced"])
            if choice == "outer" and layout == "zip":
                member = bomb()
                member.name = "arrays.npz"
                outer_extra.append(member)
            else:
                member = bomb(npy_header("<f4", (1 << 28,)))
                member.name = (rng.choice(sorted(arrays)) + ".npy") if choice == "inner" and arrays else "spare.npy"
                if choice == "inner" and arrays:
                    arrays.pop(member.name[:-4])
                members_extra.append(member)
            ops.append(f"1 GiB bomb ({choice})")
        elif family == "ref":
            refs = [p for p in json_paths(structure) if p and p[-1] == "array" or (len(p) > 1 and p[-2] == "arrays")]
            if refs and arrays:
                set_path(structure, rng.choice(refs), rng.choice(sorted(arrays)))
                ops.append("reference another array")
    text = structure_text if structure_text is not None else json.dumps(structure).encode()
    members = npz_members(arrays, inner_method) + members_extra
    if outer_extra and any(m.name == "arrays.npz" for m in outer_extra) and layout == "zip":
        data = raw_zip([Member("network.json", text)] + outer_extra)
        path.write_bytes(data)
    else:
        write_ir(path, text, members, layout, outer_method, outer_extra)
    if post is not None:
        target = path if layout == "zip" else path / rng.choice(["network.json", "arrays.npz"])
        target.write_bytes(post(target.read_bytes()))
    if special:
        target = path if layout == "zip" or rng.random() < 0.3 else path / rng.choice(["network.json", "arrays.npz"])
        ops.append(special_file(rng, target) or "")
    return Case("ir", index, ops, path)


def literal_ir(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A plain reading of an IR file (json + np.load), for comparison with what the loader made of it."""
    if path.is_dir():
        structure = json.loads((path / "network.json").read_bytes())
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    else:
        with zipfile.ZipFile(path) as archive:
            if len(archive.namelist()) != len(set(archive.namelist())):
                raise ValueError("repeated members")
            structure = json.loads(archive.read("network.json"))
            with np.load(io.BytesIO(archive.read("arrays.npz")), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
    return structure, arrays


def resolve(value, arrays: dict[str, np.ndarray], used: set):
    if isinstance(value, dict):
        if set(value) == {"array"} and isinstance(value["array"], str):
            used.add(value["array"])
            return arrays.get(value["array"], "missing array")
        return {k: resolve(v, arrays, used) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, arrays, used) for v in value]
    return value


def resolved_ir(structure: dict, arrays: dict[str, np.ndarray]) -> tuple[object, set]:
    used: set = set()
    doc = copy.deepcopy(structure)
    for projection in doc.get("projections", []):
        for op in projection.get("ops", []):
            op["arrays"] = {name: {"array": key} for name, key in op.get("arrays", {}).items()}
    return resolve(doc, arrays, used), used


def check_ir(network, case: Case) -> str | None:
    from neurodeploy.backends import RunOptions, get_backend
    from neurodeploy.ir import network_summary, save_network

    structure, arrays = literal_ir(case.path)
    stated, used = resolved_ir(structure, arrays)
    if set(arrays) - used:
        return f"arrays nobody refers to were accepted: {sorted(set(arrays) - used)[:3]}"
    with tempfile.TemporaryDirectory() as tmp:
        again_structure, again_arrays = literal_ir(save_network(network, Path(tmp) / "again"))
    read, _ = resolved_ir(again_structure, again_arrays)
    difference = same(stated, read)
    if difference:
        return f"read differently from what the file says at {difference}"
    network_summary(network)
    x = torch.rand(1, *network.input.shape)
    result = get_backend("gpu", device="cpu").run(network, x, torch.zeros(1, dtype=torch.long),
                                                  RunOptions(T=2, batch_size=1, progress=False))
    if not np.isfinite(result.readout).all():
        return "simulation of the accepted network is not finite"
    return None


def load_ir(path: Path):
    from neurodeploy.ir import load_network

    return load_network(path)


# --- result cases -----------------------------------------------------------------------------------


def base_results():
    from neurodeploy.evaluate.result import SimulationResult

    rng = np.random.default_rng(1)
    n, steps, classes, pops = 6, 5, 4, 3
    full = SimulationResult(
        rng.normal(size=(n, steps, classes)).astype(np.float32), rng.integers(0, classes, n).astype(np.int64),
        rng.integers(0, 9, (n, steps, pops)).astype(np.float32),
        rng.uniform(0, 50, (n, steps, pops)).astype(np.float32),
        {"backend": "gpu", "T": steps, "dt_ms": 1.0, "encoding": "analog", "ann_accuracy": 0.75,
         "populations": [{"name": "input", "role": "input", "size": 4}, {"name": "h", "role": "hidden", "size": 5},
                         {"name": "output", "role": "output", "size": classes}],
         "timings": {"run_s": 0.5, "build_s": 0.1}, "pipeline_delay": 2, "n_neurons": 13, "n_synapses": 40,
         "activation_sparsity": 0.5, "weight_sparsity": 0.25, "model": "dense", "options": {"profile": "ideal"}},
        stop_times=rng.integers(1, steps + 1, n).astype(np.int64),
        neuron_counts=rng.integers(0, 5, (n, 13)).astype(np.float32))
    part = SimulationResult(rng.normal(size=(3, 2, 2)).astype(np.float64), np.array([0, 1, 1]),
                            np.zeros((3, 2, 1), np.float32), np.zeros((3, 2, 1), np.float32), {})
    return [full.validate(), part.validate()]


def result_members(result) -> tuple[dict, dict[str, bytes]]:
    header = {"format": "neurodeploy-result", "version": 1, "metadata": copy.deepcopy(result.metadata)}
    arrays = {name: npy_bytes(getattr(result, name)) for name in
              ("readout", "labels", "spike_counts", "synaptic_events", "stop_times", "neuron_counts")
              if getattr(result, name) is not None}
    return header, arrays


def result_text(rng: random.Random, choice: str, text: str) -> str:
    """metadata_json's text, spoiled as ``choice`` says."""
    if choice == "deep":
        return text[:-1] + ', "deep": ' + deep_json(rng.choice([100, 10**5])).decode() + "}"
    if choice == "nan":
        return text.replace("0.75", "NaN").replace('"T": 5', '"T": Infinity')
    if choice == "dup":
        return text.replace('"version": 1', '"version": 1, "version": 2', 1)
    if choice == "garbage":
        return "\x00garbage{"
    if choice == "bigint":
        return text.replace('"version": 1', '"version": 1' + "0" * 5000, 1)
    return ""


def make_result_case(rng: random.Random, folder: Path, index: int, bases) -> Case:
    header, arrays = copy.deepcopy(rng.choice(bases))
    path = folder / f"result{index}.npz"
    ops: list[str] = []
    method = zipfile.ZIP_DEFLATED
    header_text: str | None = None
    meta_array: np.ndarray | None = None
    extra: list[Member] = []
    post = None
    special = False
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        family = rng.choices(["meta", "array", "header", "zip", "text", "special", "bomb", "semantic"],
                             [25, 25, 8, 12, 6, 3, 3, 18])[0]
        if family == "meta":
            ops.append(mutate_json(rng, header))
        elif family == "array" and arrays:
            key = rng.choice(sorted(arrays))
            array = load_member(arrays[key])
            if array is not None:
                mutated, name = mutate_array(rng, array)
                arrays[key] = npy_bytes(mutated)
                ops.append(f"array {key}: {name}")
        elif family == "header" and arrays:
            key = rng.choice(sorted(arrays))
            arrays[key], name = lying_header(rng, arrays[key])
            ops.append(f"array {key}: {name}")
        elif family == "semantic":
            choice = rng.choice(["T", "labels99", "labels-1", "nan-events", "negative-spikes", "accuracy-nan",
                                 "accuracy-5", "stop0", "populations", "labels-float"])
            meta = header.setdefault("metadata", {})
            if choice == "T" and isinstance(meta, dict):
                meta["T"] = rng.choice([1, 4, 6, 100, "5", 5.0, True])
            elif choice in ("labels99", "labels-1", "labels-float") and "labels" in arrays:
                labels = load_member(arrays["labels"])
                if labels is not None and labels.size and labels.dtype.kind in "iuf":
                    labels = labels.astype(np.float64) + 0.5 if choice == "labels-float" else labels.copy()
                    if choice != "labels-float":
                        labels.reshape(-1)[0] = 99 if choice == "labels99" else -1
                    arrays["labels"] = npy_bytes(labels)
            elif choice in ("nan-events", "negative-spikes"):
                key = "synaptic_events" if choice == "nan-events" else "spike_counts"
                values = load_member(arrays[key]) if key in arrays else None
                if values is not None and values.size and values.dtype.kind == "f":
                    values = values.copy()
                    values.reshape(-1)[0] = np.nan if choice == "nan-events" else -3
                    arrays[key] = npy_bytes(values)
            elif choice in ("accuracy-nan", "accuracy-5") and isinstance(meta, dict):
                meta["ann_accuracy"] = 5.0 if choice == "accuracy-5" else "NaN-literal"
            elif choice == "stop0" and "stop_times" in arrays:
                values = load_member(arrays["stop_times"])
                if values is not None and values.size and values.dtype.kind in "iu":
                    values = values.copy()
                    values.reshape(-1)[0] = rng.choice([0, 99])
                    arrays["stop_times"] = npy_bytes(values)
            elif choice == "populations" and isinstance(meta, dict) and meta.get("populations"):
                meta["populations"] = meta["populations"][:-1]
            ops.append(f"semantic {choice}")
        elif family == "zip":
            choice = rng.choice(["stored", "bzip2", "lzma", "encrypt", "repeat", "extra", "missing", "damage",
                                 "deflate-damage", "meta-not-string", "aes"])
            if choice == "stored":
                method = zipfile.ZIP_STORED
            elif choice == "aes":
                method = rng.choice([99, 6])
            elif choice == "bzip2":
                method = zipfile.ZIP_BZIP2
            elif choice == "lzma":
                method = zipfile.ZIP_LZMA
            elif choice == "encrypt":
                post = lambda data: set_flag_bits(data, 1)  # noqa: E731
            elif choice == "repeat" and arrays:
                key = rng.choice(sorted(arrays))
                extra.append(Member(f"{key}.npy", arrays[key], zipfile.ZIP_DEFLATED))
            elif choice == "extra":
                extra.append(Member(rng.choice(["other.npy", "notes.txt", "readout"]), npy_bytes(np.zeros(2))))
            elif choice == "missing" and arrays:
                arrays.pop(rng.choice(sorted(arrays)))
            elif choice == "damage":
                post = lambda data: byte_damage(rng, data)[0]  # noqa: E731
            elif choice == "deflate-damage":
                post = lambda data: damage_deflate(rng, data)  # noqa: E731
            elif choice == "meta-not-string":
                meta_array = rng.choice([np.zeros(3), np.array([json.dumps(header)] * 2),
                                         np.array(json.dumps(header).encode())])
            ops.append(f"zip {choice}")
        elif family == "text":
            choice = rng.choice(["deep", "nan", "dup", "garbage", "bigint", "empty"])
            header_text = result_text(rng, choice, json.dumps(header))
            ops.append(f"json text {choice}")
        elif family == "special":
            special = True
            ops.append("special")
        elif family == "bomb" and arrays:
            member = bomb(npy_header("<f4", (1 << 28,)))
            key = rng.choice(sorted(arrays))
            member.name = f"{key}.npy"
            arrays.pop(key)
            extra.append(member)
            ops.append(f"1 GiB bomb ({key})")
    text = header_text if header_text is not None else json.dumps(header).replace('"NaN-literal"', "NaN")
    meta = meta_array if meta_array is not None else np.array(text)
    members = [Member("metadata_json.npy", npy_bytes(meta), method)] + npz_members(arrays, method) + extra
    data = raw_zip(members)
    if post is not None:
        data = post(data)
    path.write_bytes(data)
    if special:
        ops.append(special_file(rng, path) or "")
    return Case("result", index, ops, path)


def damage_deflate(rng: random.Random, data: bytes) -> bytes:
    """Flips bytes inside a member's compressed data (past its local header), keeping the zip intact."""
    out = bytearray(data)
    starts = [i for i in range(len(out) - 4) if out[i:i + 4] == b"PK\x03\x04"]
    if not starts:
        return data
    start = rng.choice(starts)
    name_len, extra_len = struct.unpack_from("<2H", out, start + 26)
    size = struct.unpack_from("<L", out, start + 18)[0]
    first = start + 30 + name_len + extra_len
    for _ in range(3):
        if size:
            out[first + rng.randrange(size)] ^= 0xFF
    return bytes(out)


def literal_result(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with zipfile.ZipFile(path) as archive:
        if len(archive.namelist()) != len(set(archive.namelist())):
            raise ValueError("repeated members")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    header = json.loads(str(arrays.pop("metadata_json")))
    return header, arrays


def check_result(result, case: Case) -> str | None:
    from neurodeploy.evaluate.summary import summarize, write_json

    header, arrays = literal_result(case.path)
    if header.get("format") != "neurodeploy-result" or header.get("version") != 1:
        return "accepted another format"
    difference = same(header.get("metadata"), result.metadata, "metadata")
    if difference:
        return f"metadata read differently: {difference}"
    for name, array in arrays.items():
        mine = getattr(result, name, None)
        if mine is None or mine.shape != array.shape or not np.array_equal(mine, array):
            return f"{name} read differently"
        if array.dtype.byteorder == ">" or array.dtype.kind not in "iuf":
            return f"{name} of dtype {array.dtype.str} accepted"
    readout, labels = arrays["readout"], arrays["labels"]
    n, steps, classes = readout.shape
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= classes:
        return "labels outside [0, C) accepted"
    for name in ("spike_counts", "synaptic_events", "neuron_counts"):
        if name in arrays and (not np.isfinite(arrays[name]).all() or arrays[name].min(initial=0) < 0):
            return f"{name} not finite or negative accepted"
    if not np.isfinite(readout).all():
        return "non-finite readout accepted"
    meta = header["metadata"]
    if "T" in meta and meta["T"] != steps:
        return "metadata T disagreeing with the arrays accepted"
    if "populations" in meta and len(meta["populations"]) != arrays["spike_counts"].shape[2]:
        return "populations disagreeing with the counts accepted"
    ann = meta.get("ann_accuracy")
    if ann is not None and not (isinstance(ann, int | float) and 0 <= ann <= 1):
        return f"ann_accuracy {ann!r} accepted"
    if "stop_times" in arrays and (arrays["stop_times"].min() < 1 or arrays["stop_times"].max() > steps):
        return "stop_times outside [1, T] accepted"
    summary, _ = summarize(result, ann if ann is not None else 0.9)
    with tempfile.TemporaryDirectory() as tmp:
        write_json(Path(tmp) / "summary.json", summary)
    return None


def load_result(path: Path):
    from neurodeploy.evaluate.result import SimulationResult

    return SimulationResult.load(path)


# --- dataset cases ----------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    codes = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}
    if code is None:
        dtype = array.dtype.str.lstrip("|<>=") if array.dtype.itemsize == 1 else ">" + array.dtype.str[1:]
        dtype = {"u1": "u1", "i1": "i1"}.get(dtype, dtype)
        code = codes.get(dtype, 0x08)
        array = array.astype(dtype if dtype in codes else "u1")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.tobytes()


_GZ_BOMB: list[bytes] = []


def gz_bomb() -> bytes:
    """A gzip file of about 1 MB holding an IDX header for 16384 x 256 x 256 bytes and 1 GiB of zeros."""
    if not _GZ_BOMB:
        header = bytes([0, 0, 0x08, 3]) + b"".join(int(s).to_bytes(4, "big") for s in (1 << 14, 256, 256))
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        parts = [c.compress(header)]
        zeros = bytes(1 << 20)
        for _ in range(1 << 10):
            parts.append(c.compress(zeros))
        parts.append(c.flush())
        _GZ_BOMB.append(b"".join(parts))
    return _GZ_BOMB[0]


def make_data_case(rng: random.Random, folder: Path, index: int) -> Case:
    root = folder / f"data{index}"
    root.mkdir()
    kind = rng.choice(["idx", "idx", "cifar10", "cifar100"])
    nrng = np.random.default_rng(index)
    ops: list[str] = [kind]
    expect: dict = {"kind": kind}
    if kind == "idx":
        gz = rng.random() < 0.5
        sub = root / "raw" if rng.random() < 0.3 else root
        sub.mkdir(exist_ok=True)
        n_train, n_test, side = 30, 10, 6
        parts = {
            "train-images-idx3-ubyte": nrng.integers(0, 256, (n_train, side, side)).astype(np.uint8),
            "train-labels-idx1-ubyte": np.tile(np.arange(3), n_train // 3).astype(np.uint8),
            "t10k-images-idx3-ubyte": nrng.integers(0, 256, (n_test, side, side)).astype(np.uint8),
            "t10k-labels-idx1-ubyte": nrng.integers(0, 3, n_test).astype(np.uint8),
        }
        blobs = {name: idx_bytes(array) for name, array in parts.items()}
        special = None
        for _ in range(rng.choice([1, 1, 2])):
            name = rng.choice(sorted(blobs))
            choice = rng.choice(["label255", "label3", "int8-1", "int32-max", "float-labels", "float-images-nan",
                                 "count", "zero", "wider", "header", "truncate", "trailing", "ndim", "code",
                                 "special", "gz-bomb", "gz-damage", "images-as-labels"])
            try:  # an earlier edit may have removed what this one changes
                array = parts[name]
                if choice in ("label255", "label3") and "labels" in name:
                    array = array.copy()
                    array[rng.randrange(len(array))] = 255 if choice == "label255" else 3
                    blobs[name] = idx_bytes(array)
                elif choice == "int8-1" and "labels" in name:
                    blobs[name] = idx_bytes(np.concatenate([array[:-1].astype(np.int8), [-1]]).astype(np.int8))
                elif choice == "int32-max" and "labels" in name:
                    blobs[name] = idx_bytes(np.concatenate([array[:-1], [2**31 - 1]]).astype(">i4"), 0x0C)
                elif choice == "float-labels" and "labels" in name:
                    blobs[name] = idx_bytes((array + rng.choice([0.0, 0.5])).astype(">f4"), 0x0D)
                elif choice == "float-images-nan" and "images" in name:
                    values = (array / 255.0).astype(">f4")
                    values[0, 0, 0] = np.nan
                    blobs[name] = idx_bytes(values, 0x0D)
                elif choice == "count":
                    blobs[name] = idx_bytes(np.concatenate([array, array]) if rng.random() < 0.5 else array[:-1])
                elif choice == "zero":
                    blobs[name] = idx_bytes(array[:0])
                elif choice == "wider" and "images" in name:
                    blobs[name] = idx_bytes(np.concatenate([array, array[:, :, :1]], axis=2))
                elif choice == "header":
                    raw = bytearray(blobs[name])
                    raw[4 + 4 * rng.randrange(raw[3])] = 0x7F
                    blobs[name] = bytes(raw)
                elif choice == "truncate":
                    blobs[name] = blobs[name][: rng.randrange(len(blobs[name]))]
                elif choice == "trailing":
                    blobs[name] += b"\x00" * rng.randrange(1, 10)
                elif choice == "ndim":
                    raw = bytearray(blobs[name])
                    raw[3] = rng.choice([0, 2, 5, 255])
                    blobs[name] = bytes(raw)
                elif choice == "code":
                    raw = bytearray(blobs[name])
                    raw[2] = rng.choice([0x00, 0x07, 0x0A, 0x0D, 0x0E, 0xFF])
                    blobs[name] = bytes(raw)
                elif choice == "images-as-labels":
                    blobs[name] = idx_bytes(parts["train-images-idx3-ubyte"])
                elif choice == "special":
                    special = name
                elif choice == "gz-bomb":
                    gz = True
                    blobs[name] = b"gzbomb"
                elif choice == "gz-damage":
                    gz = True
                    blobs[name] = b"gzdamage" + blobs[name]
            except (KeyError, TypeError, AttributeError, IndexError, ValueError):
                choice += " (skipped)"
            ops.append(f"{name}: {choice}")
        for name, blob in blobs.items():
            target = sub / (name + (".gz" if gz else ""))
            if gz:
                data = gz_bomb() if blob == b"gzbomb" else gzip.compress(blob, compresslevel=1)
                if blob.startswith(b"gzdamage"):
                    data = gzip.compress(blob[8:], compresslevel=1)
                    data = data[:20] + bytes(b ^ 0x55 for b in data[20:40]) + data[40:]
                target.write_bytes(data)
            else:
                target.write_bytes(blob)
        if special:
            ops.append(special_file(rng, sub / (special + (".gz" if gz else ""))) or "")
        expect["gz"] = gz
    else:
        label_key = "labels" if kind == "cifar10" else "fine_labels"
        classes = 10 if kind == "cifar10" else 100
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if kind == "cifar10" else ["train", "test"]
        batches = {name: {"data": nrng.integers(0, 256, (3, 3072)).astype(np.uint8),
                          label_key: [int(v) for v in nrng.integers(0, classes, 3)], "batch_label": name}
                   for name in names}
        raw_override: dict[str, bytes] = {}
        special = None
        for _ in range(rng.choice([1, 1, 2])):
            name = rng.choice(names)
            batch = batches[name]
            choice = rng.choice(["string-labels", "float-labels", "label-out", "label-neg", "rows", "count",
                                 "dtype", "list-data", "nested", "missing", "not-dict", "evil", "truncate",
                                 "special", "numpy-labels", "numpy-float-labels", "bool-labels", "3d"])
            try:  # an earlier edit may have removed what this one changes
                if choice == "string-labels":
                    batch[label_key] = [str(v) for v in batch[label_key]]
                elif choice == "float-labels":
                    batch[label_key] = [v + rng.choice([0.0, 0.5]) for v in batch[label_key]]
                elif choice == "label-out":
                    batch[label_key][0] = rng.choice([classes, 255, 2**31 - 1])
                elif choice == "label-neg":
                    batch[label_key][0] = -1
                elif choice == "rows":
                    batch["data"] = batch["data"][:, : rng.choice([3071, 1024, 0])]
                elif choice == "count":
                    batch["data"] = np.concatenate([batch["data"]] * 4)
                elif choice == "dtype":
                    batch["data"] = batch["data"].astype(rng.choice([np.int64, np.float32, np.int8]))
                elif choice == "list-data":
                    batch["data"] = batch["data"].tolist()
                elif choice == "nested":
                    batch[label_key] = [batch[label_key]] * 3
                elif choice == "missing":
                    batch.pop(rng.choice(["data", label_key]))
                elif choice == "not-dict":
                    raw_override[name] = pickle.dumps([batch["data"]])
                elif choice == "evil":
                    raw_override[name] = b"cos\nsystem\n(S'true'\ntR."
                elif choice == "truncate":
                    data = pickle.dumps(batch)
                    raw_override[name] = data[: rng.randrange(len(data))]
                elif choice == "numpy-labels":
                    batch[label_key] = np.asarray(batch[label_key], rng.choice([np.int64, np.uint8]))
                elif choice == "numpy-float-labels":
                    batch[label_key] = np.asarray(batch[label_key], np.float64)
                elif choice == "bool-labels":
                    batch[label_key] = [True, False, True]
                elif choice == "3d":
                    batch["data"] = batch["data"].reshape(3, 3, 1024)
                elif choice == "special":
                    special = name
            except (KeyError, TypeError, AttributeError, IndexError, ValueError):
                choice += " (skipped)"
            ops.append(f"{name}: {choice}")
        for name in names:
            (root / name).write_bytes(raw_override.get(name) or pickle.dumps(batches[name]))
        if special:
            ops.append(special_file(rng, root / special) or "")
        expect["classes"] = classes
    return Case("data", index, ops, root, expect)


class _Plain(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("numpy"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def literal_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    codes = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, codes[raw[2]], offset=4 + 4 * ndim).reshape(shape)


def check_data(dataset, case: Case) -> str | None:
    from neurodeploy.data import check_items

    kind = case.expect["kind"]
    splits = {}
    if kind == "idx":
        folder = case.path / "raw" if (case.path / "raw").is_dir() else case.path
        suffix = ".gz" if case.expect["gz"] else ""
        for train, (images, labels) in ((True, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")),
                                        (False, ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))):
            x, y = literal_idx(folder / (images + suffix)), literal_idx(folder / (labels + suffix))
            if x.dtype != np.uint8 or y.dtype.kind not in "iu":
                return f"IDX images {x.dtype} / labels {y.dtype} accepted"
            splits[train] = (x[:, None].astype(np.float32) / 255.0, y.astype(np.int64))
        classes = int(max(splits[True][1].max(), splits[False][1].max())) + 1
        if not (np.bincount(splits[True][1], minlength=classes) > 0).all():
            return f"labels that skip classes accepted ({classes} classes)"
    else:
        label_key = "labels" if kind == "cifar10" else "fine_labels"
        names = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if kind == "cifar10" else (["train"],
                                                                                                      ["test"])
        for train, files in zip((True, False), names, strict=True):
            xs, ys = [], []
            for name in files:
                with (case.path / name).open("rb") as handle:
                    batch = _Plain(handle, encoding="latin1").load()
                data, labels = batch["data"], batch[label_key]
                if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,):
                    return f"CIFAR data {type(data).__name__} {getattr(data, 'dtype', '')} accepted"
                if any(isinstance(v, bool | float | str) for v in np.asarray(labels, object).reshape(-1)) or \
                        np.asarray(labels).dtype.kind not in "iu":
                    return "non-integer CIFAR labels accepted"
                xs.append(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
                ys.append(np.asarray(labels, np.int64))
            splits[train] = (np.concatenate(xs), np.concatenate(ys))
        classes = case.expect["classes"]
    if dataset.n_classes != classes:
        return f"{dataset.n_classes} classes, the file says {classes}"
    for train, split in ((True, dataset.train), (False, dataset.test)):
        x, y = splits[train]
        if len(x) != len(y) or len(x) == 0:
            return f"{len(x)} images and {len(y)} labels accepted"
        if y.min() < 0 or y.max() >= classes:
            return "labels outside the classes accepted"
        if split.images.shape != x.shape or not np.array_equal(split.images.numpy(), x):
            return "images read differently"
        if not np.array_equal(split.labels.numpy(), y):
            return "labels read differently"
        if not np.isfinite(x).all():
            return "non-finite pixels accepted"
    check_items(dataset, dataset.input_shape, dataset.n_classes)
    return None


def load_data(path: Path):
    from neurodeploy.data import load_dataset

    return load_dataset(path)


# --- model file cases -------------------------------------------------------------------------------


def base_model() -> dict:
    from neurodeploy.train import build

    model = build("dense_mnist", (1, 4, 4), 3, seed=0)
    return {"format": "neurodeploy-model", "version": 1, "arch": "dense_mnist", "input_shape": [1, 4, 4],
            "n_classes": 3, "state_dict": model.state_dict(), "record": {"history": [{"epoch": 1, "loss": 0.5}],
                                                                           "cache_key": {"kind": "trained"}},
            "quant_bits": None, "pooling": []}


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def make_model_case(rng: random.Random, folder: Path, index: int, base: dict) -> Case:
    checkpoint = {k: (copy.deepcopy(v) if k != "state_dict" else {n: t.clone() for n, t in v.items()})
                  for k, v in base.items()}
    path = folder / f"model{index}.pt"
    ops: list[str] = []
    post = None
    special = False
    legacy = False
    for _ in range(rng.choice([1, 1, 2])):
        family = rng.choices(["field", "tensor", "evil", "zip", "special", "legacy"], [40, 30, 8, 12, 4, 6])[0]
        if family == "field":
            doc = {k: v for k, v in checkpoint.items() if k != "state_dict"}
            ops.append(mutate_json(rng, doc))
            if rng.random() < 0.1:
                doc.pop(rng.choice(sorted(doc)), None)
            checkpoint = {**doc, **({"state_dict": checkpoint["state_dict"]} if "state_dict" in checkpoint else {})}
            if rng.random() < 0.05:
                checkpoint.pop("state_dict", None)
                ops.append("no state_dict")
        elif family == "tensor" and isinstance(checkpoint.get("state_dict"), dict) and checkpoint["state_dict"]:
            state = checkpoint["state_dict"]
            key = rng.choice(sorted(state))
            choice = rng.choice(["dtype", "shape", "nan", "drop", "add", "not-tensor", "flatten"])
            if choice == "dtype":
                state[key] = state[key].to(rng.choice([torch.float64, torch.float16, torch.int32]))
            elif choice == "shape":
                state[key] = torch.zeros(*(s + 1 for s in state[key].shape)) if state[key].ndim else torch.zeros(2)
            elif choice == "nan" and state[key].is_floating_point() and state[key].numel():
                state[key].view(-1)[0] = float("nan")
            elif choice == "drop":
                state.pop(key)
            elif choice == "add":
                state["9.weight"] = torch.zeros(2)
            elif choice == "not-tensor":
                state[key] = rng.choice([1.5, "weights", [1, 2], None])
            elif choice == "flatten":
                state[key] = state[key].reshape(-1)
            ops.append(f"state_dict {key}: {choice}")
        elif family == "evil":
            checkpoint["record"] = {"x": _Evil()}
            ops.append("pickled code")
        elif family == "zip":
            post = rng.choice(["damage", "encrypt"])
            ops.append(f"zip {post}")
        elif family == "special":
            special = True
            ops.append("special")
        elif family == "legacy":
            legacy = True
            ops.append("legacy format")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer, _use_new_zipfile_serialization=not legacy)
    data = buffer.getvalue()
    if post == "damage":
        data = byte_damage(rng, data)[0]
    elif post == "encrypt":
        data = set_flag_bits(data, 1)
    path.write_bytes(data)
    if special:
        ops.append(special_file(rng, path) or "")
    return Case("model", index, ops, path, {"checkpoint": checkpoint})


def load_model_file(path: Path):
    from neurodeploy.train import load_model

    return load_model(path)


def check_model(loaded, case: Case) -> str | None:
    model, info = loaded
    checkpoint = case.expect["checkpoint"]
    difference = same({k: v for k, v in checkpoint.items() if k != "state_dict"}, info, "info")
    if difference:
        return f"model info read differently: {difference}"
    state = model.state_dict()
    for key, tensor in checkpoint["state_dict"].items():
        if key not in state or state[key].dtype != tensor.dtype or not torch.equal(state[key], tensor):
            return f"state_dict {key} read differently"
    if set(state) != set(checkpoint["state_dict"]):
        return "state_dict keys differ"
    with torch.no_grad():
        out = model(torch.zeros(2, *checkpoint["input_shape"]))
    if tuple(out.shape) != (2, checkpoint["n_classes"]) or not torch.isfinite(out).all():
        return "the accepted model's output is not [N, n_classes] and finite"
    return None


# --- running ----------------------------------------------------------------------------------------


def file_size(path: Path) -> int:
    try:
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            return 0
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.stat().st_size
    except OSError:
        return 0


def run_case(case: Case, load: Callable, check: Callable, report: Report) -> tuple[str, str]:
    size = file_size(case.path)
    report.largest_file = max(report.largest_file, size)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    outcome, detail = "accepted", ""
    loaded = None
    try:
        with deadline(HANG_S):
            loaded = load(case.path)
    except Hang:
        outcome, detail = "hang", f"no answer within {HANG_S} s"
    except NeurodeployError as err:
        message = str(err)
        outcome = "multiline" if ("\n" in message or not message.strip()) else "refused"
        if "(unexpected " in message:  # a reader's last-resort net caught an exception it did not foresee
            outcome = "traceback"
        detail = message
    except Exception as err:  # every other exception is a defect
        outcome, detail = "traceback", f"{type(err).__name__}: {str(err)[:200]}"
    peak = tracemalloc.get_traced_memory()[1] - base
    report.peak_bytes = max(report.peak_bytes, peak)
    if peak > MEMORY_LIMIT and size < SMALL_FILE:
        outcome, detail = "memory", f"{peak / 2**20:.0f} MiB for a file of {size} bytes"
    if outcome == "accepted":
        try:
            with deadline(HANG_S * 3):
                changed = check(loaded, case)
        except Hang:
            outcome, detail = "hang", "using the accepted file hung"
        except NeurodeployError as err:
            outcome, detail = "changed", f"accepted, then refused in use: {err}"
        except Exception as err:
            outcome, detail = "traceback", f"accepted, then {type(err).__name__} in use: {str(err)[:200]}"
        else:
            if changed:
                outcome, detail = "changed", changed
    report.outcomes[outcome] += 1
    if outcome in DEFECTS:
        report.defects.append(f"{case.kind} #{case.index} {case.operators}: {outcome}: {detail}")
    return outcome, detail


def case_counts(total: int) -> dict[str, int]:
    return {kind: max(1, round(total * share)) for kind, share in SHARES.items()}


def run_fuzz(total: int | None = None, seed: int = 19, kinds: tuple[str, ...] = tuple(SHARES),
             counts: dict[str, int] | None = None, workdir: Path | None = None) -> dict[str, Report]:
    """Runs the harness; ``total`` cases (default NEURODEPLOY_FUZZ_CASES or 300) split by :data:`SHARES`."""
    total = total or int(os.environ.get("NEURODEPLOY_FUZZ_CASES", DEFAULT_CASES))
    counts = counts or case_counts(total)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    reports = {}
    try:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            root = Path(tmp)
            for kind in kinds:
                rng = random.Random(f"{seed}-{kind}")
                report = Report(kind)
                start = time.perf_counter()
                folder = root / kind
                folder.mkdir()
                if kind == "ir":
                    make = functools.partial(make_ir_case, rng, folder, bases=[ir_parts(n) for n in base_networks()])
                    load, check = load_ir, check_ir
                elif kind == "result":
                    make = functools.partial(make_result_case, rng, folder,
                                             bases=[result_members(r) for r in base_results()])
                    load, check = load_result, check_result
                elif kind == "data":
                    make = functools.partial(make_data_case, rng, folder)
                    load, check = load_data, check_data
                else:
                    make = functools.partial(make_model_case, rng, folder, base=base_model())
                    load, check = load_model_file, check_model
                for index in range(counts[kind]):
                    case = make(index=index)
                    run_case(case, load, check, report)
                    remove(case.path)
                report.seconds = time.perf_counter() - start
                reports[kind] = report
    finally:
        if not started:
            tracemalloc.stop()
    return reports


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        for child in path.rglob("*"):
            if child.is_symlink() or (child.exists() and not child.is_dir() and not child.is_file()):
                child.unlink()
        shutil.rmtree(path, ignore_errors=True)
    elif path.is_symlink():
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None, help="total cases (default NEURODEPLOY_FUZZ_CASES or 300)")
    parser.add_argument("--ir", type=int, help="IR cases (overrides the share)")
    parser.add_argument("--results", type=int, help="result cases (overrides the share)")
    parser.add_argument("--data", type=int, help="data folder cases (overrides the share)")
    parser.add_argument("--models", type=int, help="model file cases (overrides the share)")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args(argv)
    counts = case_counts(args.cases or int(os.environ.get("NEURODEPLOY_FUZZ_CASES", DEFAULT_CASES)))
    for key, kind in (("ir", "ir"), ("results", "result"), ("data", "data"), ("models", "model")):
        if getattr(args, key) is not None:
            counts[kind] = getattr(args, key)
    start = time.perf_counter()
    reports = run_fuzz(seed=args.seed, counts=counts)
    for report in reports.values():
        print(report.line())
        for defect in report.defects[:20]:
            print("   ", defect)
    import resource

    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total {sum(sum(r.outcomes.values()) for r in reports.values())} files in {time.perf_counter() - start:.1f}"
          f" s; largest file {max(r.largest_file for r in reports.values()) / 2**20:.1f} MiB; process peak RSS "
          f"{peak_rss:.0f} MiB (interpreter, torch and the harness included)")
    return 1 if any(r.defects for r in reports.values()) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main())
