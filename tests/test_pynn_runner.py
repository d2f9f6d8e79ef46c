"""The shared PyNN runner (backends/pynn/runner.py) on NEURON and on sPyNNaker's virtual board, the
hardware configs' short names and the reachability check.

Simulator runs happen in spawned child processes, as in the backends (NEURON and sPyNNaker keep one
global state per process). Network traffic goes to 127.0.0.1 only."""

import logging
import multiprocessing
import os
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import constant_current_network

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.backends.pynn.lowering import lower_network
from neurodeploy.backends.pynn.runner import if_spike_steps, log_to_file
from neurodeploy.backends.spinnaker.config import check_reachable, load_hardware_config
from neurodeploy.convert import convert
from neurodeploy.errors import BackendError


def _in_child(function, *args, **kwargs):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()


def _neuron(net, x: torch.Tensor, T: int, encoding: str, **kwargs) -> dict:
    pytest.importorskip("pyNN", reason="the neuron extra (PyNN + NEURON) is not installed")
    pytest.importorskip("neuron", reason="the neuron extra (PyNN + NEURON) is not installed")
    from neurodeploy.backends.neuron.mechanisms import prepare
    from neurodeploy.backends.neuron.worker import simulate_items

    prepare()
    lowered = lower_network(net, input_as_synapses=encoding == "if")
    return _in_child(simulate_items, lowered, x.numpy().astype(np.float64), T, **kwargs)


