"""``--record POP[:ITEMS]``: every spike of chosen populations for chosen test items, written as Neo.

A request names a population as ``neurodeploy info network.zip`` lists it and, optionally, items: indices among
the run's test items (``0-9``, ``3,5``, ``0-4,8``; none: every item of the run). ``--record`` is repeatable and takes a
comma list; digits after ``POP:`` continue that request's items, so ``--record relu_1:0-9,relu_3:3,5`` asks
for items 0-9 of relu_1 and 3 and 5 of relu_3 (a population whose name is a number takes its own
``--record``). The syntax and the item ranges are checked before any work; the names once the network is
converted (they exist from then on), before any simulation.

After the main run, the backend that produced its data simulates the requested items again with
:attr:`~neurodeploy.backends.RunOptions.record_spikes` and the spikes go to ``spikes.mat`` in the run folder
(:mod:`neurodeploy.evaluate.spike_trains`). On a backend that builds the network per run (NEURON, sPyNNaker)
that is a second build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from neurodeploy.backends import Backend, RunOptions
from neurodeploy.backends.base import recorded_populations
from neurodeploy.data import Split
from neurodeploy.errors import ConfigError
from neurodeploy.ir import Network
from neurodeploy.jobs.events import Event, Listener
from neurodeploy.jobs.memory import check_estimate

#: the file the recording is written to, in the run folder
SPIKES_FILE = "spikes.mat"
#: no run has this many test items: a larger index is a typing mistake, refused before its range is made
MAX_ITEM = 10**8
_ITEMS = re.compile(r"\d+(-\d+)?")


@dataclass(frozen=True)
class RecordRequest:
    """One population and its items (indices among the run's test items; None: all of them)."""

    population: str
    items: tuple[int, ...] | None = None

    def item_list(self, n_items: int) -> list[int]:
        return list(range(n_items)) if self.items is None else list(self.items)


def _item_range(spec: str, token: str) -> list[int]:
    first, _, last = token.partition("-")
    low, high = int(first), int(last or first)
    if high >= MAX_ITEM:
        raise ConfigError(f"--record {spec}: item {high} is beyond any run's items")
    if high < low:
        raise ConfigError(f"--record {spec}: the range {token} runs backwards; write {high}-{low}")
    return list(range(low, high + 1))


def parse_record(specs: tuple[str, ...] | list[str]) -> list[RecordRequest]:
    """The requests of every ``--record`` value (see the module docstring), one per population (items of a
    population named twice are joined); raises ConfigError naming the value for a bad one."""
    requests: dict[str, list[int] | None] = {}

    def add(name: str, chosen: list[int] | None) -> None:
        known = requests.get(name, [])
        requests[name] = None if known is None or chosen is None else sorted(set(known) | set(chosen))

    for spec in specs:
        current: str | None = None  # the population whose items the next bare range continues
        for token in (t.strip() for t in spec.split(",")):
            if current is not None and _ITEMS.fullmatch(token):
                add(current, _item_range(spec, token))
                continue
            name, colon, items = token.partition(":")
            if not name:
                raise ConfigError(f"--record {spec!r}: a population name is missing (write POP or POP:ITEMS, e.g. "
                                  "relu_1:0-9)")
            if colon and not _ITEMS.fullmatch(items):
                raise ConfigError(f"--record {spec!r}: {items!r} are not items (write e.g. {name}:0-9 or {name}:3,5)")
            add(name, _item_range(spec, items) if colon else None)
            current = name if colon else None
    return [RecordRequest(name, None if items is None else tuple(items)) for name, items in requests.items()]


def check_installed() -> None:
    """Raises ConfigError with the install command where Neo, which the recording is written with, is missing."""
    from importlib.util import find_spec

    if find_spec("neo") is None:
        raise ConfigError('--record writes Neo files and needs neo, which is not installed: pip install -c '
                          'constraints-cpu.txt -e ".[record]" (from the repository root)')


def check_items(requests: list[RecordRequest], n_items: int) -> None:
    """Raises ConfigError for an item beyond the run's ``n_items`` test items (before any work)."""
    for request in requests:
        beyond = [i for i in request.items or () if i >= n_items]
        if beyond:
            raise ConfigError(f"--record {request.population}:{beyond[0]}: the run simulates {n_items} test items "
                              f"(0-{n_items - 1}); choose items among them or raise --samples")


def check_recording(requests: list[RecordRequest], network: Network, encoding: str, n_items: int, T: int,
                    memory_budget: float | None) -> list[dict]:
    """(name, role, size) of each requested population, once the network is converted and before any simulation;
    raises ConfigError, naming ``--record`` and the nearest name, for a population the network does not have or
    one without spikes, and for a recording above the memory budget (one byte per neuron, item and step)."""
    try:
        populations = recorded_populations(network, tuple(r.population for r in requests), encoding)
    except ConfigError as err:
        names = list(network.topological_order())
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise ConfigError(f"--record: {err} (its populations: {shown})") from None
    items = len(set().union(*(r.item_list(n_items) for r in requests))) if requests else 0
    size = sum(p["size"] for p in populations)
    check_estimate(items * T * size, memory_budget, f"recording {size:,} neurons for {items:,} items and {T:,} steps")
    return populations


def record_spikes(runner: Backend, network: Network, test: Split, options: RunOptions,
                  requests: list[RecordRequest], folder: Path, memory_budget: float | None, emit: Listener) -> dict:
    """Simulates the requested items again on ``runner`` with ``options`` (the main run's), recording the
    requested populations, and writes them to ``folder / spikes.mat``; returns what summary.json records
    (file, backend, per population its items, neurons and spikes)."""
    from neurodeploy.evaluate.spike_trains import write_spike_trains

    populations = check_recording(requests, network, options.encoding, len(test), options.T, memory_budget)
    items = {r.population: r.item_list(len(test)) for r in requests}
    run_items = sorted(set().union(*items.values()))
    size = sum(p["size"] for p in populations)
    emit(Event("stage", f"recording the spikes of {', '.join(items)} ({size:,} neurons) for {len(run_items)} "
                        f"items on {runner.describe()}"))
    index = torch.as_tensor(run_items)
    recording = replace(options, record_spikes=tuple(items), record_neuron_counts=False, exit_policy=None,
                        progress=False)
    result = runner.run(network, test.images[index], test.labels[index], recording)
    spikes = result.population_recorded_spikes()
    path = write_spike_trains(folder / SPIKES_FILE, spikes, items, run_items, result.labels,
                              float(result.metadata.get("dt_ms", 1.0)), {"backend": runner.describe()})
    return {"file": path.name, "backend": runner.describe(), "dt_ms": float(result.metadata.get("dt_ms", 1.0)),
            "populations": {name: {"items": items[name], "neurons": int(spikes[name].shape[2]),
                                   "spikes": int(np.abs(spikes[name][[run_items.index(i) for i in items[name]]]).sum())}
                            for name in items}}
