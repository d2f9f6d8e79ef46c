"""Run folders: ``<results_dir>/<run_id>/``, claimed by the settings that made them, so that running
again with the same id resumes that run and running with other settings is refused."""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

from neurodeploy.errors import ConfigError
from neurodeploy.evaluate.summary import write_json
from neurodeploy.jobs.config import JobConfig

#: settings that do not change what a run computes
_NOT_FINGERPRINTED = ("results_dir", "run_id")


def run_folder(config: JobConfig) -> Path:
    run_id = config.run_id or datetime.datetime.now().strftime(f"%Y%m%d-%H%M%S-{config.backend}")
    return Path(config.results_dir) / run_id


def fingerprint(config: JobConfig) -> str:
    values = {k: v for k, v in config.as_dict().items() if k not in _NOT_FINGERPRINTED}
    values["run"].pop("progress")
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


def prepare_folder(config: JobConfig) -> Path:
    """Creates the run folder and writes ``config.json`` (resolved settings, fingerprint, versions);
    raises ConfigError when the folder holds a run with other settings."""
    folder = run_folder(config)
    path = folder / "config.json"
    stamp = fingerprint(config)
    if path.exists():
        try:
            previous = json.loads(path.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous != stamp:
            raise ConfigError(f"{folder} holds a run with other settings; choose another --run-id")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, {"fingerprint": stamp, **config.as_dict(), "versions": versions()})
    return folder


def record_in_config(folder: Path, **entries) -> None:
    """Adds entries (the models used, the backend as resolved) to the run's ``config.json``."""
    path = folder / "config.json"
    write_json(path, {**json.loads(path.read_text()), **entries})
