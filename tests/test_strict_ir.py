"""Strict IR reading: every crash and silent acceptance the audit found now gets one clear line
(IRFormatError naming the file and the field), FIFOs and devices are refused without reading, and a
small file cannot make the reader allocate much."""

from __future__ import annotations

import io
import json
import os
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from neurodeploy.cli import main
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
    save_network,
)
from neurodeploy.ir.io import _to_parts


@pytest.fixture
def network() -> Network:
    rng = np.random.default_rng(0)
    net = Network(metadata={"note": "strict"})
    net.add_population(Population("input", (2, 4, 4), "input"))
    net.add_population(Population("conv", (2, 4, 4), "hidden", NeuronSpec(threshold=1.0, spike_cap=2,
                                                                           negative_spikes=False)))
    net.add_population(Population("output", (3,), "output", NeuronSpec(readout="membrane")))
    net.connect("input", "conv", [Conv2d(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), 1, 1, 1, 2)])
    net.connect("conv", "output", [AvgPool2d(2, 2), Flatten(), Dense(rng.normal(size=(3, 8)).astype(np.float32))])
    return net.validate()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write(path: Path, structure: dict | bytes, arrays: dict[str, bytes], method: int = zipfile.ZIP_STORED,
          inner_method: int = zipfile.ZIP_STORED) -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", inner_method) as archive:
        for key, data in arrays.items():
            archive.writestr(f"{key}.npy", data)
    text = structure if isinstance(structure, bytes) else json.dumps(structure).encode()
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("network.json", text)
        archive.writestr("arrays.npz", inner.getvalue())
    return path


def parts(network: Network) -> tuple[dict, dict[str, bytes]]:
    structure, arrays = _to_parts(network)
    return structure, {key: npy(np.asarray(value)) for key, value in arrays.items()}


def refused(path: Path, *needles: str) -> str:
    """Loads ``path`` expecting one IRFormatError line naming the file and every needle."""
    with pytest.raises(IRFormatError) as caught:
        load_network(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def edited(tmp_path: Path, network: Network, edit) -> Path:
    structure, arrays = parts(network)
    edit(structure, arrays)
    return write(tmp_path / "net.zip", structure, arrays)


WEIGHT = "projection/0/op/0/weight"


# --- the crashes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, needles", [
    (lambda s, a: s["populations"].__setitem__(1, True), ["populations[1]", "valid dictionary"]),
    (lambda s, a: s["populations"][1].update(shape=["abc"]), ["populations[1].shape[0]", "'abc'"]),
    (lambda s, a: a.update({WEIGHT: npy(np.ones(18, np.float32))}), ["conv2d op: weight must be a 4-d array"]),
    (lambda s, a: s["projections"][0]["ops"][0]["params"].update(stride=[0, 1]),
     ["projections[0].ops[0].params.stride[0]", "greater than or equal to 1"]),
    (lambda s, a: s["projections"][0]["ops"][0]["params"].update(groups=0), ["params.groups"]),
    (lambda s, a: s["projections"][1]["ops"][0]["params"].update(kernel=[0, 2]), ["params.kernel[0]"]),
    (lambda s, a: s.update(populations="all"), ["populations", "valid list"]),
    (lambda s, a: s["projections"][0].update(ops=[{"kind": "dense"}]), ["missing field 'params'"]),
])
def test_former_crashes_are_one_line(tmp_path, network, edit, needles):
    refused(edited(tmp_path, network, edit), *needles)


