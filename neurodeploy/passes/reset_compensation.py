"""A reset value per neuron that makes up, on average, for the overshoot a hard reset loses.

The IR's converted neurons reset by subtraction: after a spike at ``v >= theta`` the membrane keeps the
overshoot ``o = v - theta``. SpiNNaker's cells reset hard, to ``v_reset``; with ``v_reset = 0`` every spike
loses its overshoot. By Wald's identity a neuron whose input per step has mean ``mu`` then spikes every
``(theta - v_reset + E[o]) / mu`` steps instead of every ``theta / mu`` (subtraction), so a reset to
``v_reset = E[o]`` keeps its rate, to first order. The loss is large where the input of one step is large
against ``theta``: in conv MNIST rare spikes arrive through large 3 x 3 x C kernels and ``E[o]`` is 0.17-0.31
``theta`` per layer, so each layer fires 10-40 % less and the losses compound (``docs/semantics.md``,
"Hard-reset compensation").

The pass stores, per hidden population that resets by subtraction, the mean overshoot measured on
calibration items (the measurement needs a simulator: ``backends/gpu/spinnaker_profile.py``,
``compensate_hard_reset``) and :func:`v_reset` turns it into per-neuron reset values, the ``v_reset``
parameter of PyNN's cells:

- ``v_reset = E[o]`` for every neuron of the population;
- except in a *lattice* population, whose input per step is always a multiple of one weight ``h`` (a
  pooling population: no bias, no weights of its own; its membrane moves on the lattice of ``h``). There
  only the number of lattice steps a reset value saves counts, so a reset below ``h`` saves nothing: each
  neuron saves a whole number ``k`` of steps, ``k`` spread over the neurons so that its mean is
  ``E[o] / h``, its reset value in the middle of the interval that saves ``k`` (``k = 0`` included: robust
  by half a step to what makes steps smaller than ``h`` on a board, the leak and the IF_curr_exp
  current's floor, which with a reset to 0 would need one step more per spike).

The mean overshoot is a first-order, per-population answer: it treats every channel alike and ignores what the
leak, S16.15 and the ring buffers change, and on a residual CNN written by a user (issue 33) the hard reset
still cost 4 points after it. The *refinement* (:func:`refined_channel_resets`, run by
``backends/gpu/spinnaker_profile.py``, ``refine_hard_reset``) sets one reset value per channel (per neuron for
1-D populations) by simulation: it runs the board's arithmetic and the IR's subtract reset on calibration items,
compares each channel's spike count and moves its reset value by the period the count says is lost, over a few
passes (the changes upstream change what arrives downstream). The values are stored in the annotation
(``channel_v_reset``) and read by :func:`v_reset`, so the board lowering and the gpu profiles use the same ones.
"""

from __future__ import annotations

import numpy as np

from neurodeploy.errors import BackendError
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import AvgPool2d, Flatten, Identity
from neurodeploy.ir.population import per_neuron
from neurodeploy.passes.synapse_matrix import projection_matrix
from neurodeploy.targets.spinnaker import round_s1615

METADATA_KEY = "reset_compensation"
#: bounds of a refined reset value, in thresholds: at most this close to the threshold (a reset at or above it
#: fires every step), at least this far below 0 (a channel the board makes fire too often)
REFINED_MAX = 0.95
REFINED_MIN = -0.5
#: the largest move of a reset value in one refinement pass, in thresholds
REFINED_STEP = 0.5
#: ops whose projections carry no weights of their own (the weights are the pooling's equal shares)
_WEIGHTLESS = (AvgPool2d, Flatten, Identity)


def compensated_populations(network: Network) -> list[str]:
    """Hidden populations (topological order) whose IR neurons reset by subtraction: the ones a hard-reset
    target changes and this pass compensates (QFFS neurons, whose negative spikes read the membrane's
    sign, are left out; no hard-reset target runs them)."""
    names = []
    for name in network.topological_order():
        pop = network.populations[name]
        if pop.role == "hidden" and pop.neuron.reset == "subtract" and pop.neuron.spike_cap is None and \
                not pop.neuron.negative_spikes:
            names.append(name)
    return names


