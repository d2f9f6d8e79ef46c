"""Dataset readers: IDX (gz or raw, torchvision raw/ layout), CIFAR python folders, the embedded MNIST."""

import gzip
import pickle

import numpy as np
import pytest

from neurodeploy.data import load_dataset
from neurodeploy.data.idx import read_idx
from neurodeploy.errors import DataError


def write_idx(path, array: np.ndarray, gz: bool):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_embedded_mnist():
    dataset = load_dataset()
    assert (len(dataset.train), len(dataset.test), dataset.n_classes) == (8000, 2000, 10)
    assert dataset.input_shape == (1, 28, 28)
    assert float(dataset.train.images.min()) >= 0.0 and float(dataset.train.images.max()) <= 1.0


@pytest.mark.parametrize("gz, raw_subfolder", [(True, False), (False, True)])
def test_idx_folder(tmp_path, gz, raw_subfolder):
    folder = tmp_path / "raw" if raw_subfolder else tmp_path
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", 12), ("t10k", 5)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 4, 4)), gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 3, n), gz)
    dataset = load_dataset(tmp_path)
    assert dataset.input_shape == (1, 4, 4) and len(dataset.train) == 12 and len(dataset.test) == 5
    raw = read_idx(folder / f"train-images-idx3-ubyte{suffix}")
    np.testing.assert_allclose(dataset.train.images[:, 0].numpy(), raw / 255.0, rtol=1e-6)


def test_bad_idx_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((3, 2, 2)), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(DataError, match="IDX payload has 9 bytes"):
        read_idx(tmp_path / "short")
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="dataset folder not found"):
        load_dataset(tmp_path / "nowhere")


def test_cifar10_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, 4))}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    dataset = load_dataset(tmp_path)
    assert dataset.input_shape == (3, 32, 32) and len(dataset.train) == 20 and len(dataset.test) == 4


def test_cifar100_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("train", 6), ("test", 3)):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": [99] + [0] * (n - 1)}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    dataset = load_dataset(tmp_path)
    assert dataset.n_classes == 100 and len(dataset.test) == 3


class _Evil:
    def __reduce__(self):
        return (print, ("owned",))


def test_cifar_reader_refuses_code(tmp_path):
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": _Evil(), "labels": [1]}))
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": _Evil(), "labels": [1]}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_dataset(tmp_path)
