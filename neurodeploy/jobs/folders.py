"""Run folders: ``<results_dir>/<run_id>/``, claimed by what made them, so that running again with the
same id resumes that run and running with anything else is refused.

A run is keyed by content: its fingerprint covers the settings (but the results folder, the run id
and the progress bar), the sha256 of the model file, of a ``--model-class`` file and its state dict when
given, and the content hash of the dataset (both splits, :meth:`neurodeploy.data.Dataset.content_hash`).
The network actually simulated is hashed too (:func:`network_hash`, recorded in ``config.json`` before
the first batch): a resume whose model came out different (a class file edited, another model trained
into another cache folder) is refused. Swapping anything between an interrupted run and its resume is
refused in one line naming what changed, so no result ever mixes two models or two datasets.

A run holds its folder (:class:`RunClaim`): an ``fcntl`` lock on ``<folder>/.lock``, which records the
holder's pid and start time, so a second run with the same id is refused in one line naming them. A run
whose folder is removed or replaced while it runs stops with an error instead of writing into a new one.
A refused new run removes what it created, so the corrected command is accepted under the same id; a
finished run (``summary.json`` is written last) is not run again: running it again reports its results
and writes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from neurodeploy.errors import ConfigError, NeurodeployError, WriteError
from neurodeploy.evaluate.summary import write_json
from neurodeploy.jobs.config import JobConfig
from neurodeploy.safe_io import os_reason, parse_json, read_file

__all__ = ["RunClaim", "claim_run", "fingerprint", "network_hash", "prepare_folder",
           "record_in_config", "run_folder", "run_inputs", "versions", "write_json"]

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
    class_file = (config.model.model_class or "").rpartition(":")[0]
    for flag, given in (("weights", config.model.weights), ("network", config.model.network),
                        ("model_class", class_file if class_file.endswith(".py") else None)):
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
    if before.get("model_class_sha256") and before.get("model_class_sha256") != inputs.get("model_class_sha256"):
        return (f"{folder} holds a run of another model: the code of --model-class {config.model.model_class} changed "
                "since it started; resuming would mix two models in one result, choose another --run-id")
    if before.get("data_sha256") and before.get("data_sha256") != inputs["data_sha256"]:
        return (f"{folder} holds a run on other data: the dataset's content changed since it started; choose another "
                "--run-id")
    return f"{folder} holds a run with other settings; choose another --run-id"


def prepare_folder(config: JobConfig, data_hash: str, folder: Path | None = None) -> Path:
    """Creates the run folder and writes ``config.json`` (resolved settings, inputs, fingerprint,
    versions); ``data_hash`` is the dataset's content hash (``Dataset.content_hash()``); ``folder``: the
    folder a :class:`RunClaim` holds (None: :func:`run_folder`, whose time-stamped name is made anew). Raises
    ConfigError when the folder holds a run of other settings, another model file's content or other
    data (naming which), or a config.json that cannot be read."""
    folder = run_folder(config) if folder is None else folder
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
        return folder  # the same run: its config.json (with what was recorded into it) stays as it is
    _make_folder(folder, config)
    write_json(path, {"fingerprint": stamp, **config.as_dict(), "inputs": inputs, "versions": versions()})
    return folder


def network_hash(network) -> str:
    """sha256 of what a network computes: its populations, projections and every array (the metadata,
    which records timings and provenance, is left out)."""
    from neurodeploy.ir.io import _to_parts

    structure, arrays = _to_parts(network)
    digest = hashlib.sha256(json.dumps({k: structure[k] for k in ("populations", "projections")}, sort_keys=True,
                                       default=str).encode())
    for key in sorted(arrays):
        array = arrays[key]
        digest.update(f"{key}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def record_network(folder: Path, network) -> None:
    """Records the simulated network's :func:`network_hash` in ``config.json``; refuses (one line) a resume
    whose network differs from the one the run started with."""
    stamp = network_hash(network)
    previous = _read_config(folder / "config.json").get("network_sha256")
    if previous is not None and previous != stamp:
        raise ConfigError(f"{folder} holds a run of another model: the network converted now differs from the one "
                          f"the run started with (sha256 {str(previous)[:12]}... then, {stamp[:12]}... now: the model "
                          "class, the trained model or the cache changed); resuming would mix two models, choose "
                          "another --run-id")
    if previous is None:
        record_in_config(folder, network_sha256=stamp)


def _name_limit(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return os.pathconf(probe if probe.is_dir() else probe.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _make_folder(folder: Path, config: JobConfig) -> None:
    """Creates the run folder (and the results folder), one line for whatever stands in the way."""
    results = Path(config.results_dir)
    if len(folder.name) > _name_limit(folder.parent):
        raise ConfigError(f"--run-id: {len(folder.name)} characters, more than the {_name_limit(folder.parent)} a "
                          "folder name may have on this filesystem")
    for path, what in ((results, f"--results-dir {results}"), (folder, f"the run folder {folder}")):
        if (path.exists() or path.is_symlink()) and not path.is_dir():
            raise WriteError(f"{what}: is a file or device, not a folder; choose another "
                             f"{'--results-dir' if path == results else '--run-id'}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in [*reversed(folder.parents), folder] if p.exists() and not p.is_dir()), None)
        where = f"{blocker} is a file, not a folder" if blocker else os_reason(err)
        raise WriteError(f"--results-dir {results}: cannot create the run folder {folder} ({where})") from None


class RunClaim:
    """A run folder held by this process: created if needed and locked (``fcntl.flock`` on ``.lock``, which
    names the holder). ``created``: the folder did not exist before; ``new_config``: this run wrote its
    ``config.json`` (a new run, not a resume)."""

    LOCK = ".lock"

    def __init__(self, config: JobConfig):
        self.folder = run_folder(config)
        self.created = not self.folder.exists()
        #: folders above the run folder that this claim creates (removed again, when empty, after a refusal)
        self.parents = [p for p in self.folder.parents if not p.exists()]
        _make_folder(self.folder, config)
        path = self.folder / self.LOCK
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise WriteError(f"{self.folder}: cannot be written ({os_reason(err)})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(self.fd, 512).decode("utf-8", "replace").strip() or "another process"
            os.close(self.fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ConfigError(f"{self.folder} is in use by another run ({holder}); wait for it to finish or "
                                  "choose another --run-id") from None
            raise WriteError(f"{self.folder}: cannot be locked ({os_reason(err)})") from None
        self.inode = os.fstat(self.fd).st_ino
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        with contextlib.suppress(OSError):  # who holds it is information, not a condition of holding it
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"pid {os.getpid()}, started {started}".encode(), 0)
        self.new_config = not (self.folder / "config.json").exists()

    def check(self) -> None:
        """Raises WriteError when the folder was removed or replaced since it was claimed."""
        try:
            same = os.fstat(self.fd).st_nlink > 0 and os.stat(self.folder / self.LOCK).st_ino == self.inode
        except OSError:
            same = False
        if not same:
            raise WriteError(f"the run folder {self.folder} was removed or replaced while the run was running; its "
                             "results were not written (run again)")

    def finished(self) -> dict | None:
        """The summary of a finished run in this folder (summary.json is written last), else None."""
        path = self.folder / "summary.json"
        if self.new_config or not path.is_file():
            return None
        return parse_json(read_file(path, _MAX_CONFIG_BYTES, ConfigError, "summary.json"), ConfigError, str(path))

    def release(self, refused: bool) -> None:
        """Unlocks; after a refused new run, removes what it created (nothing when batches were finished)."""
        try:
            if refused and self.new_config and not any((self.folder / "partial").glob("batch_*.npz")):
                if self.created:
                    shutil.rmtree(self.folder, ignore_errors=True)
                    for parent in self.parents:  # nearest first; rmdir leaves a folder that holds anything
                        with contextlib.suppress(OSError):
                            parent.rmdir()
                else:
                    with contextlib.suppress(OSError):
                        (self.folder / "config.json").unlink()
        finally:
            os.close(self.fd)


@contextlib.contextmanager
def claim_run(config: JobConfig) -> Iterator[RunClaim]:
    """Holds the run folder of ``config`` for the block (:class:`RunClaim`)."""
    claim = RunClaim(config)
    try:
        yield claim
    except NeurodeployError:
        claim.release(refused=True)
        raise
    except BaseException:
        claim.release(refused=False)
        raise
    else:
        claim.release(refused=False)


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
