"""One runner for every PyNN machine (``pyNN.neuron``, ``pyNN.nest``, ``pyNN.spiNNaker``): build a lowered network
once, then for each item set its inputs, ``sim.run``, read back spikes and the output membrane, reset.

What differs between machines and cells (parameters, time grid, how data is read back) lives in a
:class:`CellProfile`; the runner holds the contract they share:

* IR step k (k = 1..T) is one update of every neuron and lasts ``STEP_MS``; a spike of step k reaches the
  targets of a projection with delay d before step k + max(d, 1) (the reference simulator's ``pynn``
  profile: the machine's delay ``profile.delay_ms`` is one step, each further step adds ``STEP_MS``).
* The membrane is sampled once per step: sample 0 is the initial membrane, sample k the membrane after
  step k; a run lasts ``profile.run_ms(T)`` ms so that samples 0..T exist.
* Inputs are set after ``sim.reset()``, when PyNN's time is back at 0 (a spike source drops spike times
  earlier than the current time without an error, so the runner refuses to set inputs at any other time):
  (a) current: projections from the input population become a constant current of the first layer per
  item (:meth:`LoweredNetwork.drive`, set through ``profile.set_drive``); (b) spikes: when the
  lowering made the input projections synapses, the input is played by ``SpikeSourceArray``
  populations, one spike per step of the deterministic IF encoder (``backends/gpu/encoders.py``: v += x;
  a spike when v >= 1, v -= 1), in steps 1..T; the spike of step k reaches the first layer at step k + 1,
  as every projection. A source population holds at most ``source_size`` neurons, so at most that many
  spikes leave it in one step (each source fires at most once per step).
* Reads are one array per population and item (no per-neuron objects). A spiking output population
  (spike-count readout) is read as its cumulative spike counts, the reference simulator's readout.
* Sub-steps (a profile's ``substeps`` K > 1, SpiNNaker's ``machine_time_step`` of 1/K ms): the machine runs K
  ticks per IR step; the times above are then ticks (the input's IF encoder integrates ``x / K`` per tick, a
  projection's one step of delay is one tick, samples are taken per tick) and the runner hands back per IR step:
  spikes and events summed over a step's K ticks, the readout sampled after its last tick.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from neurodeploy.backends.gpu.encoders import SpikeEncoder
from neurodeploy.backends.pynn.lowering import LoweredNetwork, LoweredPopulation
from neurodeploy.errors import BackendError

#: the duration of one IR step on every PyNN machine (ms)
STEP_MS = 1.0


class CellProfile(Protocol):
    """A machine's cell as the runner sees it. Times are in ms, membranes and weights in the IR's units
    unless the profile converts them."""

    #: synaptic delay of a projection of one IR step (the machine's minimum), ms
    delay_ms: float
    #: ticks per IR step (the module docstring's sub-steps; a profile without the attribute has 1)
    substeps: int

    def population(self, sim: Any, pop: LoweredPopulation) -> Any:
        """The PyNN Population of one lowered population (its label is ``pop.name``)."""

    def source(self, sim: Any, size: int, label: str) -> Any:
        """A SpikeSourceArray Population of ``size`` neurons."""

    def weights(self, weights: np.ndarray) -> np.ndarray:
        """PyNN weights of synapses with signed IR weights ``weights`` (the receptor follows the sign)."""

    def set_drive(self, population: Any, pop: LoweredPopulation, drive: np.ndarray) -> None:
        """Sets one item's constant input current ``drive [pop.size]`` of a first-layer population."""

    def set_spikes(self, population: Any, steps: list[np.ndarray]) -> None:
        """Sets one item's spikes of a source population: ``steps[i]`` are neuron i's steps (1..T, sorted)."""

    def run_ms(self, T: int) -> float:
        """How long a run of T steps lasts (ms) so that membrane samples 0..T are recorded."""

    def record(self, population: Any, pop: LoweredPopulation) -> None:
        """Records spikes of a spiking population and the membrane of the output population."""

    def read_spikes(self, population: Any) -> tuple[np.ndarray, np.ndarray]:
        """The last run's spikes as (neuron index, 1-based step), int arrays of equal length."""

    def read_membrane(self, population: Any) -> np.ndarray:
        """The last run's membrane samples ``[samples, size]`` (sample k after step k); 0 rows when the
        machine returned nothing."""

    def reset(self, sim: Any) -> None:
        """Ends an item: ``sim.reset()`` and whatever else the machine needs for the next item to start from
        the network's initial state (NEST keeps spikes in flight across PyNN's reset)."""


