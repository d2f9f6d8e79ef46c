"""Reading a NIR file (HDF5) with checks, instead of ``nir.read``, which follows every link and loads every
array whole: the file is walked once without reading any array, and refused (:class:`NIRFileError`, one
line naming the object) when it

- holds a soft or external link (an external link would read another file, e.g. zero weights from
  elsewhere) or any link that is not a plain hard link;
- nests groups deeper than :data:`MAX_DEPTH` or holds more than :data:`MAX_OBJECTS` objects (a hard link
  to an ancestor makes the tree infinite);
- declares an array without a shape (an HDF5 null dataspace), of a dtype that is not a real number (complex
  weights would lose their imaginary part, string weights are not numbers), or strings outside the names,
  edges, ``padding`` and metadata where NIR writes text;
- declares more bytes in all than ``max_bytes`` (default :data:`MAX_BYTES`): compressed data can declare
  gigabytes in a small file, so the declared shapes are summed before anything is read.

Then the node tree is read into the dictionary ``nir.read`` would build and turned into ``nir`` objects
with ``nir.dict2NIRNode`` (no type check: the importer checks shapes itself). docs/nir.md, "Reading files".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodeploy.nir.vocabulary import NIRError, _nir

#: deepest group nesting accepted (a NIR graph nested n deep uses about 2n + 2 levels)
MAX_DEPTH = 32
#: most groups and datasets accepted in one file
MAX_OBJECTS = 100_000
#: most bytes the file's arrays may declare in all (1 GiB); strings count their element count x 64 bytes
MAX_BYTES = 1 << 30
#: dataset names that hold text in NIR files (plus everything under a ``metadata`` group)
TEXT_NAMES = frozenset({"type", "edges", "padding", "version"})
#: bytes counted per element of a variable-length string dataset (its real length is unknown unread)
STRING_ELEMENT_BYTES = 64


class NIRFileError(NIRError):
    """A NIR file that is refused before its arrays are read (links, dtypes, shapes, sizes, nesting)."""


def _is_text(dtype: np.dtype) -> bool:
    import h5py

    return dtype.kind in "SU" or h5py.check_string_dtype(dtype) is not None


def _check_tree(root, path: Path, max_bytes: int) -> None:
    """Walks every group below ``root`` without reading data; raises NIRFileError on the first problem."""
    import h5py

    total, objects = 0, 0
    stack = [(root, "", 0, False)]
    while stack:
        group, name, depth, in_metadata = stack.pop()
        if depth > MAX_DEPTH:
            raise NIRFileError(f"{path}: groups nested deeper than {MAX_DEPTH} levels at '{name}' (a link back to "
                               "an ancestor?)")
        for key in group:
            where = f"{name}/{key}"
            objects += 1
            if objects > MAX_OBJECTS:
                raise NIRFileError(f"{path}: more than {MAX_OBJECTS} groups and arrays")
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.SoftLink):
                raise NIRFileError(f"{path}: '{where}' is a soft link (to '{link.path}'); links are not followed")
            if isinstance(link, h5py.ExternalLink):
                raise NIRFileError(f"{path}: '{where}' is an external link (to '{link.path}' in {link.filename}); "
                                   "links to other files are not followed")
            if not isinstance(link, h5py.HardLink):
                raise NIRFileError(f"{path}: '{where}' is a {type(link).__name__}; only plain groups and arrays "
                                   "are read")
            item = group.get(key)
            if isinstance(item, h5py.Group):
                stack.append((item, where, depth + 1, in_metadata or key == "metadata"))
                continue
            if not isinstance(item, h5py.Dataset):
                raise NIRFileError(f"{path}: '{where}' is neither a group nor an array")
            if item.shape is None:
                raise NIRFileError(f"{path}: '{where}' declares no shape (an empty HDF5 dataspace)")
            size = int(np.prod(item.shape, dtype=np.float64))
            dtype = item.dtype
            if _is_text(dtype):
                if not (in_metadata or key in TEXT_NAMES):
                    raise NIRFileError(f"{path}: '{where}' holds text; NIR parameters are real numbers")
                total += size * STRING_ELEMENT_BYTES
            elif dtype.kind in "biuf":
                total += size * dtype.itemsize
            elif dtype.kind == "c":
                raise NIRFileError(f"{path}: '{where}' is complex ({dtype}); NIR parameters are real numbers "
                                   "(the imaginary part would be lost)")
            else:
                raise NIRFileError(f"{path}: '{where}' has dtype {dtype}; NIR parameters are real numbers")
            if total > max_bytes:
                raise NIRFileError(f"{path}: its arrays declare more than {max_bytes} bytes (at '{where}', "
                                   f"{list(item.shape)} x {dtype}); refused before reading")


def _read_tree(group) -> dict:
    """The node tree as the dictionary ``nir.read`` builds (text decoded), after :func:`_check_tree`."""
    import h5py

    out: dict = {}
    for key in group:
        item = group[key]
        if isinstance(item, h5py.Group):
            out[key] = _read_tree(item)
        else:
            value = item[()]
            out[key] = value.decode("utf8") if isinstance(value, bytes) else value
    return out


def check_file(path: str | Path, max_bytes: int = MAX_BYTES) -> None:
    """Refuses (NIRFileError) a file with links, non-real or shapeless arrays, too deep nesting or more than
    ``max_bytes`` declared, without reading its arrays."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            _check_tree(f, path, max_bytes)
    except NIRError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise NIRFileError(f"{path}: not a readable HDF5 file ({type(err).__name__}: {err})") from None


def read_graph(path: str | Path, max_bytes: int = MAX_BYTES):
    """The ``nir.NIRGraph`` (or node) stored in ``path``, read with the checks of this module."""
    import h5py

    nir = _nir()
    path = Path(path)
    if not path.is_file():
        raise NIRFileError(f"{path}: no such NIR file")
    check_file(path, max_bytes)
    try:
        with h5py.File(path, "r") as f:
            if not isinstance(f.get("node", getlink=True), h5py.HardLink) or not isinstance(f["node"], h5py.Group):
                raise NIRFileError(f"{path}: no NIR graph in this HDF5 file (no group 'node')")
            tree = _read_tree(f["node"])
    except NIRError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise NIRFileError(f"{path}: not a readable NIR file ({type(err).__name__}: {err})") from None
    if "type_check" in tree:
        raise NIRFileError(f"{path}: the graph holds a 'type_check' entry, which NIR reserves")
    tree["type_check"] = False
    try:
        return nir.dict2NIRNode(tree)
    except (KeyError, ValueError, TypeError, AssertionError, AttributeError, IndexError, OverflowError) as err:
        text = str(err).splitlines()[0] if str(err) else ""
        raise NIRFileError(f"{path}: not a NIR graph nir {nir.version} can build ({type(err).__name__}: "
                           f"{text:.200})") from None
