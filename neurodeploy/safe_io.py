"""Reading files that may say anything, within bounds: the building blocks of every strict reader
(IR, model files, datasets, results).

* Only regular files are opened: the path is opened without blocking and ``fstat`` must say "regular
  file", so a FIFO, a socket or a device such as ``/dev/urandom`` is refused without reading a byte.
* Every read is capped: whole files (:func:`read_file`), zip members (checked against the size the
  archive declares, read in chunks up to it) and array payloads, whose ``.npy`` header (magic, dtype,
  byte order, shape) is read and checked before anything is allocated (:meth:`SafeZip.array_header`).
* Zip members must be stored or deflated, unencrypted and named once; nothing else is decompressed.
* JSON is parsed only after its nesting depth is known to be at most :data:`MAX_JSON_DEPTH`; NaN,
  infinities and repeated keys are refused.
* What a file inflates to is bounded by a :class:`Budget`: at most ``max(FLOOR, INFLATION x the
  file's size)`` bytes, and never more than ``NEURODEPLOY_MAX_ARRAY_BYTES`` (default 16 GiB). The
  factor defaults to 32 and ``NEURODEPLOY_MAX_INFLATION`` changes it.

Writing: :func:`atomic_write` writes every file the project produces under a temporary name in the same
folder and renames it over the target only once it is complete, so a reader (or a later run) sees the old
file or the new one, never a truncated one; a failing write (full disk, a file-size limit, a read-only or
vanished folder) leaves the old file as it was and is raised as :class:`~neurodeploy.errors.WriteError`.

Every failure is raised as the caller's :class:`~neurodeploy.errors.NeurodeployError` subclass, in one
line naming the file, the part of it and what was expected.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from neurodeploy.errors import ConfigError, NeurodeployError, WriteError

#: deepest JSON nesting read (objects and arrays)
MAX_JSON_DEPTH = 64
#: bytes every file may inflate to whatever its size
FLOOR_BYTES = 256 << 20
#: default of NEURODEPLOY_MAX_INFLATION: bytes a file may inflate to, per byte of file
DEFAULT_INFLATION = 32
#: default of NEURODEPLOY_MAX_ARRAY_BYTES
DEFAULT_MAX_BYTES = 16 << 30
#: members a zip archive may hold
MAX_MEMBERS = 100_000
_CHUNK = 1 << 20
_NPY_HEADER_LIMIT = 10_000

ErrorType = type[NeurodeployError]


def clip(value, limit: int = 60) -> str:
    """``repr(value)`` on one line, at most ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shorten(text: str, limit: int = 160) -> str:
    """``text`` on one line, at most ``limit`` characters (cut in the middle: "head ... tail")."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def _env_number(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={clip(text)} is not a whole number") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


class Budget:
    """The bytes a file may inflate to (arrays, decompressed members), charged as they are declared."""

    def __init__(self, file_bytes: int, error: ErrorType, where: str):
        inflation = _env_number("NEURODEPLOY_MAX_INFLATION", DEFAULT_INFLATION)
        cap = _env_number("NEURODEPLOY_MAX_ARRAY_BYTES", DEFAULT_MAX_BYTES)
        self.allowed = min(max(FLOOR_BYTES, inflation * int(file_bytes)), cap)
        self.used = 0
        self.error = error
        self.where = where

    def charge(self, nbytes: int, what: str) -> None:
        self.used += int(nbytes)
        if self.used > self.allowed:
            raise self.error(
                f"{self.where}: {what} would make the file inflate to more than {self.allowed:,} bytes (the limit "
                f"for a file of its size; NEURODEPLOY_MAX_INFLATION and NEURODEPLOY_MAX_ARRAY_BYTES raise it)")


def open_regular(path: str | Path, error: ErrorType, what: str) -> tuple[BinaryIO, os.stat_result]:
    """Opens ``path`` for reading when it is a regular file (following links); a folder, FIFO, socket
    or device is refused without reading from it. Returns the open file and its ``stat``."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}") from None
    except OSError as err:
        raise error(f"{path}: cannot open the {what} ({err.strerror or err})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{path}: is a folder, not a {what}")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: not a regular file (a device, FIFO or socket); refusing to read it as a {what}")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | Path, error: ErrorType, what: str, folder_ok: bool = False) -> os.stat_result:
    """``stat`` of ``path``; raises unless it is a regular file (or, with ``folder_ok``, a folder)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    if stat.S_ISDIR(info.st_mode):
        if folder_ok:
            return info
        raise error(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file (a device, FIFO or socket); refusing to read it as a {what}")
    return info


def read_stream(handle: BinaryIO, limit: int, error: ErrorType, where: str) -> bytes:
    """Everything ``handle`` holds, refusing more than ``limit`` bytes (read in chunks)."""
    parts, total = [], 0
    while True:
        chunk = handle.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limit:
            raise error(f"{where}: larger than {limit:,} bytes")
        parts.append(chunk)


def read_file(path: str | Path, limit: int, error: ErrorType, what: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them."""
    handle, info = open_regular(path, error, what)
    with handle:
        if info.st_size > limit:
            raise error(f"{path}: the {what} has {info.st_size:,} bytes, more than the {limit:,} allowed")
        try:
            return read_stream(handle, limit, error, f"{path}")
        except OSError as err:
            raise error(f"{path}: cannot read the {what} ({err.strerror or err})") from None


