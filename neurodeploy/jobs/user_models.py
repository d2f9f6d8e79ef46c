"""Models a user brings, recognised by the file's content, not its name.

1. a ``torch.export`` program (``torch.export.save``, ``.pt2``): its archive is checked and rebuilt without
   any member that would be unpickled or run (:mod:`neurodeploy.convert.pt2_archive`; such members are
   refused unless ``trust_pickle``), then read with ``torch.export.load``; its ATen graph is rebuilt as
   ``nn`` modules (:mod:`neurodeploy.convert.exported`); the input shape is the export's example input;
2. a class and a state dict: ``--model-class my_models.py:Net`` (or ``package.module:Net``, with
   ``--model-kwargs`` as a JSON object) and ``--weights state.pt``, read with ``weights_only=True``;
3. the project's own model files (``neurodeploy train``);
4. a whole pickled module (``torch.save(model)``) only with ``trust_pickle``: unpickling runs code the
   file names. Without it the file is read with ``weights_only=True``, which refuses code, and the
   message names ``--trust-pickle``. TorchScript archives are refused with the one line that exports
   the model instead.

A model whose input shape is not known from its file is checked against the data (one forward pass of
two training items: it must accept the items and give one score per class) before any work.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from neurodeploy.data import Dataset, check_items
from neurodeploy.errors import ConfigError, DataError, ModelFormatError, NeurodeployError
from neurodeploy.jobs.models import CachedModel, file_fingerprint, file_model
from neurodeploy.safe_io import clip, parse_json, shorten

EXPORT_HINT = ("torch.export.save(torch.export.export(model.eval(), (example_batch,)), 'model.pt2') and pass "
               "--model model.pt2")


def model_kind(path: str | Path) -> str:
    """"export", "torchscript", "torch.save" (a zip archive of torch.save: a model file, a state dict or a
    pickled module) or "legacy" (anything else, e.g. torch.save's pre-1.6 format or not a torch file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "legacy"
    if any(n.endswith("/archive_format") or n.endswith("/models/model.json") or
           n.endswith("serialized_exported_program.json") for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    return "torch.save"


#: errors user code may raise that are reported, not propagated: any exception, sys.exit() and a
#: KeyboardInterrupt raised by the code itself
USER_CODE_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


def _cause(err: BaseException) -> str:
    """``Type: first line`` of an exception raised by user code (``SystemExit(3)``: ``sys.exit(3)``)."""
    if isinstance(err, SystemExit):
        return f"it called sys.exit({clip(err.code, 40)})"
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {shorten(text) if text else ''}".rstrip(": ")


def parse_kwargs(text: str | None) -> dict:
    """``--model-kwargs`` JSON text -> dict (ConfigError naming the flag otherwise; the text is echoed
    shortened, its nesting bounded)."""
    if not text:
        return {}
    value = parse_json(text.encode("utf-8", "surrogateescape"), ConfigError, f"--model-kwargs {clip(text, 60)}")
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs {clip(text, 60)}: a JSON object of keyword arguments, e.g. "
                          "'{\"hidden\": 64}'")
    return value


def check_class_spec(spec: str) -> tuple[str, str]:
    """``file.py:Name`` or ``package.module:Name`` -> (module part, class name)."""
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name.isidentifier():
        raise ConfigError(f"--model-class {spec!r}: write FILE.py:Class or package.module:Class")
    if module.endswith(".py") and not Path(module).is_file():
        raise ConfigError(f"--model-class {spec!r}: no such file {module}")
    return module, name


def import_class(spec: str) -> type:
    """The class named by ``spec`` (importing the file or module runs its code, as ``import`` does)."""
    module_part, name = check_class_spec(spec)
    try:
        if module_part.endswith(".py"):
            path = Path(module_part).resolve()
            if str(path.parent) not in sys.path:
                sys.path.insert(0, str(path.parent))
            loaded = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loaded)
            sys.modules[path.stem] = module  # so pickles and dataclasses that name it find it
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
    except USER_CODE_ERRORS as err:  # the user's code may raise anything, exit included
        raise ConfigError(f"--model-class {spec}: importing {module_part} failed ({_cause(err)})") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ConfigError(f"--model-class {spec}: {module_part} has no torch.nn.Module subclass {name!r}")
    return cls


def _weights_only(path: Path):
    from neurodeploy.train.checkpoint import _torch_load

    return _torch_load(path)


def _state_dict(path: Path) -> dict:
    raw = _weights_only(path)
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelFormatError(f"--weights {path}: not a state dict (torch.save(model.state_dict(), '{path.name}'))")
    return raw


