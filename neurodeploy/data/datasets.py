"""Datasets as float tensors: images ``[N, C, H, W]`` scaled to [0, 1] and int64 labels.

``load_dataset(None)`` gives the embedded MNIST subset (8,000 train / 2,000 test digits shipped with
the package). A folder in torchvision's ``raw/`` IDX layout (MNIST, Fashion-MNIST, KMNIST, ...) or a
CIFAR-10/100 python folder works the same way.

Loading is strict (every failure one :class:`DataError` naming the file): each split has at least one
item and as many labels as images; IDX images are unsigned bytes ``[N, H, W]`` and labels integers;
labels are whole numbers in ``[0, n_classes)``. CIFAR-10 has 10 classes and CIFAR-100 100; an IDX
folder has ``max label + 1`` classes, and every one of them must occur in the training split (so a
stray label such as 255 cannot silently make a 256-class problem). :func:`check_items` checks a
dataset against the input shape (and class count) of a model before training or simulation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from neurodeploy.data.cifar import read_cifar
from neurodeploy.data.idx import idx_type, read_idx
from neurodeploy.errors import DataError

IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: classes a dataset may have
MAX_CLASSES = 100_000


@dataclass
class Split:
    images: torch.Tensor  # float32 [N, *item]: [N, C, H, W] in [0, 1] for images
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:  # shapes and dtypes, not the tensors' values (thousands of items)
        return (f"Split({len(self)} items: images {self.images.dtype} {list(self.images.shape)}, "
                f"labels {self.labels.dtype} {list(self.labels.shape)})")

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.images[:n], self.labels[:n])

    def validate(self, where: str, n_classes: int) -> Split:
        """Raises DataError unless the split holds at least one item, as many labels as images,
        finite float images ``[N, C, H, W]`` and int64 labels in ``[0, n_classes)``."""
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim < 2:
            raise DataError(f"{where}: images must be a float tensor [N, *item], got "
                            f"{getattr(images, 'dtype', type(images).__name__)} {list(getattr(images, 'shape', []))}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
            raise DataError(f"{where}: labels must be an int64 tensor [N], got "
                            f"{getattr(labels, 'dtype', type(labels).__name__)} {list(getattr(labels, 'shape', []))}")
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
        if images.shape[0] == 0:
            raise DataError(f"{where}: no items")
        if min(images.shape[1:]) < 1:
            raise DataError(f"{where}: images of shape {list(images.shape[1:])} are empty")
        if not bool(torch.isfinite(images).all()):
            raise DataError(f"{where}: images contain NaN or infinite values")
        bad = (labels < 0) | (labels >= n_classes)
        if bool(bad.any()):
            raise DataError(f"{where}: label {int(labels[bad][0])} of item {int(bad.nonzero()[0, 0])} is outside "
                            f"[0, {n_classes})")
        return self


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: {self.n_classes} classes, items {list(self.input_shape)}, "
                f"train={self.train!r}, test={self.test!r})")

    def content_hash(self, splits: tuple[str, ...] = ("train", "test")) -> str:
        """sha256 of the images and labels of ``splits`` (both by default: what a run trains on and
        simulates; ``("train",)``: what training sees), their shapes and dtypes and the class count; two
        folders with the same content give the same hash."""
        parts = [getattr(self, name) for name in splits]
        digest = hashlib.sha256()
        digest.update(repr((self.n_classes, splits, [(tuple(p.images.shape), str(p.images.dtype)) for p in parts]))
                      .encode())
        for part in parts:
            for tensor in (part.images, part.labels):
                digest.update(np.ascontiguousarray(tensor.numpy()).view(np.uint8).reshape(-1))  # no copy of the bytes
        return digest.hexdigest()


def check_items(dataset: Dataset, input_shape: tuple[int, ...], n_classes: int | None = None) -> None:
    """Raises DataError unless every item of both splits has ``input_shape`` (a model's input, without
    the batch dimension) and, when ``n_classes`` (the model's outputs) is given, every label is below it."""
    expected = tuple(int(s) for s in input_shape)
    for part, split in (("training", dataset.train), ("test", dataset.test)):
        shape = tuple(split.images.shape[1:])
        if shape != expected:
            raise DataError(f"{dataset.name}: {part} items have shape {list(shape)}, the model takes {list(expected)}")
        if n_classes is not None and len(split) and int(split.labels.max()) >= n_classes:
            raise DataError(f"{dataset.name}: {part} label {int(split.labels.max())} is outside the model's "
                            f"{n_classes} classes")
    if n_classes is not None and dataset.n_classes > n_classes:
        raise DataError(f"{dataset.name}: {dataset.n_classes} classes, the model has {n_classes} outputs")


def embedded_mnist_folder() -> Path:
    """Folder of the MNIST subset shipped as package data."""
    return Path(str(resources.files("neurodeploy.data") / "mnist"))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / "raw" / f"{stem}.gz", folder / "raw" / stem):
        if candidate.exists():
            return candidate
    raise DataError(f"{folder}: missing {stem}[.gz] (expected torchvision's raw/ IDX layout)")