# --- JSON -------------------------------------------------------------------------------------------

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """Deepest nesting of objects and arrays in JSON text (strings are skipped)."""
    codes = np.frombuffer(_STRING.sub(b"", data), np.uint8)
    step = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {repeated!r} appears twice in one object")
    return result


def _constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(data: bytes, error: ErrorType, where: str, max_depth: int = MAX_JSON_DEPTH):
    """Parses strict JSON (UTF-8, no NaN or infinity, no repeated keys, at most ``max_depth`` deep)."""
    depth = json_depth(data)
    if depth > max_depth:
        raise error(f"{where}: JSON nested {depth} deep, more than the {max_depth} allowed")
    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_finite_float)
    except UnicodeDecodeError as err:
        raise error(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise error(f"{where}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except (ValueError, RecursionError) as err:  # repeated keys, NaN, huge numbers
        raise error(f"{where}: not valid JSON ({str(err)[:120]})") from None


def pydantic_message(err) -> str:
    """The first problem of a pydantic ``ValidationError`` as ``field.path: what was expected (got ...)``."""
    first = err.errors(include_url=False)[0]
    parts = [part for part in first["loc"] if isinstance(part, int) or part not in UNION_TAGS]
    kind = first["type"]
    if kind in ("missing", "extra_forbidden") and parts and isinstance(parts[-1], str):
        field = parts.pop()
        message = f"{'missing' if kind == 'missing' else 'unknown'} field {field!r}"
    elif kind == "union_tag_invalid":
        ctx = first.get("ctx", {})
        message = (f"unknown {str(ctx.get('discriminator', 'kind')).strip(chr(39))} {clip(ctx.get('tag'))}; "
                   f"known: {ctx.get('expected_tags')}")
    else:
        message = f"{first['msg']} (got {clip(first.get('input'))})"
    loc = ""
    for part in parts:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    return f"{loc or 'root'}: {message}"


#: tags of discriminated unions, left out of field paths (registered by the schemas)
UNION_TAGS: set[str] = set()


# --- zip archives and .npy members -------------------------------------------------------------------


class SafeZip:
    """A zip archive read within ``budget``: members stored or deflated, unencrypted, named once."""

    def __init__(self, source: BinaryIO, error: ErrorType, where: str, budget: Budget, what: str = "zip archive"):
        self.error, self.where, self.budget = error, where, budget
        try:
            self.archive = zipfile.ZipFile(source)
            infos = self.archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
                UnicodeDecodeError, OverflowError) as err:
            raise error(f"{where}: not a readable {what} ({str(err)[:120]}); it may be truncated or "
                        "corrupt") from None
        if len(infos) > MAX_MEMBERS:
            raise error(f"{where}: {len(infos)} members, more than {MAX_MEMBERS}")
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.filename in self.members:
                raise error(f"{where}: member {clip(info.filename)} appears twice")
            if info.flag_bits & 0x1:
                raise error(f"{where}: member {clip(info.filename)} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise error(f"{where}: member {clip(info.filename)} uses compression method {info.compress_type} "
                            "(only stored and deflated are read)")
            self.members[info.filename] = info

    handle: BinaryIO | None = None

    def close(self) -> None:
        self.archive.close()
        if self.handle is not None:
            self.handle.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fail(self, name: str, err: BaseException):
        return self.error(f"{self.where}: member {clip(name)} cannot be read ({type(err).__name__}: "
                          f"{str(err)[:120]}); the archive is corrupt")

    def _open(self, name: str):
        try:
            return self.archive.open(self.members[name])
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError,
                zlib.error) as err:
            raise self._fail(name, err) from None

    def read(self, name: str, limit: int) -> bytes:
        """A member's bytes (at most ``limit``, charged to the budget), CRC checked."""
        info = self.members[name]
        if info.file_size > limit:
            raise self.error(f"{self.where}: member {clip(name)} declares {info.file_size:,} bytes, more than the "
                             f"{limit:,} allowed")
        self.budget.charge(info.file_size, f"member {clip(name)}")
        handle = self._open(name)
        try:
            with handle:
                data = read_stream(handle, info.file_size, self.error, f"{self.where}: member {clip(name)}")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as err:
            raise self._fail(name, err) from None
        if len(data) != info.file_size:
            raise self.error(f"{self.where}: member {clip(name)} holds {len(data)} bytes, its header says "
                             f"{info.file_size}")
        return data

    def verify(self) -> None:
        """Reads every member through (in chunks, nothing kept) so a damaged one fails its CRC check."""
        for name, info in self.members.items():
            self.budget.charge(info.file_size, f"member {clip(name)}")
            handle = self._open(name)
            try:
                with handle:
                    while handle.read(_CHUNK):
                        pass
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as err:
                raise self._fail(name, err) from None

    def array_header(self, name: str) -> NpyHeader:
        """The ``.npy`` header of member ``name``, checked against the member's size; reads nothing else."""
        where = f"{self.where}: array {clip(name)}"
        handle = self._open(name)
        try:
            with handle:
                return read_npy_header(handle, self.members[name].file_size, self.error, where)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            raise self._fail(name, err) from None

    def read_array(self, name: str, header: NpyHeader) -> np.ndarray:
        """The array of member ``name`` (whose header was checked), charged to the budget first."""
        self.budget.charge(header.nbytes, f"array {clip(name)} ({header.describe()})")
        handle = self._open(name)
        try:
            with handle:
                read_npy_header(handle, self.members[name].file_size, self.error, f"{self.where}: array {clip(name)}")
                return read_npy_payload(handle, header, self.error, f"{self.where}: array {clip(name)}")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as err:
            raise self._fail(name, err) from None


