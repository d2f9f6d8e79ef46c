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
"""

from __future__ import annotations

import argparse
import gzip
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
    args = parser.parse_args()
    for folder in make(Path(args.out), args.seed):
        print(folder)


if __name__ == "__main__":
    main()