@dataclass
class BuiltNetwork:
    """A lowered network on a PyNN simulator."""

    #: lowered population name -> PyNN Population
    populations: dict[str, Any]
    #: synapses leaving each input neuron ``[n_input]`` (counts the input's synaptic events)
    input_fan_out: np.ndarray
    #: input spike sources as (first input neuron, Population), in input order; empty with current input
    sources: list[tuple[int, Any]] = field(default_factory=list)
    #: synapses of every projection, input synapses included
    n_synapses: int = 0


def delay_ms(profile: CellProfile, steps: int) -> float:
    """The synaptic delay (ms) of a projection of ``steps`` steps on the machine of ``profile`` (at least one)."""
    return profile.delay_ms + (max(int(steps), 1) - 1) * STEP_MS


def _connect(sim: Any, profile: CellProfile, pre_population: Any, post_population: Any, pre: np.ndarray,
             post: np.ndarray, weight: np.ndarray, steps: int = 1) -> int:
    """One projection per receptor (excitatory: positive weights, inhibitory: negative) with a delay of
    ``steps`` steps; returns the number of synapses made."""
    made = 0
    for receptor, mask in (("excitatory", weight > 0), ("inhibitory", weight < 0)):
        if mask.any():
            connections = np.stack([pre[mask], post[mask], profile.weights(weight[mask]),
                                    np.full(int(mask.sum()), delay_ms(profile, steps))], axis=1)
            sim.Projection(pre_population, post_population, sim.FromListConnector(connections),
                           sim.StaticSynapse(), receptor_type=receptor)
            made += int(mask.sum())
    return made