def _assert_equals_pynn_profile(net, x: torch.Tensor, T: int, encoding: str) -> dict:
    """The runner on NEURON (exact cell) against the reference simulator's pynn profile, every count."""
    options = RunOptions(T=T, batch_size=len(x), progress=False, record_neuron_counts=True, encoding=encoding)
    reference = get_backend("gpu", device="cpu", profile="pynn").run(net, x, torch.zeros(len(x), dtype=torch.long),
                                                                     options)
    out = _neuron(net, x, T, encoding)
    n_input = net.input.size
    np.testing.assert_array_equal(out["spikes"], reference.spike_counts[:, :, 1:])
    np.testing.assert_array_equal(out["events"], reference.synaptic_events[:, :, 1:])
    np.testing.assert_array_equal(out["neurons"], reference.neuron_counts[:, n_input:])
    np.testing.assert_allclose(out["readout"], reference.readout, atol=1e-4)
    if encoding == "if":  # the input population's spikes, as the spike sources played them
        np.testing.assert_array_equal(out["input_spikes"], reference.spike_counts[:, :, 0])
        np.testing.assert_array_equal(out["input_events"], reference.synaptic_events[:, :, 0])
        np.testing.assert_array_equal(out["input_neurons"], reference.neuron_counts[:, :n_input])
    assert out["items_read"] == len(x) and out["spikes"].sum() > 100
    return out


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["analog", "if"])
def test_dense_net_equals_pynn_profile(encoding):
    """Current input (the first projection computed on the host) and IF spike sources (spikes of the input
    delayed one step like every projection's) both equal the reference simulator spike for spike."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(),
                          nn.Linear(16, 4)).eval()
    x = torch.rand(6, 20)
    out = _assert_equals_pynn_profile(convert(model, x, normalization="max", v_init="uniform", seed=3), x, 30,
                                      encoding)
    assert (out["input_spikes"].sum() > 0) == (encoding == "if")


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["analog", "if"])
def test_conv_net_equals_pynn_profile(encoding):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 2 * 2, 3)).eval()
    x = torch.rand(3, 1, 8, 8)
    _assert_equals_pynn_profile(convert(model, x, reset="zero"), x, 25, encoding)


@pytest.mark.slow
def test_last_step_spikes_do_not_reach_the_next_item(tmp_path, capfd):
    """Item A spikes at every step up to the last (input and hidden); item B is silent. B simulated first
    on a fresh network and B simulated right after A give the same arrays: nothing of A's last step (spikes
    in flight, NEURON's pending step events) survives ``sim.reset()``. NEURON's output goes to the log."""
    pytest.importorskip("neuron", reason="the neuron extra (PyNN + NEURON) is not installed")
    capfd.readouterr()  # NEURON's banner when this process imported it
    net = constant_current_network([1.0, 1.0])
    silent, busy = [0.0, 0.0], [1.0, 1.0]
    T = 8
    out = _neuron(net, torch.tensor([silent, busy, silent]), T, "if", log_path=str(tmp_path / "run.log"))
    assert out["input_spikes"][1, -1] == 2 and out["spikes"][1, -1, 0] == 2  # A spikes at step T
    assert out["readout"][1, -1].sum() > 0 and out["spikes"][0].sum() == 0
    for key in ("readout", "spikes", "events", "neurons", "input_spikes"):
        np.testing.assert_array_equal(out[key][2], out[key][0], err_msg=key)
    assert "DISPLAY" not in "".join(capfd.readouterr())  # the child's NEURON printed into run.log
    assert "DISPLAY" in os.environ or "DISPLAY" in (tmp_path / "run.log").read_text()


def test_if_encoder_spike_steps():
    """v += x each step, a spike when v >= 1 (v -= 1): x = 0.5 spikes at steps 2, 4, ...; sorted by neuron."""
    neuron, step = if_spike_steps(np.array([[0.5, 1.0], [0.0, 0.25]]), 8)
    np.testing.assert_array_equal(neuron, [0] * 4 + [1] * 8 + [3] * 2)
    np.testing.assert_array_equal(step, [2, 4, 6, 8, *range(1, 9), 4, 8])
    with pytest.raises(BackendError, match="negative spikes for negative inputs"):
        if_spike_steps(np.array([0.5, -1.0]), 4)


def test_log_to_file_takes_log_records_prints_and_file_descriptors(tmp_path, capfd):
    root = logging.getLogger()
    handlers = root.handlers[:]
    with log_to_file(tmp_path / "run.log"):
        logging.getLogger("spynnaker.test").warning("a log record")
        print("a print")
        os.write(2, b"written to fd 2\n")
    text = (tmp_path / "run.log").read_text()
    assert "a log record" in text and "a print" in text and "written to fd 2" in text
    assert root.handlers == handlers and "a print" not in "".join(capfd.readouterr())


@pytest.mark.slow
def test_per_item_loop_on_the_virtual_board(tmp_path, monkeypatch, capfd):
    """Build once, a mapping run, then for 3 items: set the spike-source inputs, run, read, reset, through
    pyNN.spiNNaker on the virtual board. The input (150 neurons) is played by two sources of at most 100
    neurons; every item's spikes reach the source cores; the result says that nothing comes back."""
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    from neurodeploy.backends.gpu.spinnaker_profile import compensate_hard_reset
    from neurodeploy.backends.spinnaker.worker import run_items
    from neurodeploy.passes.ring_buffers import summed_weights_or_bound
    from neurodeploy.targets.spinnaker import DeltaCell

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    torch.manual_seed(0)
    x = torch.rand(3, 150)
    net = convert(nn.Sequential(nn.Linear(150, 24), nn.ReLU(), nn.Linear(24, 4)).eval(), x)
    compensate_hard_reset(net, x, "if")  # the cells get per-neuron v_reset values
    run = tmp_path / "run"
    config = load_hardware_config().write_for_run(run)
    out = _in_child(run_items, lower_network(net, input_as_synapses=True), str(config), str(run),
                    x.numpy().astype(np.float64), 10, 64, DeltaCell.for_tau(1000.0),
                    summed_weights_or_bound(net, "if"))
    assert out["virtual"] and "no spike or membrane comes back" in out["note"] and out["items_read"] == 0
    assert out["readout"].shape == (3, 10, 4) and not out["readout"].any() and not out["spikes"].any()
    assert out["input_spikes"].sum(1).min() > 0 and out["input_spikes_loaded"] == out["input_spikes"].sum()
    mapping = out["mapping"]
    assert mapping["input_populations"] == 2 and mapping["cores_per_population"]["input"] == 2
    assert mapping["neuron_cores"] == 2 and mapping["system_cores"] > 0 and mapping["chips"] >= 1
    log = (run / "run.log").read_text()
    assert log.count("Resetting") == 4  # after the mapping run and after each item
    assert "too many spikes" not in log  # sources of at most 100 neurons send at most 100 spikes a tick
    assert "INFO" not in "".join(capfd.readouterr())  # sPyNNaker's log went to run.log, not the terminal
    assert [p for p in home.rglob("*") if "matplotlib" not in p.parts and p.name != ".cache"] == []


