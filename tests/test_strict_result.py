"""Strict result reading and content-keyed resume: every way the audit crashed or fooled ``evaluate``
now gives one ResultFormatError line; a partial batch that cannot be loaded for any reason is
simulated again; a run folder refuses a resume with another model file or other data."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodeploy.backends.base import run_in_batches
from neurodeploy.cli import main
from neurodeploy.errors import ConfigError, ResultFormatError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.jobs.config import JobConfig, ModelSettings
from neurodeploy.jobs.folders import prepare_folder, record_in_config


def make_result(n: int = 6, steps: int = 5, classes: int = 4) -> SimulationResult:
    rng = np.random.default_rng(0)
    return SimulationResult(
        rng.normal(size=(n, steps, classes)).astype(np.float32), rng.integers(0, classes, n),
        rng.integers(0, 5, (n, steps, 2)).astype(np.float32), rng.uniform(0, 9, (n, steps, 2)).astype(np.float32),
        {"backend": "gpu", "T": steps, "ann_accuracy": 0.8, "timings": {"run_s": 0.1},
         "populations": [{"name": "h", "role": "hidden", "size": 3}, {"name": "output", "role": "output",
                                                                       "size": classes}]},
        stop_times=np.full(n, steps), neuron_counts=np.zeros((n, 3 + classes), np.float32))


def write(path: Path, header_text: str | None = None, edit=None, **arrays) -> Path:
    """A result file from :func:`make_result` with ``edit(header)``, raw header text, or arrays replaced."""
    result = make_result()
    header = {"format": "neurodeploy-result", "version": 1, "metadata": result.metadata}
    if edit is not None:
        edit(header)
    values = {name: getattr(result, name) for name in ("readout", "labels", "spike_counts", "synaptic_events",
                                                       "stop_times", "neuron_counts")}
    values.update(arrays)
    values = {k: v for k, v in values.items() if v is not None}
    text = header_text if header_text is not None else json.dumps(header)
    np.savez_compressed(path, metadata_json=np.array(text), **values)
    return path


def refused(path: Path, *needles: str) -> str:
    with pytest.raises(ResultFormatError) as caught:
        SimulationResult.load(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_round_trip(tmp_path):
    result = make_result()
    again = SimulationResult.load(result.save(tmp_path / "r.npz"))
    assert again.metadata == result.metadata and np.array_equal(again.readout, result.readout)
    assert again.labels.dtype == np.int64 and np.array_equal(again.stop_times, result.stop_times)


# --- the silent acceptances -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, needles", [
    ({"header_text": json.dumps({"format": "neurodeploy-result", "version": 1,
                                 "metadata": {"ann_accuracy": float("nan")}})}, ["NaN is not a JSON number"]),
    ({"edit": lambda h: h["metadata"].update(ann_accuracy=5.0)}, ["metadata.ann_accuracy", "5.0"]),
    ({"labels": np.array([99, 0, 1, 2, 3, 0])}, ["labels must lie in [0, 4)", "99"]),
    ({"labels": np.array([-1, 0, 1, 2, 3, 0])}, ["labels must lie in [0, 4)", "-1"]),
    ({"synaptic_events": np.full((6, 5, 2), np.nan, np.float32)}, ["synaptic_events contains NaN"]),
    ({"spike_counts": -np.ones((6, 5, 2), np.float32)}, ["spike_counts holds negative counts"]),
    ({"edit": lambda h: h["metadata"].update(T=30)}, ["metadata.T is 30, the arrays hold 5 steps"]),
    ({"edit": lambda h: h["metadata"].update(T="5")}, ["metadata.T", "'5'"]),
    ({"labels": np.array([0.5, 0, 1, 2, 3, 0])}, ["labels has dtype <f8 (expected integers)"]),
    ({"stop_times": np.zeros(6, np.int64)}, ["stop_times must hold one step in [1, T=5]"]),
])
def test_former_silent_acceptances_are_refused(tmp_path, kwargs, needles):
    refused(write(tmp_path / "r.npz", **kwargs), *needles)


# --- the crashes ------------------------------------------------------------------------------------


def _set_encrypted(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            struct.pack_into("<H", data, found + offset, struct.unpack_from("<H", data, found + offset)[0] | 1)
            start = found + 4
    path.write_bytes(bytes(data))


def corrupt_deflate(path: Path) -> Path:
    """Flips bytes inside the first member's deflate stream (the archive's structure stays intact)."""
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack_from("<2H", data, 26)
    first = 30 + name_len + extra_len
    size = struct.unpack_from("<L", data, 18)[0]
    for i in range(first + 2, first + min(size, 40)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def _recompressed(path: Path, method: int) -> Path:
    with zipfile.ZipFile(path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    with zipfile.ZipFile(path, "w", method) as target:
        for name, data in members.items():
            target.writestr(name, data)
    return path


def _crashes(tmp: Path) -> list[tuple[Path, str]]:
    cases = []

    def case(name: str, needle: str, **kwargs) -> None:
        cases.append((write(tmp / f"{name}.npz", **kwargs), needle))

    case("scalar-labels", "labels must be a 1-d array", labels=np.array(3))
    case("flat-readout", "readout must be a 3-d array", readout=np.zeros(6, np.float32))
    case("header-list", "not a neurodeploy-result v1 file", header_text="[1, 2]")
    case("metadata-number", "metadata", edit=lambda h: h.update(metadata=3))
    case("population-no-size", "metadata.populations[0]: missing field 'size'",
         edit=lambda h: h["metadata"]["populations"][0].pop("size"))
    case("populations-count", "lists 1 populations, spike_counts has 2",
         edit=lambda h: h["metadata"].update(populations=h["metadata"]["populations"][:1]))
    case("stop-2d", "stop_times must be a 1-d array", stop_times=np.ones((6, 2), np.int64))
    case("items", "labels has 5 items, readout has 6", labels=np.zeros(5, np.int64))
    case("object", "object dtype", readout=np.array([{"a": 1}] * 6, dtype=object))
    case("big-endian", "big-endian", readout=np.zeros((6, 5, 4), ">f4"))
    case("deep", "nested", header_text="[" * 50_000 + "]" * 50_000)
    case("complex", "dtype <c8 (expected real numbers", readout=np.zeros((6, 5, 4), np.complex64))
    case("timings", "metadata.timings.run_s", edit=lambda h: h["metadata"].update(timings={"run_s": -1}))
    encrypted = write(tmp / "encrypted.npz")
    _set_encrypted(encrypted)
    cases.append((encrypted, "is encrypted"))
    cases.append((corrupt_deflate(write(tmp / "deflate.npz")), "the archive is corrupt"))
    cases.append((_recompressed(write(tmp / "bz2.npz"), zipfile.ZIP_BZIP2), "compression method 12"))
    cases.append((_recompressed(write(tmp / "lzma.npz"), zipfile.ZIP_LZMA), "compression method 14"))
    truncated = write(tmp / "truncated.npz")
    truncated.write_bytes(truncated.read_bytes()[:200])
    cases.append((truncated, "not a readable result file"))
    return cases


def test_former_crashes_are_one_result_format_error(tmp_path):
    for path, needle in _crashes(tmp_path):
        refused(path, needle)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_devices_are_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")
    refused(tmp_path / "fifo.npz", "not a regular file")
    (tmp_path / "random.npz").symlink_to("/dev/urandom")
    refused(tmp_path / "random.npz", "not a regular file")


def test_evaluate_prints_one_line_for_each(tmp_path, capsys):
    paths = [path for path, _ in _crashes(tmp_path)] + [write(tmp_path / "five.npz",
                                                              edit=lambda h: h["metadata"].update(ann_accuracy=5.0))]
    for path in paths:
        assert main(["evaluate", str(path), "--out", str(tmp_path / "out")]) == 2
        lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        assert len(lines) == 1 and path.name in lines[0] and "Traceback" not in lines[0], lines


def test_saving_writes_strict_json(tmp_path):
    result = make_result()
    result.metadata["timings"]["run_s"] = float("nan")  # a producer's NaN is written as null, never as NaN
    again = SimulationResult.load(result.save(tmp_path / "r.npz"))
    assert again.metadata["timings"]["run_s"] is None


# --- resume ------------------------------------------------------------------------------------------


def _batches(tmp_path: Path, damage) -> tuple[SimulationResult, list[int]]:
    inputs, labels = torch.rand(8, 3), torch.arange(8) % 4
    calls: list[int] = []

    def simulate(x, y, first):
        calls.append(first)
        n = len(y)
        return SimulationResult(np.zeros((n, 2, 4), np.float32), y.numpy(), np.zeros((n, 2, 1), np.float32),
                                np.zeros((n, 2, 1), np.float32))

    folder = tmp_path / "partial"
    run_in_batches(simulate, inputs, labels, 4, folder, progress=False)
    assert calls == [0, 4]
    damage(folder / "batch_0000004.npz")
    calls.clear()
    return run_in_batches(simulate, inputs, labels, 4, folder, progress=False), calls


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize("damage", [
    corrupt_deflate,
    lambda p: p.write_bytes(p.read_bytes()[:-30]),
    _set_encrypted,
    lambda p: p.write_bytes(b""),
    pytest.param(_fifo, marks=pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")),
], ids=["corrupt-deflate", "truncated", "encrypted", "empty", "fifo"])
def test_a_partial_batch_that_cannot_be_loaded_is_simulated_again(tmp_path, damage):
    result, calls = _batches(tmp_path, damage)
    assert calls == [4] and result.n_items == 8  # batch 0 reused, batch 4 simulated again


def _config(tmp_path: Path, model: Path) -> JobConfig:
    return JobConfig(model=ModelSettings(model=str(model)), results_dir=str(tmp_path / "results"), run_id="r")


def test_a_swapped_model_file_is_refused_in_one_line(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"first model")
    config = _config(tmp_path, model)
    folder = prepare_folder(config, "data-hash")
    assert prepare_folder(config, "data-hash") == folder  # same content: resumes
    model.write_bytes(b"second model")
    with pytest.raises(ConfigError) as caught:
        prepare_folder(config, "data-hash")
    message = str(caught.value)
    assert "\n" not in message and "another model" in message and "mix two models" in message
    model.write_bytes(b"first model")
    with pytest.raises(ConfigError, match="on other data"):
        prepare_folder(config, "other-data-hash")


def test_a_model_changed_while_preparing_is_refused(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"first model")
    folder = prepare_folder(_config(tmp_path, model), "data-hash")
    with pytest.raises(ConfigError, match="changed while the run"):
        record_in_config(folder, models=[{"path": str(model), "key": {"kind": "file", "sha256": "0" * 64}}])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_an_unreadable_config_json_is_refused(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"model")
    config = _config(tmp_path, model)
    folder = prepare_folder(config, "data-hash")
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    with pytest.raises(ConfigError, match="config.json cannot be read"):
        prepare_folder(config, "data-hash")


def test_resume_with_a_swapped_model_on_the_command_line(tmp_path, capsys, monkeypatch):
    from neurodeploy.train import build, save_model

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "m.pt"
    save_model(model, build("dense_mnist", (1, 28, 28), 10, seed=0), "dense_mnist", (1, 28, 28), 10, {})
    args = ["run", "--model", str(model), "--samples", "20", "-T", "3", "--calibration-samples", "50",
            "--batch-size", "10", "--run-id", "r", "--no-progress"]
    assert main(args) == 0
    result = tmp_path / "results" / "r" / "result.npz"
    before = result.read_bytes()
    save_model(model, build("dense_mnist", (1, 28, 28), 10, seed=1), "dense_mnist", (1, 28, 28), 10, {})
    capsys.readouterr()
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and "another model" in lines[0], lines
    assert result.read_bytes() == before  # nothing was mixed into the run


def test_batch_parts_in_memory_still_validate():
    part = SimulationResult(np.zeros((2, 3, 4), np.float32), np.array([0, 3]), np.zeros((2, 3, 1), np.float32),
                            np.zeros((2, 3, 1), np.float32))
    assert part.validate() is part
    buffer = io.BytesIO()
    np.save(buffer, part.readout)
