"""Reader for the CIFAR-10/100 "python version" folders (pickled dicts of numpy arrays).

The official CIFAR python files are pickles. They are only unpickled with a restricted unpickler
that admits numpy array reconstruction and nothing else, so a tampered file cannot run code; only a
regular file of bounded size is opened. A batch must be a dict whose ``data`` is a ``uint8`` array of
rows 3,072 wide (3 x 32 x 32) and whose labels (``labels`` for CIFAR-10, ``fine_labels`` for
CIFAR-100) are integers, one per row, in ``[0, 10)`` or ``[0, 100)`` (checked with a strict pydantic
model, then on the arrays).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from neurodeploy.errors import DataError
from neurodeploy.safe_io import clip, open_regular, pydantic_message

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
#: largest CIFAR batch file read (the CIFAR-100 training file has 155 MB)
MAX_BATCH_BYTES = 1 << 30
ROW = 3 * 32 * 32
CLASSES = {"labels": 10, "fine_labels": 100}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")


class _Batch(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", arbitrary_types_allowed=True)
    data: np.ndarray


def _numpy_int(value):
    """numpy integer scalars (as some CIFAR writers store labels) are the integers they hold."""
    return int(value) if isinstance(value, np.integer) else value


def _labels_model(key: str) -> type[BaseModel]:
    label = Annotated[int, BeforeValidator(_numpy_int), Field(ge=0, lt=CLASSES[key])]
    fields: dict[str, Any] = {key: (list[label], ...)}
    return create_model(f"_Labels_{key}", __config__=ConfigDict(strict=True, extra="allow"), **fields)


_LABELS = {key: _labels_model(key) for key in CLASSES}


def _load_batch(path: Path) -> dict:
    handle, info = open_regular(path, DataError, "CIFAR batch")
    with handle:
        if info.st_size > MAX_BATCH_BYTES:
            raise DataError(f"{path}: {info.st_size:,} bytes, more than the {MAX_BATCH_BYTES:,} a CIFAR batch may have")
        try:
            batch = _SafeUnpickler(handle, encoding="latin1").load()
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, RecursionError, UnicodeDecodeError, OverflowError) as err:
            raise DataError(f"{path}: cannot read CIFAR batch ({type(err).__name__}: {str(err)[:120]})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: a CIFAR batch is a dict, this file holds a {type(batch).__name__}")
    return batch


def _check_batch(path: Path, batch: dict, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: CIFAR batch lacks 'data' or '{label_key}'")
    labels = batch[label_key]
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise DataError(f"{path}: {label_key} must be integers, one per row, got {labels.dtype} "
                            f"{list(labels.shape)}")
        labels = labels.tolist()
    try:
        data = _Batch.model_validate(batch).data
        labels = getattr(_LABELS[label_key].model_validate({label_key: labels}), label_key)
    except ValidationError as err:
        raise DataError(f"{path}: {pydantic_message(err)}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        raise DataError(f"{path}: data must be a uint8 array of rows {ROW} wide (3 x 32 x 32), got {data.dtype} "
                        f"{list(data.shape)}")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} {label_key}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(folder: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Images ``[N, 3, 32, 32]`` uint8, labels ``[N]`` and the class count (10 or 100) from a CIFAR-10
    or CIFAR-100 folder."""
    folder = Path(folder)
    if (folder / "data_batch_1").exists() or (folder / "test_batch").exists():
        files = [folder / f"data_batch_{i}" for i in range(1, 6)] if train else [folder / "test_batch"]
        label_key = "labels"
    elif (folder / "train").exists() or (folder / "test").exists():
        files = [folder / ("train" if train else "test")]
        label_key = "fine_labels"
    else:
        raise DataError(f"{folder}: no CIFAR-10 (data_batch_*/test_batch) or CIFAR-100 (train/test) files")
    images, labels = [], []
    for path in files:
        if not path.exists():
            raise DataError(f"{path}: missing CIFAR file")
        x, y = _check_batch(path, _load_batch(path), label_key)
        images.append(x)
        labels.append(y)
    if not images:
        raise DataError(f"{clip(str(folder))}: no CIFAR batches")
    return np.concatenate(images), np.concatenate(labels), CLASSES[label_key]
