"""``torch.export`` archives (``.pt2``) read without unpickling anything.

``torch.export.load`` (torch 2.13, ``torch/export/pt2_archive/_package.py`` and
``torch/_export/serde/serialize.py``) runs code from the file on these paths:

* a weight or tensor constant whose payload config says ``use_pickle: true``: ``torch.load(...,
  weights_only=False)``;
* constants named ``custom_obj_*`` (``torch._C._pickle_load_obj``) and ``opaque_obj_*``
  (``pickle.loads``);
* ``data/sample_inputs/<model>.pt`` and the legacy ``data/weights/<model>.pt`` /
  ``data/constants/<model>.pt`` members: ``deserialize_torch_artifact`` tries ``weights_only=True`` and,
  when that fails, loads again with ``weights_only=False``;
* the pre-2.8 layout (``serialized_state_dict.pt``, ``serialized_constants.pt``,
  ``serialized_example_inputs.pt``), read the same way when the new layout fails to load;
* ``data/aotinductor/``: a compiled shared library, loaded into the process;
* ``guards_code`` in the program's JSON: Python source compiled when ``ExportedProgram.module()`` runs;
* a graph node's ``target`` is resolved by walking attributes of ``torch``, ``operator`` or ``math``
  (``torch.hub.load`` would resolve, and run when the graph runs).

So an archive is first read here, within the byte budget of :mod:`neurodeploy.safe_io`, and a new one is
assembled in memory from an allow-list: the archive markers, the program JSON (``guards_code`` emptied),
the payload configs, raw tensor members (each declared size, stride and offset checked against its
record, every dtype a plain number type) and the extra files; ``sample_inputs`` is checked with torch's
weights-only unpickler (which runs nothing) and then left out (the converter takes the input shape from
the graph). Anything that would be unpickled, a compiled library,
an unknown member, or a node target that is not a built-in ATen or prims operator (a custom op) is refused
in one line naming the member. Only that rebuilt archive reaches ``torch.export.load``. With
``trust_pickle`` the file goes to ``torch.export.load`` as it is.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import zipfile
from pathlib import Path

import torch

from neurodeploy.errors import ModelFormatError
from neurodeploy.safe_io import SafeZip, clip, open_zip_file, parse_json

#: deepest JSON nesting read from a program (graphs of nested modules are deep, but not this deep)
MAX_PROGRAM_DEPTH = 256
#: largest JSON member read (program, payload config)
MAX_JSON_BYTES = 256 << 20
#: node targets that are built-in operators (``deserialize_operator`` resolves them inside torch); of
#: ``operator`` only arithmetic, comparisons and getitem (``attrgetter``, ``methodcaller`` and ``call``
#: would let a graph reach any attribute of its tensors, and so any function, when it runs)
_BUILT_IN_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+|math\.[a-z0-9_]+|_operator\.("
                              r"getitem|add|sub|mul|truediv|floordiv|mod|pow|neg|pos|abs|eq|ne|lt|le|gt|ge|and_|or_|"
                              r"xor|not_|invert|lshift|rshift)")
#: torch.ScalarType numbers of torch/_export/serde/schema.py read as plain number tensors
_NUMBER_DTYPES = {1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64,
                  6: torch.float16, 7: torch.float32, 8: torch.float64, 12: torch.bool, 13: torch.bfloat16}
_MARKERS = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id")
_PICKLE_HINT = ("it would be unpickled, which runs code; refused. Pass --trust-pickle only if you trust whoever "
                "wrote the file")


def _fail(path: Path, message: str) -> ModelFormatError:
    return ModelFormatError(f"{path}: {message}")


def _root(names: list[str], path: Path) -> str:
    """The archive's top folder (``torch.export.save`` puts every member under ``<name>/``)."""
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise _fail(path, "not a torch.export archive (members are not all under one top folder)")
    return roots.pop() + "/"


def _int(value, where: str, path: Path) -> int:
    """An ``{"as_int": n}`` of the schema as a non-negative int."""
    if not isinstance(value, dict) or set(value) != {"as_int"} or not isinstance(value["as_int"], int) \
            or isinstance(value["as_int"], bool) or value["as_int"] < 0:
        raise _fail(path, f"{where}: {clip(value)} is not a fixed non-negative size")
    return value["as_int"]


