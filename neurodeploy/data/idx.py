"""Reader for IDX files (the MNIST format), gzipped or raw.

Strict and bounded: only a regular file is opened; the header (magic, type, at most 4 dimensions) is
read first and the payload it declares is checked against the file's size and the inflation limit
(:class:`neurodeploy.safe_io.Budget`) before anything is allocated; the payload is then read in chunks
into one array and must end exactly where the header says.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from neurodeploy.errors import DataError
from neurodeploy.safe_io import Budget, open_regular

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: IDX type bytes by meaning: unsigned bytes hold pixels, integer types labels
TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
MAX_DIMS = 4
_CHUNK = 1 << 20


def _read_exactly(stream, count: int, path: Path, what: str) -> bytes:
    data = b""
    while len(data) < count:
        chunk = stream.read(count - len(data))
        if not chunk:
            raise DataError(f"{path}: truncated IDX {what} ({len(data)} of {count} bytes)")
        data += chunk
    return data


def read_idx(path: str | Path, expansion: int = 1) -> np.ndarray:
    """Returns the array stored in an IDX file (``.gz`` is decompressed), in native byte order.
    ``expansion`` is how many times its payload's size the caller will hold in memory (images become
    float32), charged to the inflation budget before anything is read."""
    path = Path(path)
    handle, info = open_regular(path, DataError, "IDX file")
    with handle:
        stream = gzip.GzipFile(fileobj=handle, mode="rb") if path.suffix == ".gz" else handle
        try:
            return _read(stream, path, info.st_size, gz=path.suffix == ".gz", expansion=expansion)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: cannot read IDX file ({type(err).__name__}: {err})") from None


def _read(stream, path: Path, file_size: int, gz: bool, expansion: int = 1) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = magic[3]
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions (1 to {MAX_DIMS} are read)")
    raw_shape = _read_exactly(stream, 4 * ndim, path, "header")
    shape = tuple(int.from_bytes(raw_shape[4 * i: 4 * i + 4], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[magic[2]])
    expected = math.prod(shape) * dtype.itemsize
    header = 4 + 4 * ndim
    if not gz and file_size - header != expected:
        raise DataError(f"{path}: IDX payload has {file_size - header} bytes, shape {shape} needs {expected}")
    Budget(file_size, DataError, str(path)).charge(expected * max(1, expansion),
                                                   f"an IDX payload of shape {list(shape)}")
    array = np.empty(math.prod(shape), dtype)
    view = memoryview(array).cast("B") if expected else memoryview(b"")
    position = 0
    while position < expected:
        chunk = stream.read(min(_CHUNK, expected - position))
        if not chunk:
            raise DataError(f"{path}: IDX payload has {position} bytes, shape {shape} needs {expected}")
        view[position:position + len(chunk)] = chunk
        position += len(chunk)
    if stream.read(1):
        raise DataError(f"{path}: data after the IDX payload of shape {shape}")
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def idx_type(array: np.ndarray) -> str:
    """The IDX type name of an array read by :func:`read_idx`."""
    for code, dtype in _DTYPES.items():
        if np.dtype(dtype).newbyteorder("=") == array.dtype:
            return TYPE_NAMES[code]
    return str(array.dtype)
