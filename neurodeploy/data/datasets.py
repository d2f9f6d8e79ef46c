"""Datasets as float tensors: images ``[N, C, H, W]`` scaled to [0, 1] and int64 labels.

``load_dataset(None)`` gives the embedded MNIST subset (8,000 train / 2,000 test digits shipped with
the package). A folder in torchvision's ``raw/`` IDX layout (MNIST, Fashion-MNIST, KMNIST, ...) or a
CIFAR-10/100 python folder works the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from neurodeploy.data.cifar import read_cifar
from neurodeploy.data.idx import read_idx
from neurodeploy.errors import DataError

IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class Split:
    images: torch.Tensor  # float32 [N, C, H, W] in [0, 1]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.images[:n], self.labels[:n])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])


def embedded_mnist_folder() -> Path:
    """Folder of the MNIST subset shipped as package data."""
    return Path(str(resources.files("neurodeploy.data") / "mnist"))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / "raw" / f"{stem}.gz", folder / "raw" / stem):
        if candidate.exists():
            return candidate
    raise DataError(f"{folder}: missing {stem}[.gz] (expected torchvision's raw/ IDX layout)")


def _idx_split(folder: Path, train: bool) -> Split:
    images_name, labels_name = IDX_FILES[train]
    images, labels = read_idx(_find(folder, images_name)), read_idx(_find(folder, labels_name))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def _cifar_split(folder: Path, train: bool) -> Split:
    images, labels = read_cifar(folder, train)
    return Split(torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels))


def load_dataset(folder: str | Path | None = None) -> Dataset:
    """Loads a dataset folder (IDX or CIFAR python layout); None loads the embedded MNIST subset."""
    path = embedded_mnist_folder() if folder is None else Path(folder)
    if not path.is_dir():
        raise DataError(f"{path}: dataset folder not found")
    cifar = any((path / name).exists() for name in ("data_batch_1", "test_batch", "train", "test"))
    reader = _cifar_split if cifar and not (path / "raw").exists() else _idx_split
    train, test = reader(path, True), reader(path, False)
    n_classes = int(max(train.labels.max(), test.labels.max())) + 1
    name = "mnist-embedded" if folder is None else path.name
    return Dataset(name, train, test, n_classes)
