"""Reader for the CIFAR-10/100 "python version" folders (pickled dicts of numpy arrays).

The official CIFAR python files are pickles. They are only unpickled with a restricted unpickler
that admits numpy array reconstruction and nothing else, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from neurodeploy.errors import DataError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")


def _load_batch(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return _SafeUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise DataError(f"{path}: cannot read CIFAR batch ({err})") from None


def read_cifar(folder: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` from a CIFAR-10 or CIFAR-100 folder."""
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
        batch = _load_batch(path)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{path}: CIFAR batch lacks 'data' or '{label_key}'")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)
