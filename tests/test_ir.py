"""IR validation, bit-exact round trips, clear errors on bad files, and `info` statistics."""

import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn

from neurodeploy.convert import convert
from neurodeploy.errors import IRFormatError, IRValidationError
from neurodeploy.ir import (
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    Network,
    NeuronSpec,
    Population,
    load_network,
    network_summary,
    save_network,
)
from neurodeploy.ir.connectivity import projection_fan


@pytest.fixture
def conv_network():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    net = convert(model, torch.rand(16, 1, 8, 8), granularity="neuron", v_init="uniform", seed=5)
    first = next(p for p in net.populations.values() if p.role == "hidden")
    first.neuron.threshold = np.linspace(0.5, 1.5, 4).astype(np.float32)  # per channel
    first.neuron.spike_cap, first.neuron.negative_spikes = 3, True
    return net


def _assert_same(a: Network, b: Network):
    assert list(a.populations) == list(b.populations)
    assert a.metadata == b.metadata
    for name, pa in a.populations.items():
        pb = b.populations[name]
        assert (pa.shape, pa.role, pa.metadata) == (pb.shape, pb.role, pb.metadata)
        if pa.bias is None:
            assert pb.bias is None
        else:
            assert pa.bias.dtype == pb.bias.dtype and np.array_equal(pa.bias, pb.bias)
        if pa.neuron is not None:
            for key in vars(pa.neuron):
                va, vb = getattr(pa.neuron, key), getattr(pb.neuron, key)
                assert np.array_equal(np.asarray(va), np.asarray(vb)), (name, key)
    for qa, qb in zip(a.projections, b.projections, strict=True):
        assert (qa.source, qa.target) == (qb.source, qb.target)
        for oa, ob in zip(qa.ops, qb.ops, strict=True):
            assert type(oa) is type(ob) and oa.params() == ob.params()
            for key, array in oa.arrays().items():
                other = ob.arrays()[key]
                assert array.dtype == other.dtype and array.tobytes() == other.tobytes()


@pytest.mark.parametrize("suffix", [".zip", "_folder"])
def test_round_trip_is_bit_exact(conv_network, tmp_path, suffix):
    path = save_network(conv_network, tmp_path / f"net{suffix}")
    _assert_same(conv_network, load_network(path))


def test_truncated_archive_gives_clear_error(conv_network, tmp_path):
    path = save_network(conv_network, tmp_path / "net.zip")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IRFormatError, match="truncated or corrupt"):
        load_network(path)


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(IRFormatError, match="not a readable IR archive"):
        load_network(tmp_path / "junk.zip")
    with pytest.raises(IRFormatError, match="no such IR file"):
        load_network(tmp_path / "missing.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IRFormatError, match="missing network.json"):
        load_network(tmp_path / "empty")


def _rewrite(path, edit):
    with zipfile.ZipFile(path) as archive:
        structure = json.loads(archive.read("network.json"))
        arrays = archive.read("arrays.npz")
    edit(structure)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("network.json", json.dumps(structure))
        archive.writestr("arrays.npz", arrays)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(version=99), "format version 99 is not supported"),
    (lambda s: s.update(format="other"), "not a neurodeploy-ir file"),
    (lambda s: s["populations"][1].pop("shape"), r"populations\[1\]: missing field 'shape'"),
    (lambda s: s["populations"][1].update(shape="big"), r"populations\[1\].shape"),
    (lambda s: s["projections"][0]["ops"][0]["arrays"].update(weight="nope"), "array 'nope' missing"),
    (lambda s: s["projections"][0].update(target="ghost"), "unknown population 'ghost'"),
    (lambda s: s["projections"][0]["ops"][0].update(kind="maxpool"), "unknown op kind 'maxpool'"),
])
def test_bad_fields_are_named(conv_network, tmp_path, edit, message):
    path = save_network(conv_network, tmp_path / "net.zip")
    _rewrite(path, edit)
    with pytest.raises(IRFormatError, match=message):
        load_network(path)


