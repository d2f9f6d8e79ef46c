"""sPyNNaker on a virtual SpiNN-5 board: real partitioning, placement and routing, no hardware; both
variants (FromList with IF_curr_delta, local-only connectors with IF_curr_exp).

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
    with pytest.raises(BackendError, match="needs exactly one of virtual_board = True, machine_name, spalloc_server"):
        load_hardware_config(tmp_path / "empty.cfg")
    with pytest.raises(BackendError, match="no such hardware config"):
        load_hardware_config(tmp_path / "missing.cfg")
    folder = load_hardware_config().write_for_run(tmp_path / "run")
    text = (folder / ".spynnaker.cfg").read_text()
    assert "virtual_board = True" in text and str((tmp_path / "run" / "reports").resolve()) in text


def test_boards_are_for_allocated_machines_and_v_reset_zero_clears_a_compensation(tmp_path):
    from neurodeploy.backends.spinnaker import SpinnakerBackend
    from neurodeploy.errors import ConfigError
    from neurodeploy.passes.reset_compensation import METADATA_KEY, annotate_reset_compensation

    with pytest.raises(ConfigError, match="--boards applies to spalloc and remote configs, not to the virtual"):
        SpinnakerBackend(boards=2)
    (tmp_path / "spalloc.cfg").write_text("[Machine]\nspalloc_server = 127.0.0.1\n")
    assert SpinnakerBackend(hardware_config=str(tmp_path / "spalloc.cfg"), boards=3).boards == 3
    torch.manual_seed(0)
    x = torch.rand(8, 6)
    network = convert(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).eval(), x)
    annotate_reset_compensation(network, {"relu_1": 0.2}, "by hand")
    SpinnakerBackend(v_reset="zero").prepare(network, x)
    assert not any(METADATA_KEY in p.metadata for p in network.populations.values())
    SpinnakerBackend().prepare(network, x)
    assert network.populations["relu_1"].metadata[METADATA_KEY]["measured_on"].endswith("if input")


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
    report = get_backend("spinnaker", neurons_per_core=64, connectors="fromlist", substeps=1).map(network,
                                                                                                 tmp_path / "run")
    cores = report["cores_per_population"]
    assert cores["relu_2"] == 2 and cores["relu_4"] == 2 and cores["output"] == 1  # 128 neurons at 64 per core
    assert report["chips"] >= 1 and report["n_synapses"] == 784 * 128 + 128 * 128 + 128 * 10
    assert report["max_fan_in"]["relu_2"] == 784 and report["virtual"]
    assert json.loads((tmp_path / "run" / "mapping.json").read_text())["cores"] == report["cores"]
    # sPyNNaker left nothing in the user's home (no .spynnaker.cfg template, no reports); matplotlib's
    # ordinary font cache may appear because this fake home has none yet
    assert [p for p in home.rglob("*") if "matplotlib" not in p.parts and p.name != ".cache"] == []
    # the complete per-item loop through sPyNNaker's API: inputs set per item, run, read, reset; the default
    # variant (local-only: the input a Grid2D spike source, 784 -> 128 a PoolDenseConnector)
    backend = get_backend("spinnaker")
    assert backend.connectors == "local" and "IF_curr_exp" in backend.describe()
    backend.use_folder(tmp_path / "items")
    result = backend.run(network, torch.rand(3, 1, 28, 28), torch.zeros(3, dtype=torch.long),
                         RunOptions(T=5, batch_size=3, progress=False))
    assert result.metadata["virtual"] and "runs nothing" in result.metadata["note"]
    assert result.metadata["items_read"] == 0 and not result.readout.any() and result.readout.shape == (3, 5, 10)
    assert result.metadata["mapping"]["projections"] == {"conv": 0, "pool_dense": 1, "fromlist": 4}
    assert backend.predictor() == ("gpu", {"profile": "spinnaker_exp", "tau_m": 1000.0, "substeps": 1})
    assert get_backend("spinnaker", connectors="fromlist").predictor() == ("gpu", {"profile": "spinnaker",
                                                                                  "tau_m": 1000.0, "substeps": 1})
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
@pytest.mark.parametrize("connectors, input_cores", [("fromlist", 1), ("local", 2)])
def test_dense_mnist_with_fan_in_pass_maps_and_spynnaker_uses_our_ring_buffer_shifts(tmp_path, connectors,
                                                                                     input_cores):
    """FromList: one spike source of 196 neurons (one core); local-only: a 14 x 14 Grid2D source of 7 x 14
    blocks (two cores) and 196 -> 128 a PoolDenseConnector (32 KiB / (2 x 196) = 83 neurons per core)."""
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    from neurodeploy.backends import get_backend
    from neurodeploy.backends.gpu.spinnaker_profile import compensate_hard_reset
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
    compensate_hard_reset(network, pool_inputs(network, x), "if")  # per-neuron v_reset arrays reach sPyNNaker
    assert network.populations["relu_3"].metadata["reset_compensation"]["mean_overshoot"] > 0
    report = get_backend("spinnaker", connectors=connectors).map(network, tmp_path / "run")
    assert report["max_fan_in"]["relu_3"] == 196 and report["n_synapses"] == 196 * 128 + 128 * 128 + 128 * 10
    assert report["cores_per_population"]["input"] == input_cores and report["chips"] >= 1 and report["cores"] >= 4
    if connectors == "local":
        assert report["pool_dense_neurons_per_core"] == {"relu_3": 83} and report["cores_per_population"]["relu_3"] == 2
    for name, shifts in report["ring_buffer_shifts"].items():
        assert shifts == [ring_buffer_shift(w) for w in report["max_expected_summed_weight"][name]], name


def _map_conv_mnist(channels: tuple[int, int], run_dir, connectors: str = "fromlist", images: int = 32) -> dict:
    """Maps conv MNIST with random weights (mapping does not depend on them) after the fan-in pass
    (limit 256) on the virtual board, ring buffers from the rate model on ``images`` random images."""
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    from neurodeploy.backends import get_backend
    from neurodeploy.passes.fan_in import materialize_pooling
    from neurodeploy.passes.ring_buffers import annotate_summed_weights
    from neurodeploy.train.zoo import conv_mnist

    torch.manual_seed(0)
    x = torch.rand(images, 1, 28, 28)
    network = convert(conv_mnist(channels=channels).eval(), x)
    materialize_pooling(network, 256)
    annotate_summed_weights(network, x.numpy(), encoding="if")
    return get_backend("spinnaker", connectors=connectors).map(network, run_dir)


def _assert_cores_and_shifts(report: dict, sizes: dict[str, int], per_core: dict[str, int] | None = None) -> None:
    """Cores read from sPyNNaker's placements are ceil(size / neurons per core) (128 unless ``per_core``
    says otherwise), and the ring buffer shifts it chose are ours."""
    from neurodeploy.targets.spinnaker import ring_buffer_shift

    cores = report["cores_per_population"]
    for name, size in sizes.items():
        assert cores[name] == -(-size // (per_core or {}).get(name, 128)), name
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
def test_full_width_conv_mnist_maps_local_only(tmp_path):
    """Conv MNIST at full width (32, 64 channels; the fan-in pass's two pool populations) in the local-only
    variant: every convolution and pooling a ConvolutionConnector per channel pair, FC128 PoolDenseConnectors,
    only FC10 FromList. Seconds to map where FromList took 568 s (BENCHMARKS.md); populations, projections
    and cores against hand counts."""
    report = _map_conv_mnist((32, 64), tmp_path / "run", connectors="local", images=8)
    assert report["cell"] == "IF_curr_exp"
    # the same synapses as the FromList variant counts (see the 1/8-width test for the formula)
    assert report["n_synapses"] == 17_371_264
    # one Grid2D population per channel, one spike source for the single input channel
    assert report["pynn_populations"] == 32 + 32 + 32 + 64 + 64 + 64 + 1 + 1 + 1 == 291
    # kernels per channel pair: conv1 1 x 32, conv2 32 x 32, conv3 32 x 64, conv4 64 x 64; the pool populations
    # take one 1 x 1 pooling kernel per channel (32 and 64); FC128 one PoolDense per conv4-pool channel; FC10
    # FromList (excitatory and inhibitory)
    assert report["projections"] == {"conv": 32 + 32 * 32 + 32 + 32 * 64 + 64 * 64 + 64, "pool_dense": 64,
                                     "fromlist": 2}
    assert report["grids"]["relu_2"] == {"shape": [32, 28, 28], "block": [14, 14]}
    assert report["grids"]["relu_17_pool"] == {"shape": [64, 7, 7], "block": [7, 7]}
    assert report["grids"]["input"] == {"shape": [1, 28, 28], "block": [7, 14]}
    # FC128 reads 64 x 7 x 7 = 3136 int16 weights per neuron: 32 KiB hold 5 neurons per core
    assert report["pool_dense_neurons_per_core"] == {"relu_17": 5}
    # cores: 28 x 28 maps in 14 x 14 blocks (4 per channel), 14 x 14 and 7 x 7 maps one core per channel
    cores = {"relu_2": 32 * 4, "relu_5": 32 * 4, "relu_9_pool": 32, "relu_9": 64, "relu_12": 64, "relu_17_pool": 64,
             "relu_17": -(-128 // 5), "output": 1, "input": 784 // 98}
    assert {name: report["cores_per_population"][name] for name in cores} == cores
    neuron_cores = sum(n for name, n in cores.items() if name != "input")
    assert neuron_cores == report["neuron_cores"] == 507
    assert report["cores"] == neuron_cores + cores["input"] + report["system_cores"]
    assert -(-(neuron_cores + cores["input"]) // 17) <= report["chips"] <= 48
    _assert_cores_and_shifts(report, {})


def test_local_only_lowering_matches_the_ir_under_spynnakers_connector_semantics():
    """The kernels and pool-dense weights handed to sPyNNaker, played back the way its local-only C code
    applies them (a pre neuron at (row, col) reaches post (row // pool - K // 2 + padding + kr - K // 2, ...)
    with kernel[kr, kc] / pool^2; pool-dense weight [col // pool, row // pool, post] / pool^2), give the IR's
    own synapse matrices: kernels flipped, padding, pooling folded in, and the weight layout are right."""
    from neurodeploy.backends.pynn.lowering import ConvProjection, local_connector_kinds, lower_network
    from neurodeploy.passes.synapse_matrix import projection_matrix

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(3, 2, 5, padding=1),
                          nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 3, 5), nn.ReLU(),
                          nn.Linear(5, 3)).eval()
    network = convert(model, torch.rand(8, 2, 12, 16))
    assert local_connector_kinds(network) == ["conv", "conv", "pool_dense", None]
    lowered = lower_network(network, input_as_synapses=True, local_only=True)
    assert {name: grid.block for name, grid in lowered.grids.items()} == {"input": (12, 8), "relu_1": (12, 16),
                                                                         "relu_4": (4, 6)}
    assert [(s.source, s.target) for s in lowered.synapses] == [("relu_8", "output")]
    for projection, local in zip(network.projections[:3], lowered.local, strict=True):
        source, target = network.populations[projection.source], network.populations[projection.target]
        (_, h, w), k = source.shape, local.pool or 1
        played = np.zeros((target.size, source.size))
        rows, cols = np.divmod(np.arange(h * w), w)
        if isinstance(local, ConvProjection):
            _, ho, wo = target.shape
            for (ci, co), kernel in local.kernels.items():
                half = kernel.shape[0] // 2
                for kr in range(kernel.shape[0]):
                    for kc in range(kernel.shape[1]):
                        r = rows // k - half + local.padding + kr - half
                        q = cols // k - half + local.padding + kc - half
                        ok = (r >= 0) & (r < ho) & (q >= 0) & (q < wo)
                        post, pre = co * ho * wo + r[ok] * wo + q[ok], ci * h * w + np.flatnonzero(ok)
                        played[post, pre] += kernel[kr, kc] / k**2
        else:
            for ci, weights in enumerate(local.weights):
                played[:, ci * h * w:(ci + 1) * h * w] = weights[cols // k, rows // k, :].T / k**2
        np.testing.assert_allclose(played, projection_matrix(network, projection).toarray(), atol=1e-12)
        assert local.n_synapses == np.count_nonzero(played)


def test_local_only_binaries_are_checked_in_the_package(tmp_path):
    """sPyNNaker maps IF_curr_delta with a ConvolutionConnector on a virtual board (its check answers True
    there) but ships no IF_curr_delta_conv.aplx: the backend looks at the binaries itself."""
    from neurodeploy.backends.spinnaker.worker import check_local_only_binaries

    for name in ("IF_curr_exp_conv.aplx", "IF_curr_exp_pool_dense.aplx", "IF_curr_delta.aplx"):
        (tmp_path / name).write_bytes(b"")
    check_local_only_binaries("IF_curr_exp", {"conv", "pool_dense"}, tmp_path)
    with pytest.raises(BackendError, match=r"ships no IF_curr_delta_conv.aplx \(the conv local-only binary of "
                                           r"IF_curr_delta\).*IF_curr_exp_conv.aplx, IF_curr_exp_pool_dense.aplx; "
                                           r"use --connectors fromlist"):
        check_local_only_binaries("IF_curr_delta", {"conv"}, tmp_path)
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    check_local_only_binaries("IF_curr_exp", {"conv", "pool_dense"})  # sPyNNaker 1!7.4.1 ships both
    with pytest.raises(BackendError, match="ships no IF_curr_delta_pool_dense.aplx"):
        check_local_only_binaries("IF_curr_delta", {"pool_dense"})


@pytest.mark.slow
def test_a_virtual_board_run_is_predicted_with_the_input_the_board_receives(tmp_path, monkeypatch):
    """``run --backend spinnaker`` on the virtual board: the gpu profile that predicts it gets the IF spikes a
    board receives from its spike source, not the analog current; another --encoding is refused first."""
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    from neurodeploy.cli import main
    from neurodeploy.evaluate.result import SimulationResult

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--backend", "spinnaker", "--samples", "30", "-T", "12", "--epochs", "1",
                 "--fan-in-epochs", "1", "--run-id", "board", "--no-progress"]) == 0
    result = SimulationResult.load(tmp_path / "results" / "board" / "result.npz")
    assert result.metadata["encoding"] == "if" and "(if encoding)" in result.metadata["predicted_for"]["note"]
    assert main(["run", "--backend", "spinnaker", "--encoding", "poisson", "--run-id", "x", "--no-progress"]) == 2
    assert not (tmp_path / "results" / "x").exists()


@pytest.mark.slow
def test_compare_maps_the_virtual_board_and_compares_its_prediction(tmp_path, monkeypatch):
    """``compare`` with the spinnaker backend on the virtual board maps the network and compares the prediction
    (IF input), instead of failing after the other backends ran (it used to ask the board for per-neuron counts);
    with ``--encoding if`` every backend gets the input the board receives."""
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    from neurodeploy.cli import main
    from neurodeploy.evaluate.result import SimulationResult

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--backends", "gpu:spinnaker_exp,spinnaker", "--encoding", "if", "--samples", "20",
                 "-T", "10", "--epochs", "1", "--fan-in-epochs", "1", "--run-id", "cmp", "--no-progress"]) == 0
    folder = tmp_path / "results" / "cmp"
    board = SimulationResult.load(folder / "result_spinnaker.npz")
    assert board.metadata["encoding"] == "if" and board.metadata["predicted_for"]["backend"] == "spinnaker"
    assert board.metadata["mapping"]["chips"] >= 1 and (folder / "spinnaker" / "mapping.json").is_file()
    report = json.loads((folder / "compare.json").read_text())
    assert set(report["backends"]) == {"gpu:spinnaker_exp", "spinnaker"}
    # with --encoding if the profile and the board's prediction get the same input: the same spikes
    assert report["backends"]["spinnaker"]["agreement_with_reference"]["prediction_agreement_min"] == 1.0
    assert main(["compare", "--backends", "gpu,spinnaker", "--encoding", "poisson", "--no-progress"]) == 2