def _check_payload(name: str, meta: dict, record_bytes: int, where: str, path: Path, zipped: SafeZip) -> None:
    """A raw tensor's declared dtype, sizes, strides and offset against its record's bytes."""
    tensor = meta.get("tensor_meta")
    if not isinstance(tensor, dict):
        raise _fail(path, f"{where} {clip(name)}: no tensor_meta")
    code = tensor.get("dtype")
    dtype = _NUMBER_DTYPES.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    if dtype is None:
        raise _fail(path, f"{where} {clip(name)}: dtype code {clip(tensor.get('dtype'))} is not a plain number type")
    sizes, strides = tensor.get("sizes"), tensor.get("strides")
    if not isinstance(sizes, list) or not isinstance(strides, list) or len(sizes) != len(strides) or len(sizes) > 16:
        raise _fail(path, f"{where} {clip(name)}: sizes and strides do not match")
    sizes = [_int(s, f"{where} {clip(name)} size", path) for s in sizes]
    strides = [_int(s, f"{where} {clip(name)} stride", path) for s in strides]
    offset = _int(tensor.get("storage_offset"), f"{where} {clip(name)} storage offset", path)
    numel = math.prod(sizes)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    zipped.budget.charge(numel * itemsize, f"{where} {clip(name)} ({numel:,} elements)")
    needed = 0 if numel == 0 else offset + 1 + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True))
    if needed * itemsize > record_bytes:
        raise _fail(path, f"{where} {clip(name)}: declares {needed:,} elements of {dtype}, its record holds "
                          f"{record_bytes:,} bytes")
    if record_bytes % itemsize:
        raise _fail(path, f"{where} {clip(name)}: {record_bytes:,} bytes is not a whole number of {dtype} elements")


def _payload_config(zipped: SafeZip, root: str, member: str, folder: str, what: str, path: Path,
                    members: set[str]) -> dict:
    """Reads and checks one payload config (weights or constants); returns it (raw tensors only)."""
    config = parse_json(zipped.read(root + member, MAX_JSON_BYTES), ModelFormatError, f"{path}: {member}")
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _fail(path, f"{member}: not a payload config")
    for name, meta in entries.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            raise _fail(path, f"{member}: entry {clip(name)} has no path_name")
        file = meta["path_name"]
        if meta.get("use_pickle") is not False:
            raise _fail(path, f"{what} {clip(name)} is stored as a pickle ({folder}{file}): {_PICKLE_HINT}")
        if not (file.startswith("weight_") if what == "weight" else file.startswith("tensor_")):
            kind = "an opaque or custom object" if what == "constant" else "not a raw tensor"
            raise _fail(path, f"{what} {clip(name)} is {kind} ({folder}{file}): {_PICKLE_HINT}")
        if "/" in file or root + folder + file not in members:
            raise _fail(path, f"{what} {clip(name)}: its record {clip(folder + file)} is not in the archive")
        _check_payload(name, meta, zipped.members[root + folder + file].file_size, what, path, zipped)
    return config


def _check_targets(node, path: Path) -> None:
    """Every graph node's target, at any nesting (subgraphs of higher-order ops included), is a built-in
    operator; a custom op or any other callable is refused."""
    stack = [node]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            target = value.get("target")
            if "inputs" in value and "outputs" in value and isinstance(target, str) \
                    and not _BUILT_IN_TARGET.fullmatch(target):
                raise _fail(path, f"the program calls {clip(target, 80)}, which is not a built-in ATen operator "
                                  "(a custom op or Python function is not converted); export the model with "
                                  "built-in torch layers only")
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _check_sample_inputs(zipped: SafeZip, member: str, path: Path) -> None:
    """The example inputs are a pickle: read with torch's weights-only unpickler (which refuses every
    global that is not a tensor type, so nothing runs); anything else in it is refused."""
    data = zipped.read(member, zipped.members[member].file_size)
    if not data:
        return
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # the unpickler raises many types for what it refuses
        raise _fail(path, f"member {clip(member.split('/', 1)[1])} holds objects other than tensors: {_PICKLE_HINT}"
                    ) from None


