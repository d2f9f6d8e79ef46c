"""Recorded spikes as Neo, the data model PyNN returns (``Population.get_data()``), in a file PyNN users read.

The file is Neo's MATLAB format (``neo.io.NeoMatlabIO``, one of the formats ``pyNN.recording.get_io`` writes):
it holds no pickle, and it writes and reads about 30 times faster than ``neo.io.NixIO``, which took 46 s for
1,000 spike trains (``docs/outputs.md``, "Spike trains"). Layout, as PyNN lays out the data of several
populations: one Block; one Segment per recorded test item (``item``: its index among the run's items,
``label``: its class); in it one SpikeTrain per neuron of each population recorded for that item, annotated
``source_population``, ``source_index`` and ``channel_id`` (the neuron's index in the population, C order of
its shape). A spike of step k (k = 1..T) lies at k x dt ms; every train runs from 0 to T x dt ms. Signed
neurons (QFFS negative spikes) carry ``signs`` (+1 / -1 per spike) where a train has a negative one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodeploy.errors import ResultFormatError


def write_spike_trains(path: str | Path, spikes: dict[str, np.ndarray], items: dict[str, list[int]],
                       run_items: list[int], labels: np.ndarray, dt_ms: float, annotations: dict) -> Path:
    """Writes ``spikes`` (``{population: [n, T, size]}`` int8, -1 / 0 / 1, rows the items ``run_items`` in
    that order) into ``path``: each population in the segments of its ``items[population]`` only; ``labels``
    ``[n]`` of those rows; ``annotations`` go on the Block (backend, ...)."""
    import neo
    import quantities as pq
    from neo.io import NeoMatlabIO

    T = next(iter(spikes.values())).shape[1]
    block = neo.Block(name="neurodeploy spike recording", T=T, dt_ms=float(dt_ms),
                      populations=list(spikes), **annotations)
    for row, item in enumerate(run_items):
        segment = neo.Segment(name=f"item {item}", index=row, item=int(item), label=int(labels[row]))
        for name, values in spikes.items():
            if item not in items[name]:
                continue
            steps = values[row].T  # [size, T]
            for neuron, train in enumerate(steps):
                fired = np.flatnonzero(train)
                extra = {"signs": train[fired].astype(np.int8)} if (train < 0).any() else {}
                segment.spiketrains.append(neo.SpikeTrain((fired + 1) * dt_ms * pq.ms, t_start=0.0 * pq.ms,
                                                          t_stop=T * dt_ms * pq.ms, source_population=name,
                                                          source_index=neuron, channel_id=neuron, **extra))
        block.segments.append(segment)
    path = Path(path)
    NeoMatlabIO(str(path)).write_block(block)
    return path


def read_spike_trains(path: str | Path):
    """The Neo Block of a file :func:`write_spike_trains` wrote (``neo.io.NeoMatlabIO``, no pickle); raises
    ResultFormatError where ``path`` is not one."""
    from neo.io import NeoMatlabIO

    path = Path(path)
    if not path.is_file():
        raise ResultFormatError(f"{path}: no such file")
    try:
        block = NeoMatlabIO(str(path)).read_block()
    except Exception as err:  # scipy's and Neo's readers raise many kinds of error for a file that is not theirs
        raise ResultFormatError(f"{path}: not a Neo MATLAB file ({type(err).__name__})") from None
    if block.name != "neurodeploy spike recording":
        raise ResultFormatError(f"{path}: not a neurodeploy spike recording (block {block.name!r})")
    return block


def spike_steps(block, population: str, item: int) -> list[np.ndarray]:
    """The 1-based steps of every neuron's spikes of ``population`` in the segment of test item ``item``
    (neuron order), from a Block :func:`read_spike_trains` read; raises ResultFormatError where the block
    holds no such recording."""
    dt = float(block.annotations["dt_ms"])
    for segment in block.segments:
        if int(segment.annotations.get("item", -1)) != item:
            continue
        trains = sorted((t for t in segment.spiketrains if t.annotations.get("source_population") == population),
                        key=lambda t: int(t.annotations["source_index"]))
        if trains:
            return [np.rint(np.asarray(t.rescale("ms").magnitude) / dt).astype(np.int64) for t in trains]
    raise ResultFormatError(f"no spike trains of {population!r} for item {item} in the recording")
