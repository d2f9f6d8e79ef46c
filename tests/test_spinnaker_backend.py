"""sPyNNaker on a virtual SpiNN-5 board: real partitioning, placement and routing, no hardware.

Skipped, with the reason, only where the spinnaker extra is not installed."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from neurodeploy.backends import RunOptions
from neurodeploy.backends.spinnaker.config import load_hardware_config
from neurodeploy.convert import convert
from neurodeploy.errors import BackendError
from neurodeploy.targets.spinnaker import S1615_MAX, check_s1615, lost_to_resolution


def test_s1615_range_check_names_population_and_value():
    check_s1615("h", "threshold", np.array([1.0, -65535.5, S1615_MAX]))
    with pytest.raises(BackendError, match=r"population 'h': threshold of neuron 1 is 70000, outside the S16.15"):
        check_s1615("h", "threshold", np.array([1.0, 70000.0]))
    with pytest.raises(BackendError, match="neuron 0 is nan"):
        check_s1615("h", "bias", np.array([np.nan]))
    assert lost_to_resolution(np.array([0.0, 1e-6, 1.0, 2.0**-15])) == pytest.approx(1 / 3)


def test_hardware_configs_are_documented_and_validated(tmp_path):
    assert load_hardware_config().virtual
    for name in ("spinn3.cfg", "spinn5.cfg", "spalloc.cfg"):
        config = load_hardware_config(load_hardware_config().path.with_name(name))
        assert not config.virtual and config.path.read_text().startswith("#")
    (tmp_path / "empty.cfg").write_text("[Machine]\nversion = 5\n")
    with pytest.raises(BackendError, match="needs virtual_board = True, a machine_name or a spalloc_server"):
        load_hardware_config(tmp_path / "empty.cfg")
    with pytest.raises(BackendError, match="no such hardware config"):
        load_hardware_config(tmp_path / "missing.cfg")
    folder = load_hardware_config().write_for_run(tmp_path / "run")
    text = (folder / ".spynnaker.cfg").read_text()
    assert "virtual_board = True" in text and str((tmp_path / "run" / "reports").resolve()) in text


@pytest.mark.slow
def test_dense_mnist_maps_on_a_virtual_board_without_touching_home(tmp_path, monkeypatch):
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    from neurodeploy.backends import get_backend

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10)).eval()
    network = convert(model, torch.rand(64, 1, 28, 28))
    report = get_backend("spinnaker", neurons_per_core=64).map(network, tmp_path / "run")
    cores = report["cores_per_population"]
    assert cores["relu_2"] == 2 and cores["relu_4"] == 2 and cores["output"] == 1  # 128 neurons at 64 per core
    assert report["chips"] >= 1 and report["n_synapses"] == 784 * 128 + 128 * 128 + 128 * 10
    assert report["max_fan_in"]["relu_2"] == 784 and report["virtual"]
    assert json.loads((tmp_path / "run" / "mapping.json").read_text())["cores"] == report["cores"]
    # sPyNNaker left nothing in the user's home (no .spynnaker.cfg template, no reports); matplotlib's
    # ordinary font cache may appear because this fake home has none yet
    assert [p for p in home.rglob("*") if "matplotlib" not in p.parts and p.name != ".cache"] == []
    # the complete per-item loop through sPyNNaker's API: inputs set per item, run, read, reset
    backend = get_backend("spinnaker")
    backend.use_folder(tmp_path / "items")
    result = backend.run(network, torch.rand(3, 1, 28, 28), torch.zeros(3, dtype=torch.long),
                         RunOptions(T=5, batch_size=3, progress=False))
    assert result.metadata["virtual"] and "runs nothing" in result.metadata["note"]
    assert result.metadata["items_read"] == 0 and not result.readout.any() and result.readout.shape == (3, 5, 10)
    assert backend.predictor() == ("gpu", {"profile": "spinnaker", "tau_m": 1000.0})
    assert (tmp_path / "items" / "run.log").exists()
    assert [p for p in home.rglob("*") if "matplotlib" not in p.parts and p.name != ".cache"] == []


@pytest.mark.slow
def test_out_of_range_parameter_is_refused_before_spynnaker(tmp_path):
    from neurodeploy.backends import get_backend

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    network = convert(model, torch.rand(16, 4))
    hidden = next(p for p in network.populations.values() if p.role == "hidden")
    hidden.neuron.threshold = 1e6
    with pytest.raises(BackendError, match="threshold of neuron 0 is 1e\\+06, outside the S16.15"):
        get_backend("spinnaker").map(network, tmp_path)


@pytest.mark.slow
def test_dense_mnist_with_fan_in_pass_maps_and_spynnaker_uses_our_ring_buffer_shifts(tmp_path):
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    from neurodeploy.backends import get_backend
    from neurodeploy.passes.fan_in import apply_dense_pooling, materialize_pooling, plan_dense_pooling, pool_inputs
    from neurodeploy.passes.ring_buffers import annotate_summed_weights
    from neurodeploy.targets.spinnaker import ring_buffer_shift

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10)).eval()
    plan, _ = plan_dense_pooling(model, (1, 28, 28), 256)
    pooled = apply_dense_pooling(model, (1, 28, 28), plan)
    x = torch.rand(64, 1, 28, 28)
    network = convert(pooled, x)
    materialize_pooling(network, 256)
    annotate_summed_weights(network, pool_inputs(network, x).numpy(), encoding="if")
    report = get_backend("spinnaker").map(network, tmp_path / "run")
    assert report["max_fan_in"]["relu_3"] == 196 and report["n_synapses"] == 196 * 128 + 128 * 128 + 128 * 10
    assert report["cores_per_population"]["input"] == 1 and report["chips"] >= 1 and report["cores"] >= 4
    for name, shifts in report["ring_buffer_shifts"].items():
        assert shifts == [ring_buffer_shift(w) for w in report["max_expected_summed_weight"][name]], name


def _map_conv_mnist(channels: tuple[int, int], run_dir) -> dict:
    """Maps conv MNIST with random weights (mapping does not depend on them) after the fan-in pass
    (limit 256) on the virtual board, ring buffers from the rate model on 32 random images."""
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    from neurodeploy.backends import get_backend
    from neurodeploy.passes.fan_in import materialize_pooling
    from neurodeploy.passes.ring_buffers import annotate_summed_weights
    from neurodeploy.train.zoo import conv_mnist

    torch.manual_seed(0)
    x = torch.rand(32, 1, 28, 28)
    network = convert(conv_mnist(channels=channels).eval(), x)
    materialize_pooling(network, 256)
    annotate_summed_weights(network, x.numpy(), encoding="if")
    return get_backend("spinnaker").map(network, run_dir)


def _assert_cores_and_shifts(report: dict, sizes: dict[str, int]) -> None:
    """Cores read from sPyNNaker's placements are ceil(size / 128) (neurons per core 128), and the ring
    buffer shifts it chose are ours."""
    from neurodeploy.targets.spinnaker import ring_buffer_shift

    cores = report["cores_per_population"]
    for name, size in sizes.items():
        assert cores[name] == -(-size // 128), name
    for name, shifts in report["ring_buffer_shifts"].items():
        assert shifts == [ring_buffer_shift(w) for w in report["max_expected_summed_weight"][name]], name


@pytest.mark.slow
def test_conv_mnist_architecture_maps_with_the_fan_in_pass(tmp_path):
    """The conv MNIST layer structure at 1/8 width (channels 4 and 8) maps on the virtual board; cores
    and synapses read back from sPyNNaker against hand counts. The full width is the next test."""
    report = _map_conv_mnist((4, 8), tmp_path / "run")
    # A same-padded 3x3 conv on H x W has (3H - 2)(3W - 2) valid (position, tap) pairs per channel pair.
    taps28, taps14 = (3 * 28 - 2) ** 2, (3 * 14 - 2) ** 2
    expected = (1 * 4 * taps28 + 4 * 4 * taps28  # conv1 (from the spike-source input), conv2
                + 4 * 8 * taps14 * 4  # conv3 reads the 2x2 average pool unrolled (fan-in 144 <= 256)
                + 8 * 8 * taps14  # conv4
                + 8 * 7 * 7 * 4  # pool population before FC128 (unrolled, FC128 would have fan-in 1568)
                + 8 * 7 * 7 * 128 + 128 * 10)
    assert report["n_synapses"] == expected == 494704
    assert report["max_fan_in"]["relu_9"] == 144 and report["max_fan_in"]["relu_17_pool"] == 4
    assert report["chips"] >= 2
    _assert_cores_and_shifts(report, {"relu_2": 4 * 784, "relu_5": 4 * 784, "relu_9": 8 * 196, "relu_12": 8 * 196,
                                      "relu_17_pool": 8 * 49, "relu_17": 128, "output": 10})


@pytest.mark.slow
def test_full_width_conv_mnist_maps_with_the_fan_in_pass(tmp_path):
    """Conv MNIST at full width (32, 64 channels; 84,810 neurons) maps onto one virtual SpiNN-5 board.
    About 10 minutes on 2 cores: sPyNNaker writes the 17.4 M synaptic rows on the host (BENCHMARKS.md)."""
    report = _map_conv_mnist((32, 64), tmp_path / "run")
    taps28, taps14 = (3 * 28 - 2) ** 2, (3 * 14 - 2) ** 2
    expected = (1 * 32 * taps28 + 32 * 32 * taps28  # conv1 (from the spike-source input), conv2
                + 32 * 14 * 14 * 4  # pool population before conv3 (conv3 would read 32 x 9 x 4 = 1152 inputs)
                + 32 * 64 * taps14 + 64 * 64 * taps14  # conv3, conv4
                + 64 * 7 * 7 * 4  # pool population before FC128 (FC128 would have fan-in 12544)
                + 64 * 7 * 7 * 128 + 128 * 10)
    assert report["n_synapses"] == expected == 17_371_264
    # What pooling cannot reduce stays: conv2 and conv4 read 32 x 9 and 64 x 9 inputs.
    assert report["max_fan_in"]["relu_5"] == 288 and report["max_fan_in"]["relu_12"] == 576
    assert report["max_fan_in"]["relu_9_pool"] == 4 and report["max_fan_in"]["relu_9"] == 288
    sizes = {"relu_2": 32 * 784, "relu_5": 32 * 784, "relu_9_pool": 32 * 196, "relu_9": 64 * 196,
             "relu_12": 64 * 196, "relu_17_pool": 64 * 49, "relu_17": 128, "output": 10}
    _assert_cores_and_shifts(report, sizes)
    neuron_cores = sum(-(-size // 128) for size in sizes.values())
    assert neuron_cores == 664 and report["cores"] >= neuron_cores + report["cores_per_population"]["input"]
    # A SpiNN-5 chip has at most 17 application cores, and a board 48 chips.
    assert -(-neuron_cores // 17) <= report["chips"] <= 48