def test_invalid_json(conv_network, tmp_path):
    path = save_network(conv_network, tmp_path / "net")
    (path / "network.json").write_text("{not json")
    with pytest.raises(IRFormatError, match="not valid JSON"):
        load_network(path)


def test_validation_names_the_culprit():
    net = Network()
    net.add_population(Population("input", (4,), "input"))
    net.add_population(Population("h", (3,), "hidden", NeuronSpec()))
    net.add_population(Population("output", (2,), "output", NeuronSpec()))
    net.connect("input", "h", [Dense(np.ones((3, 5), np.float32))])
    net.connect("h", "output", [Dense(np.ones((2, 3), np.float32))])
    with pytest.raises(IRValidationError, match=r"projection input->h: dense op expects input shape \(5,\)"):
        net.validate()
    net.projections[0].ops = [Dense(np.full((3, 4), np.nan, np.float32))]
    with pytest.raises(IRValidationError, match=r"projection input->h op 0 \(dense\) weight contains NaN"):
        net.validate()
    net.projections[0].ops = [Dense(np.ones((3, 4), np.float32))]
    net.populations["h"].neuron.threshold = -1.0
    with pytest.raises(IRValidationError, match="population 'h': thresholds must be positive"):
        net.validate()
    net.populations["h"].neuron.threshold = 1.0
    net.connect("output", "h", [Dense(np.ones((3, 2), np.float32))])
    with pytest.raises(IRValidationError, match="membrane readout never spikes"):
        net.validate()


def test_fan_counts_by_hand():
    # 3x3 conv, padding 1, 1 -> 2 channels on a 4x4 map: a corner pixel reaches 4 positions per output
    # channel, an edge pixel 6, an inner pixel 9; one zero weight in channel 1 removes some synapses.
    weight = np.ones((2, 1, 3, 3), np.float32)
    weight[1, 0, 0, 0] = 0.0
    from neurodeploy.ir.network import Projection

    fan_out, fan_in = projection_fan(Projection("a", "b", [Conv2d(weight, padding=1)]), (1, 4, 4))
    dense = torch.nn.functional.conv2d
    explicit = np.zeros((2 * 16, 16))
    for j in range(16):
        basis = torch.zeros(1, 1, 4, 4)
        basis.view(-1)[j] = 1
        explicit[:, j] = dense(basis, torch.tensor(weight), padding=1).flatten().numpy() != 0
    np.testing.assert_array_equal(fan_out.reshape(-1), explicit.sum(0))
    np.testing.assert_array_equal(fan_in.reshape(-1), explicit.sum(1))
    assert fan_out[0, 0, 0] == 4 + 4 - 1 and fan_out[0, 1, 1] == 9 + 8


def test_fan_counts_with_overlapping_pool_are_exact():
    from neurodeploy.ir.network import Projection

    weight = np.random.default_rng(0).normal(size=(5, 2 * 3 * 3)).astype(np.float32)
    weight[:, 3] = 0
    ops = [AvgPool2d(2, 1), Flatten(), Dense(weight)]
    fan_out, fan_in = projection_fan(Projection("a", "b", ops), (2, 4, 4))
    explicit = np.zeros((5, 32))
    for j in range(32):
        basis = torch.zeros(1, 2, 4, 4)
        basis.view(-1)[j] = 1
        pooled = torch.nn.functional.avg_pool2d(basis, 2, 1).flatten(1)
        explicit[:, j] = (pooled @ torch.tensor(weight).T).numpy()[0] != 0
    np.testing.assert_array_equal(fan_out.reshape(-1), explicit.sum(0))
    np.testing.assert_array_equal(fan_in, explicit.sum(1))


def test_network_summary(conv_network):
    rows = {r["population"]: r for r in network_summary(conv_network)}
    assert rows["input"]["neurons"] == 64 and rows["input"]["max_fan_out"] == 9 * 4
    assert rows["output"]["synapses_in"] == 8 * 3