def lattice_step(network: Network, name: str) -> float:
    """The one weight ``h`` every synapse into population ``name`` has when its input per step is always a
    multiple of it (no bias; every incoming projection from a spiking population, pooling only, all its
    weights equal and positive), else 0."""
    pop = network.populations[name]
    if pop.bias is not None and np.any(np.asarray(pop.bias) != 0):
        return 0.0
    values = []
    for projection in network.projections:
        if projection.target != name:
            continue
        if network.populations[projection.source].role != "hidden" or not all(
                isinstance(op, _WEIGHTLESS) for op in projection.ops):
            return 0.0
        values.append(np.unique(projection_matrix(network, projection).data))
    weights = np.unique(np.concatenate(values)) if values else np.zeros(0)
    if weights.size == 0 or weights[0] <= 0 or not np.allclose(weights, weights[0], rtol=1e-9, atol=0.0):
        return 0.0
    return float(weights[0])


def annotate_reset_compensation(network: Network, mean_overshoot: dict[str, float], measured_on: str,
                                substeps: int = 1) -> Network:
    """Stores each population's mean overshoot ``E[o]`` (membrane units, from ``mean_overshoot``), its
    lattice step (:func:`lattice_step`) and the ticks per IR step ``substeps`` it was measured in (the board's
    ``machine_time_step`` of ``1 / substeps`` ms it is for, :func:`check_substeps`) in its metadata, in place,
    replacing any earlier annotation; ``measured_on`` says how ``E[o]`` was measured. Populations missing from
    ``mean_overshoot`` (all of them for ``{}``) get ``v_reset = 0``."""
    for pop in network.populations.values():
        pop.metadata.pop(METADATA_KEY, None)
    for name in compensated_populations(network):
        if name in mean_overshoot:
            network.populations[name].metadata[METADATA_KEY] = {
                "mean_overshoot": float(mean_overshoot[name]), "lattice_step": lattice_step(network, name),
                "measured_on": measured_on, "substeps": int(substeps)}
    return network


def check_substeps(network: Network, substeps: int) -> None:
    """Raises BackendError where a population's reset value was measured in another number of ticks per step than
    ``substeps``, the ticks of the board (or profile) about to run it, or in steps (one tick, an annotation without
    the field: ``--v-reset calibrated``): the overshoot a hard reset discards shrinks with the tick, so values
    of K = 2 under-compensate a run of K = 1 and those of K = 4 a run of K = 2 (``docs/semantics.md``,
    "Sub-stepping")."""
    for name, pop in network.populations.items():
        entry = pop.metadata.get(METADATA_KEY)
        measured = int(entry.get("substeps", 1)) if entry else substeps
        if measured not in (1, substeps):  # 1: in steps, the rule "calibrated" of any run
            raise BackendError(f"population {name!r}: its hard-reset compensation was measured with {measured} ticks "
                               f"per step, the run has {substeps}; prepare the network again for --substeps "
                               f"{substeps}")


def v_reset(network: Network, name: str) -> np.ndarray:
    """Per-neuron reset values ``[size]`` (C order) of population ``name``: zeros without the pass's
    annotation, else the values of the module docstring, each below the neuron's threshold."""
    pop = network.populations[name]
    entry = pop.metadata.get(METADATA_KEY)
    if not entry:
        return np.zeros(pop.size)
    theta = per_neuron(pop.neuron.threshold, pop.shape).reshape(-1)
    overshoot, h = float(entry["mean_overshoot"]), float(entry["lattice_step"])
    if "channel_v_reset" in entry:
        return channel_values(entry["channel_v_reset"], pop.shape)
    if h <= 0:
        return np.minimum(np.full(pop.size, overshoot), theta)
    return lattice_values(overshoot, h, theta)