def test_encrypted_and_unusual_members_are_refused(tmp_path, network):
    structure, arrays = parts(network)
    path = write(tmp_path / "net.zip", structure, arrays)
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            struct.pack_into("<H", data, found + offset, struct.unpack_from("<H", data, found + offset)[0] | 1)
            start = found + 4
    path.write_bytes(bytes(data))
    refused(path, "is encrypted")
    refused(write(tmp_path / "bz.zip", structure, arrays, zipfile.ZIP_BZIP2), "compression method 12")
    text = json.dumps(structure).encode()
    refused_path = tmp_path / "aes.zip"  # method 99 (AES): zipfile raises NotImplementedError on reading it
    refused_path.write_bytes(_raw_zip([("network.json", text, 99, zlib.crc32(text), len(text)),
                                       ("arrays.npz", b"x", 0, zlib.crc32(b"x"), 1)]))
    refused(refused_path, "compression method 99")
    refused(write(tmp_path / "xz.zip", structure, arrays, inner_method=zipfile.ZIP_LZMA), "compression method 14")
    deflated = write(tmp_path / "deflated.zip", structure, arrays, zipfile.ZIP_DEFLATED)
    data = bytearray(deflated.read_bytes())
    start = data.find(b"arrays.npz") + len("arrays.npz") + 40
    data[start:start + 30] = bytes(b ^ 0xA5 for b in data[start:start + 30])  # a corrupt deflate stream
    deflated.write_bytes(bytes(data))
    refused(deflated, "arrays.npz")


def test_deep_json_is_refused_before_parsing(tmp_path, network):
    structure, arrays = parts(network)
    text = json.dumps(structure)[:-1].encode() + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refused(write(tmp_path / "deep.zip", text, arrays), "nested 100001 deep")


@pytest.mark.parametrize("text, needle", [
    (b'{"format": "neurodeploy-ir", "version": 1, "version": 1}', "appears twice"),
    (b'{"format": "neurodeploy-ir", "version": NaN}', "not valid JSON"),
    (b'{"format": "neurodeploy-ir", "version": 1e999}', "out of range"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_json_that_python_would_bend_is_refused(tmp_path, network, text, needle):
    _, arrays = parts(network)
    refused(write(tmp_path / "net.zip", text, arrays), needle)


def test_array_header_declaring_1e12_elements_allocates_nothing(tmp_path, network):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    lying = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(72)
    path = edited(tmp_path, network, lambda s, a: a.update({WEIGHT: lying}))
    tracemalloc.start()
    try:
        refused(path, "needs 4,000,000,000,000 bytes")
        assert tracemalloc.get_traced_memory()[1] < 50 << 20
    finally:
        tracemalloc.stop()


def _bomb(prefix: bytes, size: int) -> tuple[bytes, int]:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out, crc, zeros = [c.compress(prefix)], zlib.crc32(prefix), bytes(1 << 20)
    for _ in range((size - len(prefix)) >> 20):
        out.append(c.compress(zeros))
        crc = zlib.crc32(zeros, crc)
    out.append(c.flush())
    return b"".join(out), crc


def _raw_zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """(name, payload, method, crc, size) entries as a zip archive."""
    out, central = io.BytesIO(), []
    for name, payload, method, crc, size in members:
        offset = out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(payload), size,
                              len(name), 0) + name.encode() + payload)
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(payload),
                                   size, len(name), 0, 0, 0, 0, 0, offset) + name.encode())
    start = out.tell()
    out.write(b"".join(central))
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


def test_a_1_mb_file_inflating_to_1_gib_is_refused_before_inflating(tmp_path, network):
    structure, arrays = parts(network)
    text = json.dumps(structure).encode()
    payload, crc = _bomb(b"", 1 << 30)
    path = tmp_path / "bomb.zip"
    path.write_bytes(_raw_zip([("network.json", text, 0, zlib.crc32(text), len(text)),
                               ("arrays.npz", payload, 8, crc, 1 << 30)]))
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        refused(path, "declares 1,073,741,824 bytes, more than the")
        assert tracemalloc.get_traced_memory()[1] < 50 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_devices_are_refused_without_reading(tmp_path, network):
    os.mkfifo(tmp_path / "fifo.zip")
    refused(tmp_path / "fifo.zip", "not a regular file")
    (tmp_path / "random.zip").symlink_to("/dev/urandom")
    refused(tmp_path / "random.zip", "not a regular file")
    folder = save_network(network, tmp_path / "folder")
    (folder / "arrays.npz").unlink()
    os.mkfifo(folder / "arrays.npz")
    refused(folder, "not a regular file")


