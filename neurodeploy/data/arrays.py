"""Data sets as arrays: an ``.npz`` file with ``x_train``, ``y_train``, ``x_test`` and ``y_test``, or a folder
of those four ``.npy`` files, with items of any shape (images ``[N, C, H, W]``, signals ``[N, C, L]``,
vectors ``[N, D]``, ...).

Read with ``allow_pickle=False`` (no code runs). Items become float32 as given, except unsigned bytes,
which are scaled to [0, 1] as the IDX reader does; labels are whole numbers in ``[0, n_classes)`` with
``n_classes`` = max label + 1, every class present in the training split.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from neurodeploy.errors import DataError

KEYS = ("x_train", "y_train", "x_test", "y_test")


def is_array_data(path: Path) -> bool:
    """An ``.npz`` file, or a folder holding ``x_train.npy`` (the array layout)."""
    return (path.is_file() and path.suffix == ".npz") or (path.is_dir() and (path / "x_train.npy").is_file())


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.is_file():
            with np.load(path, allow_pickle=False) as archive:
                missing = [k for k in KEYS if k not in archive.files]
                if missing:
                    raise DataError(f"{path}: lacks {', '.join(missing)} (an .npz of x_train, y_train, x_test, "
                                    f"y_test; it holds {', '.join(archive.files) or 'nothing'})")
                return {k: archive[k] for k in KEYS}
        missing = [f"{k}.npy" for k in KEYS if not (path / f"{k}.npy").is_file()]
        if missing:
            raise DataError(f"{path}: lacks {', '.join(missing)}")
        return {k: np.load(path / f"{k}.npy", allow_pickle=False) for k in KEYS}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not readable numpy arrays ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:160] if str(err) else ''})") from None


def _items(path: Path, key: str, x: np.ndarray) -> torch.Tensor:
    if x.dtype.kind not in "fiub" or x.ndim < 2:
        raise DataError(f"{path}: {key} must be numbers [N, *item], got {x.dtype} {list(x.shape)}")
    scaled = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(scaled))


def _labels(path: Path, key: str, y: np.ndarray) -> torch.Tensor:
    if y.ndim != 1 or y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{path}: {key} must be whole-number labels [N], got {y.dtype} {list(y.shape)}")
    if y.size and y.min() < 0:
        raise DataError(f"{path}: {key} has the negative label {int(y.min())}")
    return torch.from_numpy(y.astype(np.int64))


def read_arrays(path: str | Path):
    """(train Split, test Split, n_classes) of an array data set (validated by the caller)."""
    from neurodeploy.data.datasets import Split, class_count

    path = Path(path)
    raw = _read(path)
    train = Split(_items(path, "x_train", raw["x_train"]), _labels(path, "y_train", raw["y_train"]))
    test = Split(_items(path, "x_test", raw["x_test"]), _labels(path, "y_test", raw["y_test"]))
    n_classes = class_count(path, train.labels.numpy(), test.labels.numpy())
    return train, test, n_classes
