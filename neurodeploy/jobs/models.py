"""The model a job converts: loaded from a file, or trained here, and every derived model (quantized,
sparsity fine-tuned, pooled by the fan-in pass), each cached under a key of what determines it.

A cache key is a JSON object of everything the model depends on: the data's content (a hash of the
training split's arrays, not the folder's name), the architecture or the source model file's hash,
every training setting, the seed, the PyTorch version (numerics) and, for derived models, the key of
the model they start from. The file name carries a hash of the key, and the file records the key
itself: a file whose recorded key differs from the one asked for is never handed back; the model is
made again (and the reason is reported).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from neurodeploy.data import Dataset
from neurodeploy.errors import ModelFormatError
from neurodeploy.jobs.events import Event, Listener
from neurodeploy.train import TrainConfig, build, load_model, save_model, train_model

#: environment variable naming the model cache folder (``--cache-dir`` overrides it)
CACHE_ENV = "NEURODEPLOY_CACHE"


def cache_folder(given: str | Path | None = None) -> Path:
    """The model cache shared by every run folder: ``given`` (``--cache-dir``), else ``$NEURODEPLOY_CACHE``,
    else the platform's user cache folder (``platformdirs.user_cache_dir("neurodeploy")``)."""
    import os

    if given:
        return Path(given)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("neurodeploy")) / "models"


def data_fingerprint(dataset: Dataset) -> str:
    """What training sees: the hash of the training split's content and the class count."""
    return dataset.content_hash(("train",))


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CachedModel:
    """A model with where it came from: ``label`` for people, ``key`` (the cache key: what it depends
    on), ``path`` (its file) and ``origin`` ("file", "cached" or "made")."""

    model: nn.Module
    info: dict
    label: str
    key: dict
    path: str
    origin: str

    def record(self) -> dict:
        """What the run's config.json records of this model."""
        return {"label": self.label, "path": self.path, "origin": self.origin, "key_hash": key_hash(self.key),
                "key": self.key}


class ModelCache:
    """Model files under ``folder``, named ``<name>-<hash of the key>.pt``."""

    def __init__(self, folder: str | Path, emit: Listener):
        self.folder = Path(folder)
        self.emit = emit
        self._said = False

    def path(self, name: str, key: dict) -> Path:
        return self.folder / f"{name}-{key_hash(key)}.pt"

    def get(self, name: str, key: dict, label: str,
            make: Callable[[], tuple[nn.Module, dict, dict]]) -> CachedModel:
        """The cached model of ``key``, or ``make()`` -> (model, save_model keyword arguments without
        the record, training record) saved under it."""
        path = self.path(name, key)
        if not self._said:
            self._said = True
            self.emit(Event("stage", f"model cache: {self.folder} (--cache-dir or {CACHE_ENV} to move it)"))
        if path.exists():
            reason = None
            try:
                model, info = load_model(path)
            except ModelFormatError as err:
                reason = f"unreadable ({err})"
            else:
                if info.get("record", {}).get("cache_key") != key:
                    reason = "it was made from other inputs than this job's"
            if reason is None:
                return CachedModel(model, info, f"{label} (cached {path})", key, str(path), "cached")
            self.emit(Event("stage", f"not using the cached {path}: {reason}; making it again"))
        model, save_args, record = make()
        record = {**record, "cache_key": key}
        save_model(path, model, record=record, **save_args)
        info = {**save_args, "record": record}
        return CachedModel(model, info, f"{label} (saved to {path})", key, str(path), "made")


def trained_model(cache: ModelCache, dataset: Dataset, arch: str, epochs: int, seed: int,
                  progress: bool) -> CachedModel:
    """The zoo architecture ``arch`` trained on ``dataset`` (or its cached copy)."""
    settings = TrainConfig(epochs=epochs, seed=seed)
    key = {"kind": "trained", "arch": arch, "data": data_fingerprint(dataset), "train": asdict(settings),
           "input_shape": list(dataset.input_shape), "n_classes": dataset.n_classes, "torch": str(torch.__version__)}

    def make():
        cache.emit(Event("stage", f"training {arch} on {dataset.name} for {epochs} epochs (cached afterwards)"))
        model = build(arch, dataset.input_shape, dataset.n_classes, seed=seed)
        record = train_model(model, dataset.train, settings, progress=progress)
        return model, {"arch": arch, "input_shape": dataset.input_shape, "n_classes": dataset.n_classes}, record

    return cache.get(arch, key, arch, make)


def file_model(path: str | Path) -> CachedModel:
    """A model file given by the user, keyed by its content."""
    model, info = load_model(path)
    key = {"kind": "file", "sha256": file_fingerprint(path)}
    return CachedModel(model, info, f"{info['arch']} from {path}", key, str(path), "file")


def derived_model(cache: ModelCache, parent: CachedModel, dataset: Dataset, what: str, description: str,
                  settings: dict, make: Callable[[], tuple[nn.Module, dict, dict]]) -> CachedModel:
    """A model made from ``parent`` by ``make`` (fine-tuning, pooling) under ``settings``; cached with
    the parent's key, the data and the settings. ``what`` tags the file name, ``description`` the label."""
    name, key = derived_key(parent, dataset, what, settings)
    return cache.get(name, key, f"{parent.label.split(' (')[0]}, {description}", make)


def derived_key(parent: CachedModel, dataset: Dataset, what: str, settings: dict) -> tuple[str, dict]:
    """The cache name and key of :func:`derived_model` (``ModelCache.path(name, key)`` is its file)."""
    key = {"kind": what, "parent": parent.key, "data": data_fingerprint(dataset), "settings": settings,
           "torch": str(torch.__version__)}
    return f"{parent.info['arch']}-{what}", key