def _idx_split(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = (_find(folder, name) for name in IDX_FILES[train])
    images, labels = read_idx(images_path, expansion=5), read_idx(labels_path, expansion=9)  # as float32 / int64
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{images_path}: images must be unsigned bytes [N, H, W], got {idx_type(images)} "
                        f"{list(images.shape)}")
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(f"{labels_path}: labels must be integers [N], got {idx_type(labels)} {list(labels.shape)}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{folder}: images {images.shape} and labels {labels.shape} do not match "
                        f"({images.shape[0]} images, {labels.shape[0]} labels)")
    if labels.size and labels.min() < 0:
        raise DataError(f"{labels_path}: label {int(labels.min())} is negative")
    return images[:, None], labels.astype(np.int64)


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    scaled = images.astype(np.float32)
    scaled /= 255.0  # in place: the float copy is the only one
    return Split(torch.from_numpy(scaled), torch.from_numpy(labels))


def class_count(where: Path, train_labels: np.ndarray, test_labels: np.ndarray) -> int:
    """max label + 1, when every class below it occurs in the training split; a test label above every
    training label is reported as the test split's (a class the model never trained on)."""
    if not train_labels.size:
        raise DataError(f"{where}: the training split has no items")
    train_max = int(train_labels.max())
    test_max = int(test_labels.max(initial=0))
    n_classes = max(train_max, test_max) + 1
    if n_classes > MAX_CLASSES:
        split = "test" if test_max > train_max else "training"
        raise DataError(f"{where}: {split} label {n_classes - 1} would make {n_classes:,} classes, more than the "
                        f"{MAX_CLASSES:,} allowed")
    if test_max > train_max:
        item = int(np.flatnonzero(test_labels == test_max)[0])
        raise DataError(f"{where}: test item {item} has label {test_max}, but the training split's labels stop at "
                        f"{train_max}: every test label must be a class of the training split")
    present = np.bincount(train_labels, minlength=n_classes) > 0
    if not present.all():
        absent = np.flatnonzero(~present)
        raise DataError(f"{where}: training labels reach {n_classes - 1} but class {int(absent[0])} never occurs in "
                        f"the training split ({len(absent)} classes below the largest label are absent)")
    return n_classes


def load_dataset(folder: str | Path | None = None) -> Dataset:
    """Loads a dataset folder (IDX or CIFAR python layout) or array data set (an ``.npz`` file or a folder of
    ``.npy`` files: :mod:`neurodeploy.data.arrays`); None loads the embedded MNIST subset."""
    path = embedded_mnist_folder() if folder is None else Path(folder)
    from neurodeploy.data.arrays import is_array_data, read_arrays

    if folder is not None and is_array_data(path):
        train, test, n_classes = read_arrays(path)
        if train.images.shape[1:] != test.images.shape[1:]:
            raise DataError(f"{path}: training items have shape {list(train.images.shape[1:])}, test items "
                            f"{list(test.images.shape[1:])}")
        name = path.stem if path.is_file() else path.name
        return Dataset(name, train.validate(f"{path} (training split)", n_classes),
                       test.validate(f"{path} (test split)", n_classes), n_classes)
    if not path.is_dir():
        raise DataError(f"{path}: dataset folder not found")
    cifar = any((path / name).exists() for name in ("data_batch_1", "test_batch", "train", "test"))
    if cifar and not (path / "raw").exists():
        (train_x, train_y, n_classes), (test_x, test_y, _) = read_cifar(path, True), read_cifar(path, False)
    else:
        (train_x, train_y), (test_x, test_y) = _idx_split(path, True), _idx_split(path, False)
        n_classes = class_count(path, train_y, test_y)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{path}: training items have shape {list(train_x.shape[1:])}, test items "
                        f"{list(test_x.shape[1:])}")
    name = "mnist-embedded" if folder is None else path.name
    train = _split(train_x, train_y).validate(f"{path} (training split)", n_classes)
    test = _split(test_x, test_y).validate(f"{path} (test split)", n_classes)
    return Dataset(name, train, test, n_classes)
