"""Hostile ``torch.export`` archives: a valid program with a pickled payload placed wherever
``torch.export.load`` would unpickle it (or run it otherwise). Each payload, when run, writes a marker
file, so a test can tell refused-before-running from ran."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import torch


class Payload:
    """Unpickling this runs ``open(marker, 'w')``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def payload_bytes(marker: Path, how: str = "torch") -> bytes:
    if how == "pickle":
        return pickle.dumps(Payload(marker))
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    return buffer.getvalue()


class TinyNet(torch.nn.Module):
    """784 -> 10 linear classifier with a buffer and a lifted constant (so every payload kind has a place)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


def save_program(path: Path, model: torch.nn.Module | None = None) -> Path:
    """A program of ``model`` (default: :class:`TinyNet` with seeded weights whose ANN accuracy on the
    first 20 MNIST test items is not zero) saved with ``torch.export.save``."""
    if model is None:
        torch.manual_seed(1)
        model = TinyNet()
    model = model.eval()
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 28, 28),)), path)
    return path


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write(path: Path, contents: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return path


def _root(contents: dict[str, bytes]) -> str:
    return next(iter(contents)).split("/", 1)[0] + "/"


def _config(contents: dict[str, bytes], name: str) -> dict:
    return json.loads(contents[name])


#: every place a payload can hide; each maker takes (contents, marker) and changes contents in place
def _pickled_weight(contents, marker):
    root = _root(contents)
    name = root + "data/weights/model_weights_config.json"
    config = _config(contents, name)
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    contents[root + "data/weights/" + first["path_name"]] = payload_bytes(marker)
    contents[name] = json.dumps(config).encode()


def _constant(prefix: str, how: str, pickled: bool = True):
    def make(contents, marker):
        root = _root(contents)
        name = root + "data/constants/model_constants_config.json"
        config = _config(contents, name)
        config["config"]["evil"] = {"path_name": f"{prefix}0", "is_param": False, "use_pickle": pickled,
                                    "tensor_meta": None}
        contents[root + f"data/constants/{prefix}0"] = payload_bytes(marker, how)
        contents[name] = json.dumps(config).encode()
    return make


def _sample_inputs(contents, marker):
    contents[_root(contents) + "data/sample_inputs/model.pt"] = payload_bytes(marker)


def _legacy(member: str):
    def make(contents, marker):
        contents[_root(contents) + member] = payload_bytes(marker)
    return make


def _aoti(contents, marker):
    contents[_root(contents) + "data/aotinductor/model/model.so"] = b"\x7fELF" + payload_bytes(marker)


def _guards(contents, marker):
    name = _root(contents) + "models/model.json"
    program = json.loads(contents[name])
    program["guards_code"] = [f"open({str(marker)!r}, 'w').close() or True"]
    contents[name] = json.dumps(program).encode()


def _target(target: str):
    def make(contents, marker):
        name = _root(contents) + "models/model.json"
        program = json.loads(contents[name])
        program["graph_module"]["graph"]["nodes"][0]["target"] = target
        contents[name] = json.dumps(program).encode()
    return make


def _old_layout(contents, marker):
    contents.clear()
    contents.update({"version": b"8.0", "serialized_exported_program.json": b"{}",
                     "serialized_state_dict.pt": payload_bytes(marker),
                     "serialized_constants.pt": payload_bytes(marker),
                     "serialized_example_inputs.pt": payload_bytes(marker)})


HOSTILE = {
    "pickled weight": _pickled_weight,
    "pickled tensor constant": _constant("tensor_", "torch"),
    "opaque object constant": _constant("opaque_obj_", "pickle"),
    "custom object constant": _constant("custom_obj_", "pickle"),
    "sample inputs": _sample_inputs,
    "legacy weights": _legacy("data/weights/model.pt"),
    "legacy constants": _legacy("data/constants/model.pt"),
    "unknown pickle member": _legacy("data/extra.pkl"),
    "compiled library": _aoti,
    "guards code": _guards,
    "torch.load as a node": _target("torch.load"),
    "custom op": _target("torch.ops.my_ops.secret.default"),
    "attribute walk": _target("_operator.attrgetter"),
    "pre-2.8 layout": _old_layout,
}


def hostile(kind: str, good: Path, out: Path, marker: Path) -> Path:
    """``good`` with the payload of ``kind`` (a key of :data:`HOSTILE`) written to ``out``."""
    contents = members(good)
    HOSTILE[kind](contents, marker)
    return write(out, contents)
