"""The model cache hands back only the model that the job's inputs make: keyed by the data's content,
the architecture and every training setting, checked on load."""

from __future__ import annotations

import json

import numpy as np
import torch
from test_data import write_idx

from neurodeploy.cli import main
from neurodeploy.data import Dataset, Split, load_dataset
from neurodeploy.jobs import JobConfig, ModelSettings, OptimizationSettings
from neurodeploy.jobs.models import data_fingerprint
from neurodeploy.jobs.optimize import optimization_split


def _digits(folder, seed: int, shift: int) -> None:
    """A small IDX data set in ``folder/raw`` (torchvision's layout): 400 + 100 items, 8x8, 3 classes
    told apart by which third of the image is bright; ``shift`` permutes which class is which."""
    rng = np.random.default_rng(seed)
    raw = folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 400), ("t10k", 100)):
        labels = rng.integers(0, 3, n)
        images = rng.integers(0, 60, (n, 8, 8))
        for i, label in enumerate(labels):
            band = (label + shift) % 3
            images[i, :, band * 2:band * 2 + 3] += 190
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images, True)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels, True)


def _run(data, results, run_id, capsys) -> tuple[dict, str]:
    assert main(["run", "--data", str(data), "--epochs", "1", "--samples", "50", "-T", "8", "--no-progress",
                 "--results-dir", str(results), "--run-id", run_id, "--calibration-samples", "100",
                 "--cache-dir", str(results / "models")]) == 0
    out = capsys.readouterr().out
    return json.loads((results / run_id / "summary.json").read_text()), out


def test_same_named_folders_of_other_data_get_their_own_models(tmp_path, capsys):
    """The reproducer: two data sets in folders with the same name and size (``.../a/raw``,
    ``.../b/raw``) must not share a cached model."""
    _digits(tmp_path / "a", seed=1, shift=0)
    _digits(tmp_path / "b", seed=2, shift=1)
    results = tmp_path / "results"
    first, out_a = _run(tmp_path / "a" / "raw", results, "a", capsys)
    second, out_b = _run(tmp_path / "b" / "raw", results, "b", capsys)
    assert "training dense_mnist" in out_a and "training dense_mnist" in out_b
    assert len(list((results / "models").glob("*.pt"))) == 2
    config_a = json.loads((results / "a" / "config.json").read_text())
    config_b = json.loads((results / "b" / "config.json").read_text())
    assert config_a["models"][0]["key_hash"] != config_b["models"][0]["key_hash"]
    # each run's ANN learned its own data set (3 bright-band classes: chance is 1/3)
    assert first["ann_accuracy"] > 0.9 and second["ann_accuracy"] > 0.9
    again, out_again = _run(tmp_path / "a" / "raw", results, "a-again", capsys)
    assert "training" not in out_again and "cached" in out_again
    assert again["ann_accuracy"] == first["ann_accuracy"]


def test_editing_one_byte_of_the_training_data_invalidates_the_entry(tmp_path, capsys):
    _digits(tmp_path / "d", seed=3, shift=0)
    results = tmp_path / "results"
    _run(tmp_path / "d" / "raw", results, "before", capsys)
    images = tmp_path / "d" / "raw" / "train-images-idx3-ubyte.gz"
    import gzip

    data = bytearray(gzip.decompress(images.read_bytes()))
    data[-1] = (data[-1] + 1) % 256  # one pixel of one training image
    images.write_bytes(gzip.compress(bytes(data)))
    _, out = _run(tmp_path / "d" / "raw", results, "after", capsys)
    assert "training dense_mnist" in out
    assert len(list((results / "models").glob("*.pt"))) == 2


def test_a_cached_file_whose_recorded_key_differs_is_not_used(tmp_path, capsys):
    _digits(tmp_path / "d", seed=4, shift=0)
    results = tmp_path / "results"
    _run(tmp_path / "d" / "raw", results, "one", capsys)
    (path,) = (results / "models").glob("*.pt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["record"]["cache_key"]["data"] = "something else"
    torch.save(checkpoint, path)
    _, out = _run(tmp_path / "d" / "raw", results, "two", capsys)
    out = " ".join(out.split())  # the console wraps long lines (paths) at any word
    assert "made from other inputs" in out and "training dense_mnist" in out


def test_data_fingerprint_follows_content_not_names():
    mnist = load_dataset()
    same = Dataset("another-name", mnist.train, mnist.test, mnist.n_classes)
    assert data_fingerprint(same) == data_fingerprint(mnist)
    images = mnist.train.images.clone()
    images[0, 0, 0, 0] += 1.0 / 255
    assert data_fingerprint(Dataset(mnist.name, Split(images, mnist.train.labels), mnist.test, 10)) != \
        data_fingerprint(mnist)


def test_optimization_items_are_bounded_on_a_large_training_split():
    """60,000 training items: the scale optimization simulates the documented 800 held-out items (or
    --optimize-items), never the whole 10 % validation part (6,000)."""
    n = 60_000
    train = Split(torch.zeros(n, 1, 2, 2), torch.arange(n) % 10)
    dataset = Dataset("big", train, Split(torch.zeros(10, 1, 2, 2), torch.arange(10)), 10)
    assert len(optimization_split(dataset, JobConfig())) == 800
    config = JobConfig(optimization=OptimizationSettings(enabled=True, items=123), model=ModelSettings(seed=1))
    part = optimization_split(dataset, config)
    assert len(part) == 123


def test_job_config_takes_paths_as_folders():
    from pathlib import Path

    from neurodeploy.jobs.config import JobConfig

    config = JobConfig(results_dir=Path("/tmp/runs"), cache_dir=Path("/tmp/models"))
    assert (config.results_dir, config.cache_dir) == ("/tmp/runs", "/tmp/models")
    assert config.as_dict()["results_dir"] == "/tmp/runs"
