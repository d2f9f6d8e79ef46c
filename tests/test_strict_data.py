"""Strict dataset folders: the audit's crashes (zero items, a label of 2^31-1, CIFAR string labels,
CIFAR rows not 3,072 wide, 28x29 images into a 28x28 model) and silent acceptances (NaN pixels, float
labels, label -1, one label 255 making a 256-class problem, 40 images with 10 labels) are each one
DataError line naming the file."""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest

from neurodeploy.cli import main
from neurodeploy.data import check_items, load_dataset
from neurodeploy.errors import DataError

CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


def idx(array: np.ndarray, dtype: str = "u1") -> bytes:
    array = np.asarray(array).astype(dtype)
    header = bytes([0, 0, CODES[dtype], array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.tobytes()


def idx_folder(root: Path, gz: bool = False, **replace: bytes) -> Path:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": idx(rng.integers(0, 256, (12, 28, 28))),
        "train-labels-idx1-ubyte": idx(np.arange(12) % 3),
        "t10k-images-idx3-ubyte": idx(rng.integers(0, 256, (6, 28, 28))),
        "t10k-labels-idx1-ubyte": idx(np.arange(6) % 3),
    }
    files.update({name.replace("_", "-"): data for name, data in replace.items()})
    root.mkdir(exist_ok=True)
    for name, data in files.items():
        (root / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return root


def cifar_folder(root: Path, edit=None) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), "labels": [0, 1, 2, 3]}
        if edit is not None and name == "data_batch_1":
            edit(batch)
        (root / name).write_bytes(pickle.dumps(batch))
    return root


def refused(folder: Path, *needles: str) -> str:
    with pytest.raises(DataError) as caught:
        load_dataset(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_valid_folders_load(tmp_path):
    dataset = load_dataset(idx_folder(tmp_path / "idx", gz=True))
    assert dataset.n_classes == 3 and dataset.input_shape == (1, 28, 28)
    assert load_dataset(cifar_folder(tmp_path / "cifar")).n_classes == 10


# --- the crashes -----------------------------------------------------------------------------------


def test_zero_items(tmp_path):
    refused(idx_folder(tmp_path, train_images_idx3_ubyte=idx(np.zeros((0, 28, 28))),
                       train_labels_idx1_ubyte=idx(np.zeros(0))), "no items")


def test_a_label_of_2_31_minus_1_is_refused_before_anything_is_sized_by_it(tmp_path):
    labels = np.append(np.arange(11) % 3, 2**31 - 1)
    refused(idx_folder(tmp_path, train_labels_idx1_ubyte=idx(labels, ">i4")), "2147483647", "more than the")


def test_cifar_string_labels(tmp_path):
    refused(cifar_folder(tmp_path, lambda b: b.update(labels=["cat", "dog", "cat", "ship"])), "labels[0]", "'cat'")


@pytest.mark.parametrize("width", [3071, 1024])
def test_cifar_rows_not_3072_wide(tmp_path, width):
    refused(cifar_folder(tmp_path, lambda b: b.update(data=np.zeros((4, width), np.uint8))), "3072 wide",
            f"[4, {width}]")


def test_items_of_another_shape_than_the_model_takes(tmp_path):
    rng = np.random.default_rng(0)
    folder = idx_folder(tmp_path, train_images_idx3_ubyte=idx(rng.integers(0, 256, (12, 28, 29))),
                        t10k_images_idx3_ubyte=idx(rng.integers(0, 256, (6, 28, 29))))
    dataset = load_dataset(folder)
    with pytest.raises(DataError, match=r"items have shape \[1, 28, 29\], the model takes \[1, 28, 28\]"):
        check_items(dataset, (1, 28, 28))
    with pytest.raises(DataError, match="training label 2 is outside the model.s 2 classes"):
        check_items(dataset, (1, 28, 29), n_classes=2)
    check_items(dataset, (1, 28, 29), n_classes=3)


def test_train_and_test_items_of_different_shapes(tmp_path):
    folder = idx_folder(tmp_path, t10k_images_idx3_ubyte=idx(np.zeros((6, 28, 29))))
    refused(folder, "training items have shape [1, 28, 28], test items [1, 28, 29]")


# --- the silent acceptances ----------------------------------------------------------------------------


def test_nan_pixels(tmp_path):
    images = np.random.default_rng(0).uniform(size=(12, 28, 28))
    images[0, 0, 0] = np.nan
    refused(idx_folder(tmp_path, train_images_idx3_ubyte=idx(images, ">f4")), "unsigned bytes", "float")


def test_float_labels(tmp_path):
    labels = idx(np.arange(12) % 3 + 0.5, ">f4")
    refused(idx_folder(tmp_path, train_labels_idx1_ubyte=labels), "labels must be integers")
    refused(cifar_folder(tmp_path / "c", lambda b: b.update(labels=[0.0, 1.5, 2.0, 3.0])), "labels[0]", "0.0")


def test_negative_labels(tmp_path):
    labels = np.append(np.arange(11) % 3, -1)
    refused(idx_folder(tmp_path, train_labels_idx1_ubyte=idx(labels, "i1")), "label -1 is negative")
    refused(cifar_folder(tmp_path / "c", lambda b: b["labels"].__setitem__(0, -1)), "labels[0]", "-1")


def test_one_label_255_does_not_make_256_classes(tmp_path):
    labels = np.append(np.arange(11) % 3, 255)
    refused(idx_folder(tmp_path, train_labels_idx1_ubyte=idx(labels)), "labels reach 255 but class 3 never occurs")
    refused(cifar_folder(tmp_path / "c", lambda b: b["labels"].__setitem__(0, 255)), "labels[0]", "255")


def test_more_images_than_labels(tmp_path):
    refused(cifar_folder(tmp_path, lambda b: b.update(data=np.zeros((40, 3072), np.uint8),
                                                      labels=[0] * 10)), "40 images but 10 labels")
    refused(idx_folder(tmp_path / "i", train_labels_idx1_ubyte=idx(np.arange(10) % 3)), "12 images, 10 labels")


# --- files that are not what they seem ---------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_devices_are_refused_without_reading(tmp_path):
    folder = idx_folder(tmp_path / "fifo")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    os.mkfifo(folder / "t10k-labels-idx1-ubyte")
    refused(folder, "not a regular file")
    folder = cifar_folder(tmp_path / "urandom")
    (folder / "test_batch").unlink()
    (folder / "test_batch").symlink_to("/dev/urandom")
    refused(folder, "not a regular file")


def test_a_gzip_bomb_is_refused_before_inflating(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(s).to_bytes(4, "big") for s in (1 << 14, 256, 256))
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = c.compress(header) + b"".join(c.compress(bytes(1 << 20)) for _ in range(64)) + c.flush()
    folder = idx_folder(tmp_path, gz=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(data)
    refused(folder, "inflate to more than")


def test_cifar_pickles_and_garbage(tmp_path):
    refused(cifar_folder(tmp_path / "a", lambda b: b.update(data=b["data"].astype(np.int64))), "uint8")
    refused(cifar_folder(tmp_path / "b", lambda b: b.update(labels=[[0, 1]] * 4)), "labels[0]")
    folder = cifar_folder(tmp_path / "c")
    (folder / "test_batch").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    refused(folder, "refusing to load os.system")
    (folder / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    refused(folder, "a CIFAR batch is a dict")


def test_the_cli_prints_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = idx_folder(tmp_path / "d", train_labels_idx1_ubyte=idx(np.append(np.arange(11) % 3, 255)))
    assert main(["run", "--data", str(folder), "--samples", "5", "-T", "2", "--no-progress"]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and "labels reach 255" in lines[0], lines