def input_sources(sim: Any, profile: CellProfile, name: str, n_input: int,
                  source_size: int | None) -> list[tuple[int, Any]]:
    """The input's spike sources, ``(first input index, source)`` each: at most ``source_size`` neurons a
    source (None: one source), labelled ``name``, or ``name[first:stop]`` when split."""
    parts = max(1, -(-n_input // source_size)) if source_size else 1
    sources = []
    for chunk in np.array_split(np.arange(n_input), parts):
        first, stop = int(chunk[0]), int(chunk[-1]) + 1
        sources.append((first, profile.source(sim, stop - first, name if parts == 1 else f"{name}[{first}:{stop}]")))
    return sources


def build_network(sim: Any, profile: CellProfile, lowered: LoweredNetwork, source_size: int | None = None,
                  record: bool = True) -> BuiltNetwork:
    """Creates every population and projection (``sim.setup`` already called). Synapses from a population
    that is not lowered are the input's: they leave spike sources of at most ``source_size`` neurons
    (None: one source), labelled with the input's name, or ``name[first:stop]`` when split."""
    populations = {pop.name: profile.population(sim, pop) for pop in lowered.populations}
    n_input = int(np.prod(lowered.input_shape))
    input_synapses = [s for s in lowered.synapses if s.source not in populations]
    built = BuiltNetwork(populations, np.zeros(n_input))
    if input_synapses:
        built.sources = input_sources(sim, profile, input_synapses[0].source, n_input, source_size)
    for synapses in lowered.synapses:
        target = populations[synapses.target]
        if synapses.source in populations:
            built.n_synapses += _connect(sim, profile, populations[synapses.source], target, synapses.pre,
                                         synapses.post, synapses.weight, synapses.delay)
            continue
        built.input_fan_out += np.bincount(synapses.pre, minlength=n_input)
        for first, source in built.sources:
            mask = (synapses.pre >= first) & (synapses.pre < first + source.size)
            built.n_synapses += _connect(sim, profile, source, target, synapses.pre[mask] - first,
                                         synapses.post[mask], synapses.weight[mask], synapses.delay)
    if record:
        for pop in lowered.populations:
            profile.record(populations[pop.name], pop)
    return built


def if_spike_steps(x: np.ndarray, T: int, substeps: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The IF encoder's spikes of one item ``x [*input_shape]`` over T steps of ``substeps`` ticks (``x /
    substeps`` per tick), with the reference simulator's arithmetic (float32): (input neuron index, 1-based
    tick; the step with one tick per step), sorted by neuron then tick. Raises BackendError for negative spikes,
    which a spike source cannot send."""
    ticks = T * substeps
    x32 = torch.as_tensor(x[None], dtype=torch.float32)
    encoded = SpikeEncoder("if", x32 if substeps == 1 else x32 * (1.0 / substeps), seed=0).next(ticks)
    encoded = encoded.reshape(ticks, -1).numpy()
    if (encoded < 0).any():
        raise BackendError("the IF encoder sends negative spikes for negative inputs, which a spike source "
                           "cannot play; shift the inputs to be non-negative or use current input")
    neuron, step = np.nonzero(encoded.T > 0)
    return neuron, step + 1


class PyNNRunner:
    """Simulates items on a built network; see the module docstring for the contract."""

    def __init__(self, sim: Any, profile: CellProfile, lowered: LoweredNetwork, built: BuiltNetwork):
        self.sim, self.profile, self.lowered, self.built = sim, profile, lowered, built

    @property
    def substeps(self) -> int:
        return getattr(self.profile, "substeps", 1)

    def _set_inputs(self, x: np.ndarray, drives: dict[str, np.ndarray], T: int) -> tuple[np.ndarray, np.ndarray]:
        """Sets one item's inputs; returns its input spikes (neuron index, 1-based tick)."""
        if self.sim.get_current_time() != 0:
            raise BackendError(f"inputs must be set at time 0 (after reset), not at {self.sim.get_current_time()} "
                               "ms: a spike source drops spike times earlier than the current time")
        for pop in self.lowered.populations:
            if pop.name in drives:
                self.profile.set_drive(self.built.populations[pop.name], pop, drives[pop.name])
        if not self.built.sources:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        neuron, step = if_spike_steps(x, T, self.substeps)
        bounds = np.searchsorted(neuron, np.arange(len(self.built.input_fan_out) + 1))
        for first, source in self.built.sources:
            self.profile.set_spikes(source, [step[bounds[i]:bounds[i + 1]] for i in range(first, first + source.size)])
        return neuron, step

    def run_items(self, x: np.ndarray, T: int, record: tuple[str, ...] = ()) -> dict:
        """Simulates every item of ``x [B, *input_shape]`` for T steps. Returns ``readout [B, T, C]`` (output
        membrane after each step), ``spikes`` and ``events`` (synaptic events) ``[B, T, P]`` per step and
        non-input population, ``neurons [B, M]`` (spikes per neuron over the run, non-input populations
        concatenated), the input's ``input_spikes``, ``input_events [B, T]`` and ``input_neurons [B, N]``
        (zeros with current input), ``items_read`` (items whose output membrane came back),
        ``run_s`` / ``read_s`` (seconds in the item loop / reading back) and ``recorded [B, T, R]`` int8: every
        neuron's spike (0 or 1) at each step, of the populations named in ``record`` (lowered populations or
        the input's spike sources) concatenated in that order (R = 0 without ``record``)."""
        lowered, profile, T, k = self.lowered, self.profile, int(T), self.substeps
        B, P = x.shape[0], len(lowered.populations)
        output = next(p for p in lowered.populations if p.role == "output")
        offsets = np.cumsum([0] + [pop.size for pop in lowered.populations])
        n_input = len(self.built.input_fan_out)
        out = {"readout": np.zeros((B, T, output.size), np.float32), "spikes": np.zeros((B, T, P), np.float32),
               "events": np.zeros((B, T, P), np.float32), "neurons": np.zeros((B, offsets[-1]), np.float32),
               "input_spikes": np.zeros((B, T), np.float32), "input_events": np.zeros((B, T), np.float32),
               "input_neurons": np.zeros((B, n_input), np.float32), "items_read": 0, "read_s": 0.0}
        sizes = {pop.name: pop.size for pop in lowered.populations}
        input_name = next((s.source for s in lowered.synapses if s.source not in sizes), None)
        if input_name is not None:  # spike sources play the input
            sizes[input_name] = n_input
        missing = [name for name in record if name not in sizes]
        if missing:
            raise BackendError(f"population {missing[0]!r} is not lowered to cells or spike sources here: its spikes "
                               "cannot be recorded")
        starts = dict(zip(record, np.cumsum([0] + [sizes[name] for name in record])[:-1], strict=True))
        out["recorded"] = np.zeros((B, T, sum(sizes[name] for name in record)), np.int8)

        def keep_recorded(item: int, name: str, index: np.ndarray, when: np.ndarray) -> None:
            """Spikes (neuron index, 0-based step) of population ``name`` into ``recorded`` when it is recorded."""
            if name in starts:
                out["recorded"][item, when, starts[name] + index] = 1
        drives = lowered.drive(x) if lowered.input_projections else {}
        start = time.perf_counter()
        for item in range(B):
            neuron, tick = self._set_inputs(x[item], {name: v[item] for name, v in drives.items()}, T)
            step = (tick - 1) // k  # 0-based IR step
            out["input_spikes"][item] = np.bincount(step, minlength=T)
            out["input_events"][item] = np.bincount(step, weights=self.built.input_fan_out[neuron], minlength=T)
            out["input_neurons"][item] = np.bincount(neuron, minlength=n_input)
            keep_recorded(item, input_name, neuron, step)
            self.sim.run(profile.run_ms(T))
            read = time.perf_counter()
            for p, pop in enumerate(lowered.populations):
                population = self.built.populations[pop.name]
                if pop.spiking:
                    index, when = profile.read_spikes(population)  # 1-based ticks
                    keep = (when >= 1) & (when <= T * k)
                    index, when = index[keep], (when[keep] - 1) // k
                    out["spikes"][item, :, p] = np.bincount(when, minlength=T)
                    out["events"][item, :, p] = np.bincount(when, weights=pop.fan_out[index], minlength=T)
                    out["neurons"][item, offsets[p]:offsets[p + 1]] = np.bincount(index, minlength=pop.size)
                    keep_recorded(item, pop.name, index, when)
                    if pop is output:  # a spike-count readout: the cumulative count of each output neuron
                        counts = np.bincount(when * pop.size + index, minlength=T * pop.size).reshape(T, pop.size)
                        out["readout"][item] = np.cumsum(counts, axis=0)
                        out["items_read"] += 1
                elif pop is output:
                    out["items_read"] += self._read_readout(population, out["readout"][item], T, k)
            out["read_s"] += time.perf_counter() - read
            profile.reset(self.sim)
        out["run_s"] = time.perf_counter() - start
        return out

    def _read_readout(self, population: Any, readout: np.ndarray, T: int, substeps: int = 1) -> int:
        """Fills ``readout [T, C]`` with the membrane samples after each step's last tick (samples k, 2k, .., kT
        of ``substeps`` k ticks per step); returns 1 when they came back, 0 when the machine returned none (a
        virtual board)."""
        membrane = np.asarray(self.profile.read_membrane(population), np.float64)
        if membrane.size == 0:
            return 0
        ticks = T * substeps
        if membrane.shape[0] < ticks + 1:
            raise BackendError(f"the machine returned {membrane.shape[0]} membrane samples of "
                               f"{population.label!r}, expected {ticks + 1} (ticks 0..{ticks})")
        readout[:] = membrane[substeps:ticks + 1:substeps]
        return 1


@contextmanager
def log_to_file(path: str | Path) -> Iterator[None]:
    """Sends what the process logs and prints to ``path`` (appended) instead of the terminal: Python log
    records (the root logger's handlers are replaced; PyNN and sPyNNaker log through the logging module),
    ``sys.stdout`` / ``sys.stderr`` (sPyNNaker's progress bars) and file descriptors 1 and 2 (NEURON's C
    code prints there). Everything is restored on exit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    with path.open("a") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved_fds = [os.dup(1), os.dup(2)]
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with redirect_stdout(log), redirect_stderr(log):
                yield
        finally:
            log.flush()
            for fd, saved in zip((1, 2), saved_fds, strict=True):
                os.dup2(saved, fd)
                os.close(saved)
            root.handlers, root.level = saved_handlers, saved_level
