"""Run folders: ``<results_dir>/<run_id>/``, claimed by what made them, so that running again with the
same id resumes that run and running with anything else is refused.

A run is keyed by content: its fingerprint covers the settings (but the results folder, the run id
and the progress bar), the sha256 of the model file when one is given, and the content hash of the
dataset (both splits, :meth:`neurodeploy.data.Dataset.content_hash`). Swapping the model file or the
data between an interrupted run and its resume is refused in one line naming what changed, so no
result ever mixes two models or two datasets.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

from neurodeploy.errors import ConfigError, NeurodeployError
from neurodeploy.evaluate.summary import write_json
from neurodeploy.jobs.config import JobConfig
from neurodeploy.safe_io import parse_json, read_file

__all__ = ["fingerprint", "prepare_folder", "record_in_config", "run_folder", "run_inputs", "versions", "write_json"]

#: settings that do not change what a run computes
_NOT_FINGERPRINTED = ("results_dir", "run_id", "cache_dir")
#: largest config.json read back
_MAX_CONFIG_BYTES = 16 << 20


def run_folder(config: JobConfig) -> Path:
    run_id = config.run_id or datetime.datetime.now().strftime(f"%Y%m%d-%H%M%S-{config.backend}")
    return Path(config.results_dir) / run_id


def run_inputs(config: JobConfig, data_hash: str) -> dict[str, str | None]:
    """The content a run depends on besides its settings: the model file's sha256 (None when the model
    is trained here) and the dataset's content hash."""
    model_hash = None
    if config.model.model:
        from neurodeploy.jobs.models import file_fingerprint

        try:
            model_hash = file_fingerprint(config.model.model)
        except OSError as err:
            raise ConfigError(f"--model {config.model.model}: cannot be read ({err.strerror or err})") from None
    inputs = {"model_sha256": model_hash, "data_sha256": data_hash}
    for flag, given in (("weights", config.model.weights), ("network", config.model.network)):
        if given and Path(given).is_file():  # a class's state_dict, a converted network
            from neurodeploy.jobs.models import file_fingerprint

            inputs[f"{flag}_sha256"] = file_fingerprint(given)
    return inputs


def fingerprint(config: JobConfig, inputs: dict | None = None) -> str:
    """Hash of the settings that change what a run computes and of ``inputs`` (:func:`run_inputs`)."""
    values = {k: v for k, v in config.as_dict().items() if k not in _NOT_FINGERPRINTED}
    values["run"].pop("progress")
    values["inputs"] = inputs or {}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str | None]:
    """Versions of what changes the numbers: Python, PyTorch, numpy and the simulators (None: absent)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("neurodeploy", "torch", "numpy", "pyNN", "NEURON", "sPyNNaker"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _read_config(path: Path) -> dict:
    data = read_file(path, _MAX_CONFIG_BYTES, ConfigError, "run's config.json")
    config = parse_json(data, ConfigError, str(path))
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return config


def _difference(folder: Path, config: JobConfig, previous: dict, inputs: dict) -> str:
    """What makes the run in ``folder`` another run than this one, in words."""
    before = previous.get("inputs") if isinstance(previous.get("inputs"), dict) else {}
    if before.get("model_sha256") != inputs["model_sha256"] and before.get("model_sha256") and inputs["model_sha256"]:
        return (f"{folder} holds a run of another model: the content of --model {config.model.model} changed since "
                f"it started (sha256 {before['model_sha256'][:12]}... then, {inputs['model_sha256'][:12]}... now); "
                "resuming would mix two models in one result, choose another --run-id")
    if before.get("data_sha256") and before.get("data_sha256") != inputs["data_sha256"]:
        return (f"{folder} holds a run on other data: the dataset's content changed since it started; choose another "
                "--run-id")
    return f"{folder} holds a run with other settings; choose another --run-id"


def prepare_folder(config: JobConfig, data_hash: str) -> Path:
    """Creates the run folder and writes ``config.json`` (resolved settings, inputs, fingerprint,
    versions); ``data_hash`` is the dataset's content hash (``Dataset.content_hash()``). Raises
    ConfigError when the folder holds a run of other settings, another model file's content or other
    data (naming which), or a config.json that cannot be read."""
    folder = run_folder(config)
    path = folder / "config.json"
    inputs = run_inputs(config, data_hash)
    stamp = fingerprint(config, inputs)
    if path.exists() or path.is_symlink():
        try:
            previous = _read_config(path)
        except NeurodeployError as err:
            raise ConfigError(f"{folder} holds a run whose config.json cannot be read ({err}); choose another "
                              "--run-id") from None
        if previous.get("fingerprint") != stamp:
            raise ConfigError(_difference(folder, config, previous, inputs))
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, {"fingerprint": stamp, **config.as_dict(), "inputs": inputs, "versions": versions()})
    return folder


def record_in_config(folder: Path, **entries) -> None:
    """Adds entries (the models used, the backend as resolved) to the run's ``config.json``. A model
    file recorded with another sha256 than the run was claimed with (it changed while the run was being
    prepared) is refused."""
    path = folder / "config.json"
    config = _read_config(path)
    claimed = (config.get("inputs") or {}).get("model_sha256")
    for model in entries.get("models") or []:
        key = model.get("key") if isinstance(model, dict) else None
        if claimed and isinstance(key, dict) and key.get("kind") == "file" and key.get("sha256") != claimed:
            raise ConfigError(f"{model.get('path')}: the model file changed while the run in {folder} was being "
                              "prepared; run again")
    write_json(path, {**config, **entries})
