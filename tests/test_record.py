"""Per-neuron spike recording (``--record POP[:ITEMS]``): the requests, the spikes each backend returns
(against hand-computed spike steps), the result format, the Neo file read back, and a run from the command
line; NEURON's spikes against the gpu backend's pynn profile, read back with Neo (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import constant_current_network

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.errors import BackendError, ConfigError, ResultFormatError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.jobs.record import RecordRequest, check_items, parse_record

pytest.importorskip("neo", reason="the record extra (neo) is not installed")

from neurodeploy.evaluate.spike_trains import read_spike_trains, spike_steps, write_spike_trains  # noqa: E402

#: currents of the hand-computed network: with v0 = 0, threshold 1 and subtract reset, neuron i fires at
#: step k (1-based) when floor(k c_i) > floor((k - 1) c_i): c = 0.5 every 2nd step, 0.25 every 4th, 1.0 every step,
#: 0 never, 0.375 at steps 3, 6, 8 (k c = 1.125, 2.25, 3.0); binary fractions, so float32 sums them exactly
CURRENTS = [0.5, 0.25, 1.0, 0.0, 0.375]
EXPECTED = [[2, 4, 6, 8, 10], [4, 8], list(range(1, 11)), [], [3, 6, 8]]


def test_requests_parse_populations_and_items():
    assert parse_record(["relu_1:0-3,relu_3:3,5"]) == [RecordRequest("relu_1", (0, 1, 2, 3)),
                                                      RecordRequest("relu_3", (3, 5))]
    # a population asked twice: items joined; once without items: all of them
    assert parse_record(["a:1", "a:0,4", "b:2", "b"]) == [RecordRequest("a", (0, 1, 4)), RecordRequest("b", None)]
    assert RecordRequest("b", None).item_list(3) == [0, 1, 2]


@pytest.mark.parametrize("spec, needle", [("a:3-1", "runs backwards"), ("a:x", "'x' are not items"),
                                          ("a:", "'' are not items"), (",a", "population name is missing"),
                                          ("a:0-100000000", "beyond any run's items")])
def test_bad_requests_are_one_clear_error(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_record([spec])


def test_items_beyond_the_run_are_refused():
    check_items([RecordRequest("a", (0, 4))], 5)
    with pytest.raises(ConfigError, match="--record a:5: the run simulates 5 test items"):
        check_items([RecordRequest("a", (0, 5))], 5)


def test_a_recording_is_checked_against_the_network_and_the_memory_budget():
    from neurodeploy.jobs.record import check_recording

    net = constant_current_network(CURRENTS)
    request = [RecordRequest("hidden", None)]
    assert check_recording(request, net, "analog", 1000, 1000, None) == [{"name": "hidden", "role": "hidden",
                                                                          "size": 5}]
    with pytest.raises(ConfigError, match="recording 5 neurons for 1,000 items and 1,000 steps would hold"):
        check_recording(request, net, "analog", 1000, 1000, 0.004)  # 5 MB of int8 spikes, budget about 4.3 MB
    check_recording(request, net, "analog", 1000, 1000, 0.005)
    with pytest.raises(ConfigError, match=r"--record: .*'hiden'; did you mean hidden\? \(its populations: input, "
                                          r"hidden, output\)"):
        check_recording([RecordRequest("hiden")], net, "analog", 10, 10, None)


def _gpu_recording(T=10, **options):
    net = constant_current_network(CURRENTS)
    x = torch.tensor([CURRENTS, [c / 2 for c in CURRENTS]])
    run = RunOptions(T=T, batch_size=1, progress=False, record_spikes=("hidden",), **options)
    return net, get_backend("gpu", device="cpu").run(net, x, torch.zeros(2, dtype=torch.long), run)


def test_gpu_records_the_hand_computed_spike_steps():
    _, result = _gpu_recording()
    spikes = result.population_recorded_spikes()["hidden"]  # [items, T, neurons], batches of one joined
    assert spikes.shape == (2, 10, 5) and spikes.dtype == np.int8
    for neuron, steps in enumerate(EXPECTED):
        assert list(np.flatnonzero(spikes[0, :, neuron]) + 1) == steps
    assert list(np.flatnonzero(spikes[1, :, 2]) + 1) == [2, 4, 6, 8, 10]  # item 2: current 0.5
    np.testing.assert_array_equal(spikes.sum(1), [[5, 2, 10, 0, 3], [2, 1, 5, 0, 1]])  # item 2: 0.1875 at step 6
    assert result.metadata["recorded_populations"] == [{"name": "hidden", "role": "hidden", "size": 5}]


def test_recording_refuses_what_has_no_spikes():
    net = constant_current_network(CURRENTS)
    x, labels = torch.tensor([CURRENTS]), torch.zeros(1, dtype=torch.long)
    gpu = get_backend("gpu", device="cpu")
    with pytest.raises(ConfigError, match="no population 'hiden'; did you mean hidden"):
        gpu.run(net, x, labels, RunOptions(T=5, progress=False, record_spikes=("hiden",)))
    with pytest.raises(ConfigError, match="membrane readout"):
        gpu.run(net, x, labels, RunOptions(T=5, progress=False, record_spikes=("output",)))
    with pytest.raises(ConfigError, match="enters as a current under --encoding analog"):
        gpu.run(net, x, labels, RunOptions(T=5, progress=False, record_spikes=("input",)))


def test_recorded_spikes_survive_save_and_load(tmp_path):
    _, result = _gpu_recording()
    loaded = SimulationResult.load(result.save(tmp_path / "r.npz"))
    np.testing.assert_array_equal(loaded.recorded_spikes, result.recorded_spikes)
    result.metadata["recorded_populations"][0]["size"] = 4
    with pytest.raises(ResultFormatError, match="recorded_spikes has 5 neurons per step, metadata.recorded_popul"):
        result.validate()


def test_neo_file_reads_back_the_spike_times(tmp_path):
    _, result = _gpu_recording()
    spikes = result.population_recorded_spikes()
    path = write_spike_trains(tmp_path / "spikes.mat", spikes, {"hidden": [7]}, [7, 9], result.labels, 1.0,
                              {"backend": "gpu"})
    block = read_spike_trains(path)
    assert block.annotations["T"] == 10 and block.annotations["backend"] == "gpu"
    assert [s.annotations["item"] for s in block.segments] == [7, 9]  # item 9 recorded for no population: empty
    assert len(block.segments[0].spiketrains) == 5 and not block.segments[1].spiketrains
    train = next(t for t in block.segments[0].spiketrains if t.annotations["source_index"] == 4)
    np.testing.assert_allclose(train.rescale("ms").magnitude, [3.0, 6.0, 8.0])  # step k at k x 1 ms
    assert float(train.t_stop.rescale("ms")) == 10.0 and train.annotations["source_population"] == "hidden"
    assert [list(s) for s in spike_steps(block, "hidden", 7)] == EXPECTED
    with pytest.raises(ResultFormatError, match="no spike trains of 'hidden' for item 9"):
        spike_steps(block, "hidden", 9)
    (tmp_path / "other.mat").write_bytes(b"MATLAB 5.0 but not really")
    with pytest.raises(ResultFormatError, match="not a Neo MATLAB file"):
        read_spike_trains(tmp_path / "other.mat")


def test_a_backend_without_recording_says_so():
    from neurodeploy.backends.base import Backend

    class Silent(Backend):
        name = "silent"

    net = constant_current_network(CURRENTS)
    with pytest.raises(BackendError, match="spike recording is not implemented by the silent backend"):
        Silent().run(net, torch.tensor([CURRENTS]), torch.zeros(1, dtype=torch.long),
                     RunOptions(T=3, progress=False, record_spikes=("hidden",)))


@pytest.fixture(scope="module")
def mnist_network(tmp_path_factory, mnist):
    """A small dense network for the embedded MNIST items (784 -> 16 -> 10), converted and saved."""
    from neurodeploy.convert import convert
    from neurodeploy.ir import save_network

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    net = convert(model, mnist.train.images[:200], normalization="max")
    path = tmp_path_factory.mktemp("record-net") / "net.zip"
    save_network(net, path)
    return path, net


def _cli(argv, capsys):
    from neurodeploy.cli import main

    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr()


def test_run_records_and_refuses_an_unknown_population(mnist_network, tmp_path, capsys):
    path, net = mnist_network
    hidden = next(n for n in net.topological_order() if net.populations[n].role == "hidden")
    common = ["run", "--network", str(path), "--samples", "6", "-T", "12", "--results-dir", str(tmp_path), "-q"]
    code, out = _cli(common + ["--record", "relu_9:0-1"], capsys)
    assert code == 2 and f"did you mean {hidden}?" in out.out + out.err
    assert not list(tmp_path.glob("*/config.json"))  # a refused run leaves nothing
    code, _ = _cli(common + ["--record", f"{hidden}:1,4", "--run-id", "r"], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    record = summary["spike_recording"]
    assert record["file"] == "spikes.mat" and record["populations"][hidden]["items"] == [1, 4]
    result = SimulationResult.load(tmp_path / "r" / "result.npz")  # the main run's counts of the same items
    p = [q["name"] for q in result.populations].index(hidden)
    block = read_spike_trains(tmp_path / "r" / "spikes.mat")
    for item in (1, 4):
        steps = np.concatenate(spike_steps(block, hidden, item))
        np.testing.assert_array_equal(np.bincount(steps - 1, minlength=12), result.spike_counts[item, :, p])
    assert record["populations"][hidden]["spikes"] == int(result.spike_counts[[1, 4], :, p].sum()) > 0


def _recorded_spikes_agree(mnist_network, tmp_path, capsys, items: int, profile: list[str],
                           backend: list[str]) -> int:
    """Runs `run --record` of the first hidden population for ``items`` items with the gpu backend's
    ``profile`` flags and with ``backend``'s flags, reads both recordings back with Neo and asserts equal
    spike steps for every neuron of every item; returns the number of spikes compared."""
    path, net = mnist_network
    hidden = next(n for n in net.topological_order() if net.populations[n].role == "hidden")
    common = ["run", "--network", str(path), "--samples", str(items), "-T", "20", "--results-dir", str(tmp_path),
              "-q", "--record", f"{hidden}:0-{items - 1}"]
    assert _cli(common + ["--run-id", "gpu", *profile], capsys)[0] == 0
    assert _cli(common + ["--run-id", "other", *backend], capsys)[0] == 0
    gpu, other = (read_spike_trains(tmp_path / run / "spikes.mat") for run in ("gpu", "other"))
    total = 0
    for item in range(items):
        a, b = spike_steps(gpu, hidden, item), spike_steps(other, hidden, item)
        assert len(a) == len(b) == net.populations[hidden].size
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        total += sum(len(x) for x in a)
    return total


@pytest.mark.slow
def test_neuron_records_the_spikes_of_the_gpu_pynn_profile(mnist_network, tmp_path, capsys):
    """The Must show of issue 32: the same population and items on gpu (pynn profile) and NEURON (exact
    cell), each written by `run --record` and read back with Neo: equal spike times."""
    pytest.importorskip("pyNN", reason="the neuron extra is not installed")
    total = _recorded_spikes_agree(mnist_network, tmp_path, capsys, 3, ["--profile", "pynn"],
                                   ["--backend", "neuron", "--workers", "1"])
    assert total > 50  # enough spikes for the equality to mean something


@pytest.mark.slow
def test_nest_records_the_spikes_of_its_gpu_profile(mnist_network, tmp_path, capsys):
    """NEST's spike trains (`run --backend nest --record`) equal the gpu nest profile's, read back with Neo."""
    pytest.importorskip("pyNN", reason="the nest extra is not installed")
    pytest.importorskip("nest", reason="the nest extra is not installed")
    total = _recorded_spikes_agree(mnist_network, tmp_path, capsys, 2, ["--profile", "nest"], ["--backend", "nest"])
    assert total > 30