def sanitized_archive(path: str | Path) -> io.BytesIO:
    """The archive at ``path`` rebuilt in memory from its allow-listed members (see the module docstring);
    ModelFormatError in one line for anything that would run code or does not fit what it declares."""
    path = Path(path)
    zipped, _ = open_zip_file(path, ModelFormatError, "torch.export archive")
    with zipped:
        names = list(zipped.members)
        if any(n.rsplit("/", 1)[-1] == "serialized_exported_program.json" for n in names):
            raise _fail(path, "a torch.export archive in the pre-2.8 layout, whose tensors are pickles (unpickling "
                              "runs code); refused. Save it again with torch.export.save of this torch, or pass "
                              "--trust-pickle only if you trust whoever wrote the file")
        root = _root(names, path)
        members = set(names)
        inner = {name[len(root):] for name in names}
        models = sorted(n[len("models/"):-len(".json")] for n in inner if re.fullmatch(r"models/[^/]+\.json", n))
        if len(models) != 1:
            raise _fail(path, f"not a torch.export program archive ({len(models)} models/*.json members, one "
                              "expected)")
        model = models[0]
        wanted = {f"models/{model}.json", f"data/weights/{model}_weights_config.json",
                  f"data/constants/{model}_constants_config.json"}
        missing = sorted((wanted | {"archive_format", "archive_version"}) - inner)
        if missing:
            raise _fail(path, f"not a torch.export program archive (no {missing[0]})")
        weights = _payload_config(zipped, root, f"data/weights/{model}_weights_config.json", "data/weights/",
                                  "weight", path, members)
        constants = _payload_config(zipped, root, f"data/constants/{model}_constants_config.json",
                                    "data/constants/", "constant", path, members)
        records = {f"data/weights/{m['path_name']}" for m in weights["config"].values()} | \
                  {f"data/constants/{m['path_name']}" for m in constants["config"].values()}
        sample = f"data/sample_inputs/{model}.pt"
        for name in sorted(inner):
            if name in wanted or name in records or name in _MARKERS or name == sample \
                    or re.fullmatch(r"extra/[^/]+", name):
                continue
            if name.startswith("data/aotinductor/"):
                raise _fail(path, f"member {clip(name)} is compiled code (AOTInductor), which would be loaded into "
                                  "this process; refused (export with torch.export.save instead)")
            if name.endswith((".pt", ".pkl", ".pickle")) or "pickle" in name or name.startswith("data/"):
                raise _fail(path, f"member {clip(name)}: {_PICKLE_HINT}")
            raise _fail(path, f"member {clip(name)} is not part of a torch.export archive; refused")
        if zipped.read(root + "archive_format", 64) != b"pt2":
            raise _fail(path, "archive_format is not 'pt2'")
        program = parse_json(zipped.read(root + f"models/{model}.json", MAX_JSON_BYTES), ModelFormatError,
                             f"{path}: models/{model}.json", max_depth=MAX_PROGRAM_DEPTH)
        if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
            raise _fail(path, f"models/{model}.json: not an exported program")
        _check_targets(program["graph_module"], path)
        program["guards_code"] = []  # Python source compiled by ExportedProgram.module(); not needed here
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rebuilt:
            for name in sorted(inner):
                if name == f"models/{model}.json":
                    data = json.dumps(program).encode()
                elif name == sample:
                    _check_sample_inputs(zipped, root + sample, path)
                    data = b""  # the input shape is in the graph; the example inputs are not needed
                else:
                    data = zipped.read(root + name, MAX_JSON_BYTES if name.endswith(".json") else
                                       zipped.members[root + name].file_size)
                rebuilt.writestr(root + name, data)
            if sample not in inner:
                rebuilt.writestr(root + sample, b"")
    out.seek(0)
    return out


class _Captured(logging.Handler):
    """Keeps the records torch logs while loading (it logs a whole traceback, then raises a generic error)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), "")[:200]


def load_program(path: str | Path, trust_pickle: bool = False) -> torch.export.ExportedProgram:
    """The ``torch.export`` program in ``path``: from its sanitized archive (:func:`sanitized_archive`), or,
    with ``trust_pickle``, from the file as it is. Any failure is one line naming the file and the cause
    torch found (its logged traceback is kept out of the terminal)."""
    path = Path(path)
    source = str(path) if trust_pickle else sanitized_archive(path)
    captured = _Captured()
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export.serde.serialize",
                                                    "torch.export.pt2_archive._package")]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:  # torch's own handlers print the traceback it logs; only ours sees it meanwhile
        lg.handlers = [captured]
        lg.propagate = False
    try:
        return torch.export.load(source)
    except Exception as err:  # torch raises many types for corrupt or foreign archives
        cause = next((r.exc_info[1] for r in captured.records if r.exc_info and r.exc_info[1] is not None), err)
        raise ModelFormatError(f"{path}: not a readable torch.export program ({type(cause).__name__}: "
                               f"{_first_line(cause)})") from None
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved, strict=True):
            lg.handlers = handlers
            lg.propagate = propagate
