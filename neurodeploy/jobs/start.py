"""What ``run`` and ``compare`` do in their claimed run folder before they simulate: check the settings
against the data, check the user's model, make the folder, give each backend its folder, convert, check the
memory with the real network, and record the network and the resolved settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neurodeploy.backends import Backend
from neurodeploy.data import Dataset, load_dataset
from neurodeploy.ir import save_network
from neurodeploy.jobs.config import JobConfig
from neurodeploy.jobs.events import Listener
from neurodeploy.jobs.folders import RunClaim, prepare_folder, record_in_config, record_network
from neurodeploy.jobs.memory import check_memory, check_settings
from neurodeploy.jobs.prepare import PreparedNetwork, import_record, preflight, prepare_network
from neurodeploy.jobs.record import check_items, check_recording


@dataclass
class StartedRun:
    """The run folder and the data; ``finished``: the summary of a run that finished before in this folder
    (then nothing else was done and ``prepared`` is None), else the prepared network."""

    folder: Path
    dataset: Dataset
    prepared: PreparedNetwork | None = None
    finished: dict | None = None


def prepare_run(claim: RunClaim, config: JobConfig, backends: list[Backend], emit: Listener, resolved: dict,
                subfolders: list[str] | None = None, resumable: bool = True) -> StartedRun:
    """Everything before the first simulation, in ``claim``'s folder: the settings against the data
    (memory, ``--record`` items) and the user's model before anything is written, the folder, a finished run
    reported (``resumable``: a folder whose summary.json exists is finished), each backend's folder (the run
    folder, or ``subfolders[i]`` in it), the conversion, the spike recordings (populations, memory) and the memory with
    the converted network, then network.json / network.zip and config.json with ``resolved`` (its entries: the
    backends' options as resolved) and the models used."""
    dataset = load_dataset(config.model.data)
    n_items = len(dataset.test.head(config.run.samples))
    check_settings(config, n_items, dataset.n_classes)
    check_items(config.run.record_requests, n_items)
    user = preflight(config, dataset)  # the user's model against the data, before anything is written
    # the claimed folder: a time-stamped name made again a second later would be another folder
    folder = prepare_folder(config, dataset.content_hash(), claim.folder)
    if resumable:
        finished = claim.finished()
        if finished is not None:
            return StartedRun(folder, dataset, finished=finished)
    for i, backend in enumerate(backends):
        backend.use_folder(folder if subfolders is None else folder / subfolders[i])
    prepared = prepare_network(config, dataset, backends, folder, emit, user)
    network = prepared.network
    claim.check()
    check_recording(config.run.record_requests, network, config.run.encoding, len(prepared.test), config.run.T,
                    config.run.memory_budget)
    check_memory(config, network, len(prepared.test))
    record_network(folder, network)
    record_in_config(folder, models=prepared.models, **resolved, **import_record(network))
    save_network(network, folder / "network.zip")
    return StartedRun(folder, dataset, prepared)