def _state_dict_problem(err: RuntimeError) -> str:
    """torch's load_state_dict message ("Error(s) in loading state_dict for Net:" then one indented line per
    problem) as one line: the missing and unexpected keys and the size mismatches, shortened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    problems = [line for line in lines if not line.startswith("Error(s) in loading state_dict")] or lines[:1]
    return shorten(" ".join(problems), 400)


def class_model(spec: str, kwargs_text: str | None, weights: str) -> tuple[nn.Module, dict]:
    cls = import_class(spec)
    kwargs = parse_kwargs(kwargs_text)
    state = _state_dict(Path(weights))
    try:
        model = cls(**kwargs)
    except USER_CODE_ERRORS as err:
        raise ConfigError(f"--model-class {spec}: {cls.__name__}(**{clip(kwargs, 80)}) failed ({_cause(err)})"
                          ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model-class {spec}: {cls.__name__}(...) returned a {type(model).__name__}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFormatError(f"--weights {weights}: does not fit {cls.__name__}: {_state_dict_problem(err)}"
                               ) from None
    except USER_CODE_ERRORS as err:
        raise ConfigError(f"--model-class {spec}: {cls.__name__}.load_state_dict failed ({_cause(err)})") from None
    key = {"kind": "class", "class": spec.rpartition(":")[2], "kwargs": kwargs,
           "weights_sha256": file_fingerprint(weights)}
    if spec.rpartition(":")[0].endswith(".py"):
        key["source_sha256"] = file_fingerprint(spec.rpartition(":")[0])
    return model.eval(), key


@contextlib.contextmanager
def _importable(*folders: Path):
    added = [str(f.resolve()) for f in folders if str(f.resolve()) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            sys.path.remove(folder)


def pickled_module(path: Path, trust_pickle: bool) -> nn.Module:
    """A whole module saved with ``torch.save(model)``: unpickled only when trusted (it runs code)."""
    if not trust_pickle:
        try:
            raw = _weights_only(path)
        except ModelFormatError as err:
            if "refusing to load code" in str(err):
                raise ModelFormatError(f"{path}: a pickled Python object, which runs code when loaded; refused. Pass "
                                       "--trust-pickle only if you trust whoever wrote the file, or save it as "
                                       f"{EXPORT_HINT}") from None
            raise
        raise ModelFormatError(f"{path}: holds a {type(raw).__name__}, not a model (a state dict needs "
                               "--model-class FILE.py:Class --weights FILE)")
    with _importable(Path.cwd(), path.parent):
        try:
            model = torch.load(path, map_location="cpu", weights_only=False)  # trusted: runs the file's code
        except USER_CODE_ERRORS as err:
            raise ModelFormatError(f"{path}: unpickling failed ({_cause(err)})") from None
    if not isinstance(model, nn.Module):
        raise ModelFormatError(f"{path}: the pickle holds a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def _check_on_data(model: nn.Module, dataset: Dataset, label: str) -> int:
    """Runs two training items through ``model``; returns the class count (outputs) or raises DataError."""
    items = dataset.train.images[:2]
    try:
        with torch.no_grad():
            out = model(items)
    except USER_CODE_ERRORS as err:
        raise DataError(f"{label} does not take {dataset.name}'s items of shape {list(items.shape[1:])} "
                        f"({_cause(err)})") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != items.shape[0]:
        raise DataError(f"{label} returns {list(getattr(out, 'shape', []))} for a batch of {items.shape[0]} items; "
                        "a classifier returns [batch, classes]")
    n_classes = int(out.shape[1])
    check_items(dataset, tuple(items.shape[1:]), n_classes)
    return n_classes


def exported_model(path: Path, trust_pickle: bool, dataset: Dataset) -> CachedModel:
    """A ``torch.export`` program (:mod:`neurodeploy.convert.pt2_archive`) rebuilt as a module, its input
    shape and classes checked against ``dataset`` and two items run through it (a program whose graph
    does not compute what its shapes declare is refused here, in one line)."""
    from neurodeploy.convert.exported import example_input_shape, module_from_exported
    from neurodeploy.convert.pt2_archive import load_program

    program = load_program(path, trust_pickle)
    try:
        shape = example_input_shape(program)
    except NeurodeployError as err:
        raise ModelFormatError(f"{path}: {err}") from None
    model = module_from_exported(program)
    outputs = [n for n in program.graph.nodes if n.op == "output"][0].args[0]
    out = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    n_classes = int(out.meta["val"].shape[-1]) if hasattr(out, "meta") and "val" in out.meta else None
    check_items(dataset, shape, n_classes)
    label = f"exported program {path}"
    _check_on_data(model, dataset, label)
    key = {"kind": "export", "sha256": file_fingerprint(path)}
    info = {"arch": "export", "input_shape": list(shape), "n_classes": n_classes or dataset.n_classes}
    return CachedModel(model, info, label, key, str(path), "file")


def user_model(settings, dataset: Dataset) -> CachedModel:
    """The model of ``settings`` (``ModelSettings``), checked against ``dataset`` before any work."""
    if settings.model_class:
        model, key = class_model(settings.model_class, settings.model_kwargs, settings.weights)
        label = f"{settings.model_class} with {settings.weights}"
        path = settings.weights
    else:
        path = Path(settings.model)
        kind = model_kind(path)
        if kind == "torchscript":
            raise ModelFormatError(f"{path}: a TorchScript archive, which is refused (loading it runs its code); "
                                   f"export the model instead: {EXPORT_HINT}")
        if kind == "export":
            return exported_model(path, settings.trust_pickle, dataset)
        if kind == "torch.save":
            raw = None
            with contextlib.suppress(ModelFormatError):
                raw = _weights_only(path)
            if isinstance(raw, dict) and raw.get("format") == "neurodeploy-model":
                model = file_model(path)
                check_items(dataset, tuple(model.info["input_shape"]), int(model.info["n_classes"]))
                return model
        model = pickled_module(path, settings.trust_pickle)
        key = {"kind": "pickle", "sha256": file_fingerprint(path)}
        label = f"pickled {type(model).__name__} from {path}"
    n_classes = _check_on_data(model, dataset, label)
    info = {"arch": key["kind"], "input_shape": list(dataset.input_shape), "n_classes": n_classes}
    return CachedModel(model, info, label, key, str(path), "file")