class NpyHeader:
    """What an ``.npy`` header declares: shape, dtype, memory order, and the payload size."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, fortran: bool):
        self.shape, self.dtype, self.fortran = shape, dtype, fortran
        self.size = math.prod(shape)
        self.nbytes = self.size * dtype.itemsize

    def describe(self) -> str:
        return f"{self.dtype.str} {list(self.shape)}"


def read_npy_header(handle: BinaryIO, member_size: int, error: ErrorType, where: str) -> NpyHeader:
    """Reads and checks an ``.npy`` header: version 1 or 2, a plain little-endian (or byte) numeric or
    unicode dtype, a shape of non-negative ints whose payload fills the rest of the member exactly."""
    try:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(handle, max_header_size=_NPY_HEADER_LIMIT)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(handle, max_header_size=_NPY_HEADER_LIMIT)
        else:
            raise error(f"{where}: .npy format version {version} is not read (1.0 and 2.0 are)")
    except NeurodeployError:
        raise
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise error(f"{where}: not a readable .npy header ({str(err).splitlines()[0][:120] if str(err) else err!r})"
                    ) from None
    if dtype.fields is not None or dtype.subdtype is not None or dtype.hasobject:
        raise error(f"{where}: structured or object dtype {clip(str(dtype))} (plain numbers expected)")
    if dtype.kind not in "biufU":
        raise error(f"{where}: dtype {dtype.str} (expected real numbers or integers)")
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and not dtype.isnative):
        raise error(f"{where}: dtype {dtype.str} is big-endian (little-endian expected)")
    if any(d < 0 for d in shape):
        raise error(f"{where}: negative dimension in shape {list(shape)}")
    header = NpyHeader(tuple(int(d) for d in shape), dtype.newbyteorder("<") if dtype.byteorder == "=" else dtype,
                       bool(fortran))
    remaining = member_size - handle.tell()
    if header.nbytes != remaining:
        raise error(f"{where}: shape {list(shape)} of {dtype.str} needs {header.nbytes:,} bytes, the member holds "
                    f"{remaining:,}")
    return header


def read_npy_payload(handle: BinaryIO, header: NpyHeader, error: ErrorType, where: str) -> np.ndarray:
    """The payload after a checked header, read in chunks into one preallocated array."""
    array = np.empty(header.size, header.dtype)
    view = memoryview(array).cast("B") if header.nbytes else memoryview(b"")
    position = 0
    while position < header.nbytes:
        chunk = handle.read(min(_CHUNK, header.nbytes - position))
        if not chunk:
            raise error(f"{where}: payload ends after {position:,} of {header.nbytes:,} bytes")
        view[position:position + len(chunk)] = chunk
        position += len(chunk)
    if handle.read(1):
        raise error(f"{where}: data after the payload")
    if header.fortran:
        return array.reshape(header.shape[::-1]).transpose()
    return array.reshape(header.shape)


def open_zip_file(path: str | Path, error: ErrorType, what: str) -> tuple[SafeZip, os.stat_result]:
    """A :class:`SafeZip` over the regular file ``path`` with a budget for its size (the archive closes
    the file)."""
    handle, info = open_regular(path, error, what)
    try:
        archive = SafeZip(handle, error, str(path), Budget(info.st_size, error, str(path)), what)
        archive.handle = handle
        return archive, info
    except BaseException:
        handle.close()
        raise


def check_array(array: np.ndarray, where: str, error: ErrorType, kinds: str = "fiu", ndim: int | None = None,
                finite: bool = True, minimum: float | None = None) -> np.ndarray:
    """Checks an array read from a file: dtype kind, dimensions, finiteness and a lower bound."""
    if array.dtype.kind not in kinds:
        raise error(f"{where}: dtype {array.dtype.str} (expected {_KIND_NAMES.get(kinds, kinds)})")
    if ndim is not None and array.ndim != ndim:
        raise error(f"{where}: {array.ndim}-d array of shape {list(array.shape)} (expected {ndim}-d)")
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise error(f"{where}: contains NaN or infinite values")
    if minimum is not None and array.size and array.min() < minimum:
        raise error(f"{where}: holds {array.min()}, below the minimum {minimum:g}")
    return array


_KIND_NAMES = {"fiu": "numbers", "iu": "integers", "f": "floating point", "biu": "integers"}



# --- writing ----------------------------------------------------------------------------------------


def os_reason(err: OSError) -> str:
    """An OSError's cause in words ("No space left on device", "File too large", ...)."""
    if err.errno == errno.EFBIG:
        return "File too large (a file-size limit, e.g. ulimit -f)"
    return err.strerror or str(err) or type(err).__name__


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Yields a file open for writing under a temporary name beside ``path`` (unique to this process and
    call), flushed to disk and renamed over ``path`` when the block ends without an error. On any error the
    temporary file is removed and ``path`` is left as it was; an OSError becomes one-line WriteError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WriteError(f"{path}: cannot be written ({os_reason(err)}); any earlier file there is unchanged"
                         ) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` written to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(data)
    return Path(path)


def check_output_folder(path: str | Path, flag: str) -> Path:
    """An output folder for files a command writes (``evaluate --out``): a folder or a new one, never a run
    folder (its curves and plots would be replaced by another evaluation's)."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file, not a folder")
    if any((path / name).exists() for name in ("config.json", "result.npz", "summary.json", "compare.json")):
        raise ConfigError(f"{flag} {path}: holds a run (config.json, result.npz or summary.json), whose files would "
                          "be replaced; choose another folder")
    return path