def lattice_values(overshoot: float, h: float, theta: np.ndarray) -> np.ndarray:
    """Reset values on a lattice of step ``h`` (thresholds ``theta [n]``): neuron i saves ``k_i`` steps,
    ``k_i = floor((i + 1) p) - floor(i p)`` with ``p = overshoot / h`` (mean p, evenly spread), by resetting
    to ``theta - (m - k_i - 1/2) h``, where ``m = ceil(theta / h)`` steps reach the threshold from 0: the
    middle of the interval of resets that save ``k_i`` steps, ``k_i = 0`` included, so that steps a little
    smaller than ``h`` (the leak, the IF_curr_exp current's floor) still reach the threshold in ``m - k_i``."""
    theta = np.asarray(theta, np.float64)
    p = overshoot / h
    index = np.arange(theta.size)
    steps = np.floor((index + 1) * p) - np.floor(index * p)
    reach = np.ceil(theta / h - 1e-9)
    steps = np.minimum(steps, reach - 1)  # a reset at or above the threshold would fire every step
    return theta - (reach - steps - 0.5) * h



def channel_values(values, shape: tuple[int, ...]) -> np.ndarray:
    """Per-channel values ``[shape[0]]`` repeated over the channel's neurons: ``[size]`` in C order."""
    values = np.asarray(values, np.float64)
    return np.repeat(values, int(np.prod(shape[1:], dtype=np.int64))) if len(shape) > 1 else values.copy()


def channel_thresholds(network: Network, name: str) -> np.ndarray:
    """The threshold of each channel ``[shape[0]]`` of population ``name`` (the first neuron's of the channel)."""
    pop = network.populations[name]
    return per_neuron(pop.neuron.threshold, pop.shape).reshape(pop.shape[0], -1)[:, 0].astype(np.float64)


def refinable_populations(network: Network) -> list[str]:
    """Compensated populations the refinement sets per channel: annotated, not on a lattice (a lattice
    population keeps the whole-step rule of :func:`lattice_values`), with one threshold per channel."""
    names = []
    for name in compensated_populations(network):
        entry = network.populations[name].metadata.get(METADATA_KEY)
        pop = network.populations[name]
        theta = per_neuron(pop.neuron.threshold, pop.shape).reshape(pop.shape[0], -1)
        if entry and float(entry["lattice_step"]) <= 0 and np.all(theta == theta[:, :1]):
            names.append(name)
    return names


def refined_channel_resets(v_reset: np.ndarray, theta: np.ndarray, board: np.ndarray, reference: np.ndarray
                           ) -> np.ndarray:
    """One refinement pass per channel: with the reset at ``v_reset [C]`` a channel of threshold ``theta [C]``
    spiked ``board [C]`` times where the IR's subtract reset spiked ``reference [C]`` times (summed over items,
    neurons and steps). A channel whose input per step has mean ``mu`` spikes every ``(theta - v_reset + E[o])
    / mu`` steps (the module docstring), so matching the reference's period ``theta / mu`` (``mu = theta n_ref /
    T``) moves the reset by ``theta (n_ref / n_board - 1)``: the new value, the move bounded by
    :data:`REFINED_STEP` ``theta`` (a silent channel on the board moves by that much) and the value kept in
    ``[REFINED_MIN theta, REFINED_MAX theta]``; channels that never spike in the reference keep theirs."""
    v_reset, theta = np.asarray(v_reset, np.float64), np.asarray(theta, np.float64)
    board, reference = np.asarray(board, np.float64), np.asarray(reference, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        move = np.where(board > 0, theta * (reference / board - 1.0), REFINED_STEP * theta)
    move = np.clip(move, -REFINED_STEP * theta, REFINED_STEP * theta)
    new = np.clip(v_reset + move, REFINED_MIN * theta, REFINED_MAX * theta)
    return np.where(reference > 0, new, v_reset)


def annotate_channel_resets(network: Network, values: dict[str, np.ndarray], refined_on: str) -> Network:
    """Stores each population's per-channel reset values (``values[name] [C]``, rounded to S16.15, the grid the
    board stores them on) in its annotation, in place."""
    for name, channel in values.items():
        entry = network.populations[name].metadata[METADATA_KEY]
        entry["channel_v_reset"] = [float(v) for v in round_s1615(np.asarray(channel, np.float64))]
        entry["refined_on"] = refined_on
    return network
