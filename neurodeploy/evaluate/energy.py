"""Estimated energy per inference on named platforms, from what a run counted.

Every number here is an estimate: operations counted in the run (synaptic events, spikes) or in the IR
(the ANN's multiply-accumulates) times a published energy per operation, plus static power times run
time where the platform's model has one. Memory traffic, host I/O, loading and reading back are left
out, so the figures compare platforms on the same counts rather than predict a power meter.

Platforms, per inference of T steps (dt = 1 ms; E in joules):

* ``loihi``: E = synaptic events x 23.6 pJ, the minimum energy of a synaptic spike operation of Intel's
  Loihi (Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro
  38(1), 2018, Table 2). Neuron updates and spike routing are not counted: a lower bound.
* ``spinnaker1``: E = packets x 1 nJ + T dt (chips x 0.35 W + cores x 0.034 W): one 40-bit multicast
  packet per spike at 25 pJ per bit through one router (each further router adds 1 nJ), an idle chip
  0.35 W and each running core 0.034 W more, SpiNNaker running in real time (1 ms per step); the
  figures of sPyNNaker's energy report (``neurodeploy.targets.spinnaker``). With K sub-steps (``--substeps``,
  ``time_scale_factor`` K) a step lasts K dt of board time, so the static term is K T dt (``docs/semantics.md``,
  "Sub-stepping"). Cores and chips come from the run's mapping when it has one, else from the populations at
  128 neurons per core (``estimate_cores``).
* ``cmos45_snn``: E = synaptic events x 0.9 pJ + input-layer MACs x 4.6 pJ: one fp32 add per synaptic
  event on 45 nm CMOS; the analog input's first projection (not counted as synaptic events,
  ``docs/semantics.md``) is a constant current, computed once per inference with fp32 MACs.
* ``cmos45_ann``: E = MACs x 4.6 pJ + accumulates x 0.9 pJ: the source ANN on the same chip, one fp32
  multiply (3.7 pJ) plus add (0.9 pJ) per MAC (Horowitz, "Computing's energy problem (and what we can do
  about it)", ISSCC 2014). MACs are counted from the IR (:func:`ann_operations`): every weight of every
  Dense and Conv2d op, applied once per inference (zero weights included, as dense hardware does);
  accumulates are the additions of average pooling windows, of biases and of merging projections.
"""

from __future__ import annotations

import math

import numpy as np

from neurodeploy.targets import spinnaker as spinn

#: energy per operation, joules
LOIHI_SYNAPTIC_OP_J = 23.6e-12
CMOS45_FP32_MAC_J = 4.6e-12
CMOS45_FP32_ADD_J = 0.9e-12

SOURCES = {
    "loihi": "Loihi: 23.6 pJ per synaptic spike operation (minimum; Davies et al., IEEE Micro 2018, Table 2)",
    "spinnaker1": "SpiNNaker 1: 1 nJ per 40-bit spike packet (25 pJ/bit), chip 0.35 W idle + 0.034 W per active "
                  "core, real time (sPyNNaker's energy model; Painkras et al., IEEE JSSC 2013)",
    "cmos45_snn": "45 nm CMOS (SNN): 0.9 pJ per fp32 add per synaptic event, 4.6 pJ per fp32 MAC of the input layer "
                  "(Horowitz, ISSCC 2014)",
    "cmos45_ann": "45 nm CMOS (ANN): 4.6 pJ per fp32 MAC, 0.9 pJ per fp32 add (Horowitz, ISSCC 2014)",
}
LABELS = {"loihi": "Loihi (SNN)", "spinnaker1": "SpiNNaker 1 (SNN)", "cmos45_snn": "45 nm CMOS (SNN)",
          "cmos45_ann": "45 nm CMOS (ANN)"}


def ann_operations(network) -> dict[str, int]:
    """The source ANN's operations per inference, from the IR ``network``: ``macs`` (every weight of every
    Dense, Conv2d and Conv1d op: out_features x in_features, output elements x C_in / groups x kernel
    size), ``accumulates`` (average-pooling window additions: output elements x window size for
    AvgPool2d / AvgPool1d, C x nnz(rows) x nnz(cols) for a SpatialLinear, each of whose outputs adds the
    inputs of a row interval times a column interval; one bias addition per non-input neuron, one
    addition per neuron for each incoming projection after the first) and ``input_macs`` (the MACs of
    projections leaving the input population). Rearrangements (Gather, Flatten, ChannelSlice) and
    per-channel Scales, which the converter folds into weights, cost nothing."""
    from neurodeploy.ir.ops import AvgPool1d, AvgPool2d, Conv1d, Conv2d, Dense, SpatialLinear

    macs = input_macs = accumulates = 0
    incoming: dict[str, int] = {}
    for projection in network.projections:
        shape = tuple(network.populations[projection.source].shape)
        for op in projection.ops:
            out = tuple(op.out_shape(shape))
            if isinstance(op, Dense):
                count = int(op.weight.size)
            elif isinstance(op, (Conv2d, Conv1d)):
                count = int(np.prod(out)) * int(np.prod(op.weight.shape[1:]))
            else:
                count = 0
                if isinstance(op, AvgPool2d):
                    accumulates += int(np.prod(out)) * op.kernel[0] * op.kernel[1]
                elif isinstance(op, AvgPool1d):
                    accumulates += int(np.prod(out)) * op.kernel
                elif isinstance(op, SpatialLinear):
                    accumulates += out[0] * int(np.prod([np.count_nonzero(m) for m in (op.rows, op.cols)
                                                         if m is not None]))
            macs += count
            if network.populations[projection.source].role == "input":
                input_macs += count
            shape = out
        incoming[projection.target] = incoming.get(projection.target, 0) + 1
    for name, pop in network.populations.items():
        if pop.role != "input":
            accumulates += pop.size * max(incoming.get(name, 1), 1)
    return {"macs": macs, "accumulates": accumulates, "input_macs": input_macs}


