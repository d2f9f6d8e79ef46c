"""Strict model files: every crash the audit found (KeyError 'arch', KeyError 'state_dict', n_classes
'ten', an unknown architecture, ...) and every refused pickle is one ModelFormatError line."""

from __future__ import annotations

import io
import os
import struct

import pytest
import torch

from neurodeploy.cli import main
from neurodeploy.errors import ModelFormatError
from neurodeploy.train import build, load_model, save_model
from neurodeploy.train.quantized import quantize_activations


def checkpoint() -> dict:
    model = build("dense_mnist", (1, 4, 4), 3, seed=0)
    return {"format": "neurodeploy-model", "version": 1, "arch": "dense_mnist", "input_shape": [1, 4, 4],
            "n_classes": 3, "state_dict": model.state_dict(), "record": {"history": []}, "quant_bits": None,
            "pooling": []}


def refused(path, *needles: str) -> str:
    with pytest.raises(ModelFormatError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def saved(tmp_path, edit, **kwargs):
    data = checkpoint()
    edit(data)
    path = tmp_path / "m.pt"
    torch.save(data, path, **kwargs)
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def _weight_with(value):
    def edit(d):
        d["state_dict"]["1.weight"] = value
    return edit


@pytest.mark.parametrize("edit, needles", [
    (lambda d: d.pop("arch"), ["missing field 'arch'"]),
    (lambda d: d.pop("state_dict"), ["missing field 'state_dict'"]),
    (lambda d: d.update(n_classes="ten"), ["n_classes", "'ten'"]),
    (lambda d: d.update(n_classes=1.5), ["n_classes", "1.5"]),
    (lambda d: d.update(arch="vgg99"), ["arch", "'vgg99'"]),
    (lambda d: d.update(input_shape=[1, -4, 4]), ["input_shape[1]"]),
    (lambda d: d.update(input_shape=[3, 65536, 65536]), ["elements per item"]),
    (lambda d: d.update(input_shape=["1", 4, 4]), ["input_shape[0]"]),
    (lambda d: d.update(quant_bits=9), ["quant_bits"]),
    (lambda d: d.update(pooling=[{"flatten_index": 7, "factor": 2}]), ["state_dict lacks"]),
    (lambda d: d.update(pooling=[{"flatten_index": 1, "factor": 2}]), ["cannot be built"]),
    (lambda d: d.update(pooling=[{"flatten_index": 0}]), ["pooling[0]: missing field 'factor'"]),
    (lambda d: d.update(version=True), ["version True is not supported"]),
    (lambda d: d.update(record={"x": torch.zeros(2)}), ["record.x"]),
    (lambda d: d.update(extra=1), ["unknown field 'extra'"]),
    (lambda d: d["state_dict"].pop("1.weight"), ["lacks '1.weight'"]),
    (lambda d: d["state_dict"].update({"9.weight": torch.zeros(2)}), ["unexpected '9.weight'"]),
    (_weight_with(torch.zeros(128, 15)), ["state_dict['1.weight'] is torch.float32 [128, 15]", "[128, 16]"]),
    (_weight_with(torch.zeros(128, 16, dtype=torch.float64)), ["torch.float64"]),
    (_weight_with(torch.full((128, 16), float("nan"))), ["contains NaN"]),
    (_weight_with("weights"), ["state_dict.1.weight"]),
    (lambda d: d.update(n_classes=2), ["state_dict['7.weight']", "[2, 128]"]),
])
def test_malformed_model_files_are_one_line(tmp_path, edit, needles):
    refused(saved(tmp_path, edit), *needles)


def test_code_in_the_pickle_is_refused_in_one_line(tmp_path, capsys):
    path = saved(tmp_path, lambda d: d.update(record={"x": _Evil()}))
    refused(path, "refusing to load code", "system")
    assert main(["convert", str(path), "--out", str(tmp_path / "x.zip")]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    # the command line names the way out: --trust-pickle, or torch.export
    assert len(lines) == 1 and "runs code when loaded; refused" in lines[0] and "--trust-pickle" in lines[0], lines


def test_legacy_pickles_damaged_members_and_devices_are_refused(tmp_path):
    refused(saved(tmp_path, lambda d: None, _use_new_zipfile_serialization=False), "not a readable model file")
    path = saved(tmp_path, lambda d: None)
    data = bytearray(path.read_bytes())
    at = data.find(b"data/0") + 200
    data[at:at + 8] = b"\xff" * 8  # inside a tensor's bytes: only the CRC tells
    path.write_bytes(bytes(data))
    refused(path, "cannot be read")
    data = bytearray(saved(tmp_path, lambda d: None).read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            struct.pack_into("<H", data, found + offset, struct.unpack_from("<H", data, found + offset)[0] | 1)
            start = found + 4
    path.write_bytes(bytes(data))
    refused(path, "encrypted")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.pt")
        refused(tmp_path / "fifo.pt", "not a regular file")
    (tmp_path / "random.pt").symlink_to("/dev/urandom")
    refused(tmp_path / "random.pt", "not a regular file")


def test_own_files_still_load(tmp_path):
    model = quantize_activations(build("conv_mnist", (1, 8, 8), 4, seed=0), 2)
    path = save_model(tmp_path / "c.pt", model, "conv_mnist", (1, 8, 8), 4, {"history": [{"loss": 0.5}]},
                      quant_bits=2)
    loaded, info = load_model(path)
    assert info["quant_bits"] == 2 and info["n_classes"] == 4
    assert loaded(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    buffer = io.BytesIO()
    torch.save({"a": 1}, buffer)
