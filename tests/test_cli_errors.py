"""Every error a user can cause on the command line: one line, exit status 2, no traceback, and before any
model is trained (the settings are checked before any work starts: nothing is cached or written)."""

from __future__ import annotations

import time

import pytest

from neurodeploy.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-files")
    (folder / "corrupt.pt").write_bytes(b"not a model at all")
    (folder / "corrupt.zip").write_bytes(b"PK\x03\x04 truncated")
    (folder / "corrupt.npz").write_bytes(b"\x93NUMPY garbage")
    (folder / "empty-data").mkdir()
    return folder


BAD = [
    (["run", "--arch", "tinynet"], "tinynet"),
    (["run", "--backend", "foo"], "foo"),
    (["run", "--profile", "fast"], "fast"),
    (["run", "--profile", "exact"], "gpu backend: --profile 'exact' is not one of"),
    (["run", "--samples", "0"], "--samples must be at least 1"),
    (["run", "-T", "0"], "-T/--steps must be at least 1"),
    (["run", "-T", "abc"], "invalid int value"),
    (["run", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["run", "--epochs", "0"], "--epochs must be at least 1"),
    (["run", "--dc-alpha", "abc"], "--dc-alpha 'abc'"),
    (["run", "--dc-alpha", "bits:x"], "bits:B takes a whole number"),
    (["run", "--dc-alpha", "-3"], "positive finite number"),
    (["run", "--dc-validation-fraction", "1.5"], "--dc-validation-fraction must lie in (0, 1)"),
    (["run", "--dc-tolerance", "-1"], "--dc-tolerance must lie in [0, 1]"),
    (["run", "--percentile", "150"], "--percentile must lie in (0, 100]"),
    (["run", "--exit", "confidence:2"], "a confidence threshold lies in (0, 1)"),
    (["run", "--exit", "speed"], "the only exit rule is"),
    (["run", "--record", "relu_3:9-3"], "the range 9-3 runs backwards; write 3-9"),
    (["run", "--record", "relu_3:first"], "'first' are not items (write e.g. relu_3:0-9 or relu_3:3,5)"),
    (["run", "--record", ",relu_3"], "a population name is missing"),
    (["run", "--samples", "5", "--record", "relu_3:2,7"], "--record relu_3:7: the run simulates 5 test items (0-4)"),
    (["run", "--quant-bits", "0"], "--quant-bits must be from 1 to 8"),
    (["run", "--max-fan-in", "-1"], "--max-fan-in must be at least 0"),
    (["run", "--max-pool", "sum"], "invalid choice: 'sum'"),
    (["run", "--readout-start", "-3"], "the readout starts at step 0 or later"),
    (["run", "--conversion", "qcfs", "--v-init", "zero"], "--conversion qcfs starts every membrane at theta/2"),
    (["run", "--v-init", "warm"], "invalid choice: 'warm'"),
    (["run", "--conversion", "qffs", "--negative-spikes"], "--negative-spikes is a choice of --conversion rate"),
    (["compare", "--conversion", "qcfs", "--negative-spikes"], "--negative-spikes is a choice of --conversion rate"),
    (["run", "--backend", "neuron", "--negative-spikes"],
     "--negative-spikes gives neurons negative spikes; the neuron backend does not implement negative spikes "
     "(backends that do: gpu)"),
    (["run", "--backend", "nest", "--conversion", "qffs"],
     "the nest backend does not implement spike caps and negative spikes"),
    (["run", "--backend", "spinnaker", "--conversion", "qffs"], "the spinnaker backend does not implement spike caps"),
    (["diagnose", "--backend", "spinnaker", "--negative-spikes"], "the spinnaker backend does not implement"),
    (["optimize", "--out", "{files}/o.zip", "--backend", "nest", "--conversion", "qffs"],
     "the nest backend does not implement"),
    (["run", "--optimize", "--negative-spikes"],
     "--negative-spikes gives neurons negative spikes, which the scale optimizer (--optimize, optimize) does not take"),
    (["optimize", "--out", "{files}/o.zip", "--conversion", "qffs"],
     "--conversion qffs gives neurons spike caps and negative spikes, which the scale optimizer"),
    (["run", "--headroom", "0.5"], "--headroom must lie in [1, inf)"),
    (["run", "--conversion", "qcfs", "--headroom", "2"], "--headroom is a choice of --conversion rate"),
    (["run", "--readout-start", "soon"], "'soon' is neither 'auto' nor a whole number of steps"),
    (["run", "--optimize-evals", "0"], "--optimize-evals must be at least 1"),
    (["run", "--fixed-v-init"], "--fixed-v-init applies only with --optimize"),
    (["run", "--accuracy-budget", "2"], "--accuracy-budget applies only with --optimize"),
    (["run", "--encoding", "morse"], "morse"),
    (["run", "--backend", "neuron", "--workers", "0"], "neuron backend: --workers must be at least 1"),
    (["run", "--workers", "2"], "gpu backend has no option --workers"),
    (["run", "--chunk", "0"], "gpu backend: --chunk must be at least 1"),
    (["run", "--device", "tpu"], "is not a device"),
    (["run", "--backend", "spinnaker", "--neurons-per-core", "300"], "--neurons-per-core must be at most 256"),
    (["run", "--backend", "spinnaker", "--encoding", "poisson"], "spinnaker encodes the input itself"),
    (["run", "--backend", "spinnaker", "--hardware-config", "no-such-board.cfg"], "no-such-board.cfg"),
    (["run", "--run-id", "../../x"], "--run-id '../../x'"),
    (["run", "--model", "{files}/missing.pt"], "missing.pt: no such file"),
    (["run", "--model", "{files}/corrupt.pt"], "corrupt.pt: not a readable model file"),
    (["run", "--data", "{files}/no-such-folder"], "no-such-folder: no such folder"),
    (["run", "--data", "{files}/empty-data"], "empty-data"),
    (["compare", "--backends", "gpu:fast"], "gpu backend: --profile 'fast' is not one of"),
    (["compare", "--backends", "foo"], "unknown backend 'foo'"),
    (["compare", "--backends", "gpu,gpu"], "lists a backend twice"),
    (["compare", "--backends", "gpu:pynn", "--workers", "2"], "--workers applies to none of the backends"),
    (["compare", "--backends", "gpu,neuron", "--conversion", "qffs"], "the neuron backend does not implement"),
    (["evaluate", "{files}/missing.npz"], "missing.npz"),
    (["evaluate", "{files}/corrupt.npz"], "corrupt.npz"),
    (["info", "{files}/corrupt.zip"], "corrupt.zip"),
    (["export", "{files}/corrupt.zip", "{files}/corrupt.zip"], "the file to write is the network read"),
    (["convert", "{files}/missing.pt", "--out", "{files}/x.zip"], "missing.pt: no such file (the model to convert)"),
    (["train", "--out", "{files}/m.pt", "--epochs", "0"], "--epochs must be at least 1"),
    (["train", "--out", "{files}/m.pt", "--lr", "-1"], "--lr must lie in (0, inf), got -1"),
    (["train", "--out", "{files}/m.pt", "--finetune-sparsity", "--prune", "-0.1"], "--prune must lie in [0, inf)"),
    (["optimize", "--out", "{files}/o.zip", "--optimize-items", "0"], "--optimize-items must be at least 1"),
]


@pytest.mark.parametrize("argv, needle", BAD, ids=[" ".join(argv) for argv, _ in BAD])
def test_bad_invocation_is_one_clear_line(argv, needle, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh results folder: ./results
    monkeypatch.setenv("NEURODEPLOY_CACHE", str(tmp_path / "cache"))  # a fresh model cache
    argv = [word.replace("{files}", str(files)) for word in argv]
    try:
        code = main(argv)
    except SystemExit as done:  # usage errors from the parser
        code = done.code
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and needle in lines[0], lines[0]
    # before any work: nothing trained or cached (a structural check, not a timed one: a loaded machine is slow)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results" / "models").exists()


def test_there_are_at_least_25_cases():
    assert len(BAD) >= 25


@pytest.mark.parametrize("machine, needle", [
    ("machine_name = 127.0.0.1\nversion = 5", "SpiNNaker board 127.0.0.1: SCP on UDP port 17893 failed"),
    ("remote_spinnaker_url = https://127.0.0.1:9/remote/\nversion = 5",
     "remote SpiNNaker service 127.0.0.1:9 is not reachable"),
])
def test_unreachable_spinnaker_machine_fails_fast_before_any_work(machine, needle, tmp_path, capsys, monkeypatch):
    """No machine behind the config's address (loopback, where nothing listens): exit 2 within 30 s,
    the address and the cause in one line, nothing trained, nothing written to $HOME."""
    pytest.importorskip("spinnman", reason="the spinnaker extra (sPyNNaker) is not installed")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "board.cfg"
    config.write_text(f"[Machine]\n{machine}\n")
    start = time.perf_counter()
    code = main(["run", "--backend", "spinnaker", "--hardware-config", str(config)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "results").exists() and list(home.iterdir()) == []


def test_the_summary_imports_no_plotting_library():
    import subprocess
    import sys

    code = "import neurodeploy.evaluate.summary, sys; assert 'matplotlib' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