def estimate_cores(populations: list[dict], neurons_per_core: int = spinn.DEFAULT_NEURONS_PER_CORE) -> tuple[int, int]:
    """(cores, chips) a SpiNNaker 1 mapping needs at least: every population (the input as a spike source
    included) on ceil(size / neurons_per_core) cores, 17 application cores per chip."""
    cores = sum(math.ceil(p["size"] / neurons_per_core) for p in populations)
    return cores, max(1, math.ceil(cores / spinn.APPLICATION_CORES_PER_CHIP))


def energy_per_inference(synaptic_events: float, spikes: float, T: int, dt_ms: float = 1.0,
                         ann: dict | None = None, cores: int | None = None, chips: int | None = None,
                         substeps: int = 1) -> dict:
    """Estimates per inference (see the module docstring for the formulas): ``synaptic_events`` and
    ``spikes`` (packets on SpiNNaker) per inference over T steps of ``dt_ms``; ``ann``: the ANN's
    :func:`ann_operations` (None: no ANN and no input-layer figures); ``cores`` / ``chips``: the SpiNNaker
    mapping (None: no SpiNNaker figure); ``substeps``: the board's ticks per step K, run at ``time_scale_factor``
    K, so SpiNNaker's static power lasts K T dt_ms. Returns ``{platform: {"joules", "formula", "source", ...}}``."""
    seconds = T * dt_ms * 1e-3
    out: dict[str, dict] = {
        "loihi": {"joules": synaptic_events * LOIHI_SYNAPTIC_OP_J,
                  "formula": f"{synaptic_events:.6g} synaptic events x 23.6 pJ"},
    }
    if cores is not None and chips is not None:
        packets_j = spikes * spinn.JOULES_PER_PACKET
        board_seconds = seconds * substeps  # time_scale_factor K: each of a step's K ticks keeps dt of wall time
        static_j = board_seconds * (chips * spinn.WATTS_PER_IDLE_CHIP + cores * spinn.WATTS_PER_ACTIVE_CORE)
        out["spinnaker1"] = {"joules": packets_j + static_j, "packets_joules": packets_j, "static_joules": static_j,
                             "formula": f"{spikes:.6g} packets x 1 nJ + {board_seconds * 1e3:g} ms x ({chips} chips x "
                                        f"0.35 W + {cores} cores x 0.034 W)"}
    input_macs = ann["input_macs"] if ann else 0
    out["cmos45_snn"] = {"joules": synaptic_events * CMOS45_FP32_ADD_J + input_macs * CMOS45_FP32_MAC_J,
                         "formula": f"{synaptic_events:.6g} synaptic events x 0.9 pJ + {input_macs} input-layer MACs "
                                    "x 4.6 pJ"}
    if ann:
        out["cmos45_ann"] = {"joules": ann["macs"] * CMOS45_FP32_MAC_J + ann["accumulates"] * CMOS45_FP32_ADD_J,
                             "formula": f"{ann['macs']} MACs x 4.6 pJ + {ann['accumulates']} adds x 0.9 pJ"}
    for name, entry in out.items():
        entry["source"] = SOURCES[name]
    return out


def result_energy(result, synaptic_events_per_item: float) -> dict:
    """The ``energy`` entry of a summary: counts and :func:`energy_per_inference` of ``result``. Reads
    ``metadata["ann_operations"]`` (the job records it; without it there is no ANN figure),
    ``metadata["mapping"]`` (cores and chips of a SpiNNaker mapping; without it they are estimated) and
    ``metadata["substeps"]`` (the SpiNNaker path's ticks per step K, the board's time_scale_factor; without it 1)."""
    metadata = result.metadata
    spikes = float(result.spike_counts.sum() / max(result.n_items, 1))
    ann = metadata.get("ann_operations")
    mapping = metadata.get("mapping") or {}
    if mapping.get("cores") and mapping.get("chips"):
        cores, chips, cores_from = int(mapping["cores"]), int(mapping["chips"]), "mapping"
    elif result.populations:
        cores, chips = estimate_cores(result.populations)
        cores_from = f"estimated at {spinn.DEFAULT_NEURONS_PER_CORE} neurons per core"
    else:
        cores = chips = cores_from = None
    T, dt, substeps = result.T, float(metadata.get("dt_ms", 1.0)), int(metadata.get("substeps") or 1)
    return {
        "estimate": True,
        "unit": "J per inference",
        "counts": {"synaptic_events": synaptic_events_per_item, "spikes": spikes, "T": T, "dt_ms": dt,
                   "ann_macs": ann["macs"] if ann else None, "ann_accumulates": ann["accumulates"] if ann else None,
                   "input_layer_macs": ann["input_macs"] if ann else None, "spinnaker_cores": cores,
                   "spinnaker_chips": chips, "spinnaker_cores_from": cores_from, "substeps": substeps},
        "platforms": energy_per_inference(synaptic_events_per_item, spikes, T, dt, ann, cores, chips, substeps),
        "note": "estimates from counted operations x published energy per operation; memory traffic and I/O "
                "are not included",
    }


def format_joules(joules: float | None) -> str:
    """``1.23 µJ``-style text (three significant digits)."""
    if joules is None or not math.isfinite(joules):
        return "n/a"
    if joules == 0:
        return "0 J"
    for factor, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")):
        if abs(joules) >= factor:
            return f"{joules / factor:.3g} {prefix}J"
    return f"{joules / 1e-15:.3g} fJ"