def test_hardware_configs_by_short_name(tmp_path):
    assert load_hardware_config("spinn5").path.name == "spinn5.cfg"
    assert load_hardware_config("virtual-spinn5.cfg").virtual
    with pytest.raises(BackendError,
                       match="no such hardware config; give a .cfg file or one of remote, spalloc, spinn3"):
        load_hardware_config("spinn7")
    (tmp_path / "pw.cfg").write_text("[Machine]\nspalloc_server = https://me:secret@127.0.0.1/spalloc/\n")
    with pytest.raises(BackendError, match="holds a spalloc password; remove it and set SPALLOC_PASSWORD"):
        load_hardware_config(tmp_path / "pw.cfg")


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(tmp_path, text: str):
    (tmp_path / "machine.cfg").write_text(f"[Machine]\n{text}\n")
    return load_hardware_config(tmp_path / "machine.cfg")


def test_unreachable_board_fails_within_seconds_naming_address_and_cause(tmp_path):
    board = _config(tmp_path, "machine_name = 127.0.0.1\nversion = 5")
    start = time.perf_counter()
    with pytest.raises(BackendError, match=r"SpiNNaker board 127.0.0.1: SCP on UDP port \d+ failed .*refused"):
        check_reachable(board, 1.0, port=_free_port(socket.SOCK_DGRAM))
    assert time.perf_counter() - start < 2.0
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # receives, never answers
    silent.bind(("127.0.0.1", 0))
    with silent, pytest.raises(BackendError, match="no answer to an SCP version request .* within 0.3 s"):
        check_reachable(board, 0.3, port=silent.getsockname()[1])
    assert check_reachable(load_hardware_config()) == "virtual board: nothing to reach"


def test_board_that_answers_is_reachable(tmp_path):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))

    def answer():
        data, address = server.recvfrom(1024)
        server.sendto(data, address)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with server:
        line = check_reachable(_config(tmp_path, "machine_name = 127.0.0.1\nversion = 5"), 2.0,
                               port=server.getsockname()[1])
    assert line.startswith("SpiNNaker board 127.0.0.1 answered SCP")


def test_spalloc_server_checks(tmp_path, monkeypatch):
    port = _free_port(socket.SOCK_STREAM)
    with pytest.raises(BackendError, match=f"spalloc server 127.0.0.1:{port} is not reachable .*refused"):
        check_reachable(_config(tmp_path, f"spalloc_server = 127.0.0.1\nspalloc_port = {port}"), 1.0)
    monkeypatch.delenv("SPALLOC_PASSWORD", raising=False)
    service = _config(tmp_path, "spalloc_server = http://127.0.0.1/spalloc/\nspalloc_user = me")
    with pytest.raises(BackendError, match="needs a password: set the environment variable SPALLOC_PASSWORD"):
        check_reachable(service, 1.0)
    monkeypatch.setenv("SPALLOC_PASSWORD", "from the environment")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        line = check_reachable(service, 1.0, port=listening.getsockname()[1])
    assert line.startswith("spalloc server 127.0.0.1:") and "accepted a TCP connection" in line