# --- the silent acceptances ------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, needles", [
    (lambda s, a: s["populations"][1]["neuron"].update(negative_spikes="false"),
     ["negative_spikes", "valid boolean", "'false'"]),
    (lambda s, a: s["populations"][1]["neuron"].update(spike_cap=1.5), ["spike_cap", "valid integer", "1.5"]),
    (lambda s, a: s["projections"][0]["ops"][0]["params"].update(groups=1.5), ["params.groups", "1.5"]),
    (lambda s, a: s["projections"][1]["ops"][0]["params"].update(kernel=[2, 2, 2]),
     ["params.kernel", "at most 2 items"]),
    (lambda s, a: a.update(spare=npy(np.zeros(10, np.float32))), ["holds 'spare.npy'", "refers to"]),
    (lambda s, a: s["populations"][1].update(shape=[-2, -4, 4]), ["populations[1].shape[0]", "-2"]),
    (lambda s, a: a.update({WEIGHT: npy(np.load(io.BytesIO(a[WEIGHT])).astype(">f4"))}), ["big-endian"]),
    (lambda s, a: s["populations"][1].update(role="hiden"), ["populations[1].role", "'hiden'"]),
    (lambda s, a: s["populations"][1]["neuron"].update(reset="soft"), ["neuron.reset", "'soft'"]),
    (lambda s, a: s["populations"][2]["neuron"].update(readout="rate"), ["neuron.readout"]),
    (lambda s, a: s.update(version=True), ["version", "True"]),
    (lambda s, a: s["populations"][1]["neuron"].update(v_init_seed=2.0), ["v_init_seed", "2.0"]),
    (lambda s, a: s["populations"][1].update(extra=1), ["unknown field 'extra'"]),
])
def test_former_silent_acceptances_are_refused(tmp_path, network, edit, needles):
    refused(edited(tmp_path, network, edit), *needles)


def test_an_unreferenced_2_gib_array_is_refused_unread(tmp_path, network):
    structure, arrays = parts(network)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (536870912,), }"
    header = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + (header + " " * (117 - len(header)) + "\n").encode()
    payload, crc = _bomb(header, len(header) + (2 << 30))
    members = [(f"{k}.npy", v, 0, zlib.crc32(v), len(v)) for k, v in arrays.items()]
    inner = _raw_zip(members + [("spare.npy", payload, 8, crc, len(header) + (2 << 30))])
    text = json.dumps(structure).encode()
    path = tmp_path / "spare.zip"
    path.write_bytes(_raw_zip([("network.json", text, 0, zlib.crc32(text), len(text)),
                               ("arrays.npz", inner, 0, zlib.crc32(inner), len(inner))]))
    refused(path, "spare.npy")


def test_round_trip_keeps_meaning_and_accepts_its_own_files(tmp_path, network):
    for target in (tmp_path / "a.zip", tmp_path / "b"):
        again = load_network(save_network(network, target))
        assert again.populations["conv"].neuron.negative_spikes is False
        assert again.populations["conv"].neuron.spike_cap == 2
        assert again.projections[0].ops[0].groups == 2


def test_in_memory_ops_refuse_what_would_change_their_meaning():
    weight = np.ones((2, 1, 3, 3), np.float32)
    with pytest.raises(IRValidationError, match="groups must be a whole number"):
        Conv2d(weight, groups=1.5)
    with pytest.raises(IRValidationError, match="stride must be at least 1"):
        Conv2d(weight, stride=0)
    with pytest.raises(IRValidationError, match="pair"):
        AvgPool2d((2, 2, 2), 2)
    with pytest.raises(IRValidationError, match="not a whole number"):
        Population("p", ("abc",), "hidden")
    assert Conv2d(weight, stride=np.int64(2), groups=2.0).groups == 2  # whole numbers keep their value


def test_info_prints_one_line(tmp_path, network, capsys):
    path = edited(tmp_path, network, lambda s, a: s["populations"][1]["neuron"].update(negative_spikes="false"))
    assert main(["info", str(path)]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and "negative_spikes" in lines[0] and "Traceback" not in lines[0]


def test_every_op_kind_has_a_schema():
    from typing import get_args

    from neurodeploy.ir.io import OpSchema
    from neurodeploy.ir.ops import OP_TYPES

    kinds = {get_args(cls.model_fields["kind"].annotation)[0] for cls in get_args(get_args(OpSchema)[0])}
    assert kinds == set(OP_TYPES)
