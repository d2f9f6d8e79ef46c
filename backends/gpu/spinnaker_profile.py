"""The reference simulator's ``spinnaker`` profile: SpiNNaker's arithmetic on a compiled network, so
``run --backend gpu --profile spinnaker`` predicts what the board computes (``docs/semantics.md``, "SpiNNaker").

What changes against the ``pynn`` profile (one-step delays stay):
- the cell is IF_curr_delta: hard reset to 0 and the leak ``v <- e v + I`` with the S16.15 constants of
  :class:`~neurodeploy.targets.spinnaker.DeltaCell` (the output population leaks too);
- thresholds, biases, initial membranes and the membrane after every update are rounded to S16.15;
- synapses are the projections' explicit matrices (source thresholds folded in), split into excitatory
  and inhibitory receptors, their magnitudes rounded to the 16-bit ring-buffer weights of the target's
  shift (from its expected summed weight, see ``passes.ring_buffers``), and each receptor's sum per step
  saturates at the ring buffer's limit;
- an analog input is current injection (rounded to S16.15), as the neuron backend does it.
Not modelled: the ARM's rounding inside the closed-form update (at most one unit of 2^-15 per step)
and the order in which saturating additions happen within a step.

Hard-reset compensation (``passes.reset_compensation``): a population annotated by
:func:`compensate_hard_reset` resets to its per-neuron ``v_reset`` (S16.15) instead of 0, the PyNN
parameter the spinnaker backend sets. The engine resets to 0, so the profile simulates the membrane
``v' = v - v_reset``: threshold ``theta - v_reset``, initial membrane ``v_init - v_reset`` and, with the leak,
the extra current ``-(1 - e) v_reset`` per step (``e v + I = e v' + I - (1 - e) v_reset + v_reset``). With
``v_reset`` on the S16.15 grid, rounding ``v'`` is rounding ``v`` shifted by ``v_reset``: the same spikes.
With ``v_reset="refined"`` (:func:`refine_hard_reset`) the values are set per channel by simulating this
profile against the IR on calibration items; they reach the profile and the board lowering through the same
``passes.reset_compensation.v_reset``.

Sub-stepping (``substeps`` k > 1, :data:`SUBSTEPS_OPTION`; ``neurodeploy.targets.spinnaker.SUBSTEPS``): the board's
``machine_time_step`` is 1/k ms, so the profile simulates k ticks per IR step (:func:`simulate_substeps`): the
cell's constants are those of dt = 1/k ms, biases and the analog input's current enter as 1/k of themselves per tick
(then rounded to S16.15), a spiking input is encoded from ``x / k`` per tick (what the board's spike source plays),
weights are unchanged, delays are one tick, ring buffers are sized for a tick's summed weight. The reset values
(``v_reset="calibrated"``) are the IR's mean overshoot in steps whatever k; ``"calibrated_ticks"`` measures it in the
run's ticks (:func:`mean_overshoot` with ``substeps``). The overshoot a hard reset discards is that of the tick a
spike fires in, smaller than a step's: values of steps make every layer of a residual CNN fire too often at k = 2
(spike-count rate ratios against pynn 1.11 in the first layer to 1.37 at the output), values of the ticks keep
them at 0.90-1.00, yet the extra spikes were measured to keep the accuracy better on other networks at T = 100
(``docs/semantics.md``, "Sub-stepping"). The values record the ticks they were measured in, and the profile and the
board lowering refuse values of another k > 1. A neuron may fire up to k times
per IR step; spikes and synaptic events are summed over each step's k ticks and the readout is the output membrane
after its last tick. The board runs k times longer (``time_scale_factor = k``); ``substeps="auto"``
(:func:`choose_substeps`) takes the cheapest k of 1, 2, 4 that keeps the pynn profile's accuracy within 1 pp on
labelled calibration items.

Each difference from the ``pynn`` profile is a part (:data:`PARTS`) that can be applied on its own, which is how
``neurodeploy diagnose`` and the run's accuracy warning say which one loses accuracy (``GpuBackend.factor_variants``,
``neurodeploy/jobs/diagnosis.py``).

The ``spinnaker_exp`` profile (``cell="exp"``) predicts the local-only variant of the spinnaker backend:
every population is IF_curr_exp (:class:`~neurodeploy.targets.spinnaker.ExpCell`, ``tau_syn`` = 1/32 ms)
and the projections ``backends.pynn.lowering.local_connector_kinds`` makes ConvolutionConnector or
PoolDenseConnector ones carry int16 weights (magnitudes clipped at 32767 units instead of 65535). Per step
and receptor, the saturated ring-buffer sum x becomes the synaptic current ``floor(x * init)`` (u0.32
``init`` ~ 1/32, integer arithmetic), which decays to 0 before the next step, and moves the membrane by
``R (1 - e)`` (~32) times itself: ``v <- e v + R (1 - e) (I_exc - I_inh + i_offset)``, with the bias sent
as ``i_offset = round(b / (R (1 - e)))``; hard reset and S16.15 rounding as above. The floor and the
saturation are applied per projection: exact where a population has one incoming projection (every
feed-forward layer); with several (residual sums) the board floors and saturates their sum, which may
differ by one 2^-15 unit of current per extra projection and step.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from neurodeploy.backends.base import Option
from neurodeploy.backends.gpu.compiled import CompiledNetwork, Incoming, Layer, compile_network
from neurodeploy.backends.gpu.engine import BatchSimulation, chunk_steps, simulate_batch
from neurodeploy.backends.pynn.lowering import local_connector_kinds
from neurodeploy.errors import BackendError
from neurodeploy.ir.network import Network
from neurodeploy.ir.torch_ops import compile_chain
from neurodeploy.passes.reset_compensation import METADATA_KEY as RESET_KEY
from neurodeploy.passes.reset_compensation import (
    annotate_channel_resets,
    annotate_reset_compensation,
    channel_thresholds,
    check_substeps,
    compensated_populations,
    refinable_populations,
    refined_channel_resets,
    v_reset,
)
from neurodeploy.passes.ring_buffers import annotate_summed_weights, summed_weights_or_bound
from neurodeploy.passes.synapse_matrix import projection_matrix, receptor_parts
from neurodeploy.targets.spinnaker import (
    DEFAULT_TAU_M,
    LOCAL_ONLY_WEIGHT_MAX,
    RING_BUFFER_MAX,
    S1615_RESOLUTION,
    SUBSTEPS,
    U032_ONE,
    DeltaCell,
    ExpCell,
    quantize_weights,
    ring_buffer_limit,
    ring_buffer_shift,
    round_s1615,
)

#: cells of the profile: "delta" (IF_curr_delta, the ``spinnaker`` profile), "exp" (IF_curr_exp, ``spinnaker_exp``)
CELLS = ("delta", "exp")

#: the parts of SpiNNaker's semantics the profile applies; leaving some out measures what each costs
PARTS = ("hard_reset", "leak", "fixed_point", "weights", "floor")
#: the parts that change only IF_curr_exp (the synaptic current's floor)
EXP_ONLY_PARTS = ("floor",)
#: calibration of the hard-reset compensation: items (the first of the calibration items) and steps
COMPENSATION_ITEMS = 64
COMPENSATION_STEPS = 100
#: passes of the per-channel refinement of the reset values (``refine_hard_reset``)
REFINEMENT_PASSES = 4
#: bound on one chunk's tensors in the calibration simulations (bytes)
CHUNK_BUDGET_BYTES = 64 * 2**20
#: the option of every backend that runs SpiNNaker's hard-reset cells (the gpu backend's spinnaker profiles,
#: the spinnaker backend); :func:`set_reset_values` applies it
V_RESET_OPTION = Option(
    "v_reset", "calibrated", "reset value of SpiNNaker's hard-reset cells: calibrated (per population, the mean "
    "overshoot a subtract reset keeps, measured on calibration items in IR steps whatever --substeps), "
    "calibrated_ticks (the same measured in the run's ticks: smaller values with --substeps K > 1, spike counts "
    "closer to the subtract reset's, fewer spikes), refined (then per channel, by simulating the board's arithmetic "
    "against the subtract reset on calibration items; measured to help on some networks and not others) or zero; "
    "see docs/semantics.md",
    choices=("refined", "calibrated", "calibrated_ticks", "zero"))
#: the option of every backend that runs SpiNNaker's cells: ticks per IR step (module docstring)
SUBSTEPS_OPTION = Option(
    "substeps", 1, "ticks per IR step on SpiNNaker (machine_time_step = 1/K ms, input current divided by K, so the "
    "overshoot a hard reset discards shrinks); the board then runs K times slower (time_scale_factor K, K T ms per "
    "item); auto: the cheapest K of 1, 2, 4 whose prediction on calibration items of the training split is within "
    "1 pp of the pynn profile; see docs/spinnaker-hardware.md", kind=int, choices=SUBSTEPS, words=("auto",))


def _sparse_fn(matrix, device: torch.device, dtype: torch.dtype, target_shape: tuple[int, ...]):
    """``[n, *source_shape] -> [n, *target_shape]`` through a sparse ``[n_target, n_source]`` matrix."""
    csr = matrix.tocsr()
    csr.sum_duplicates()  # canonical (sorted, unique indices): a valid CSR layout without PyTorch's own check,
    # which PyTorch 2.11 failed on a matrix of conv MNIST ("expected col_indices to be a contiguous tensor")
    with warnings.catch_warnings():  # CSR is "beta" in PyTorch, and 10x faster than COO here
        warnings.simplefilter("ignore", UserWarning)
        parts = [torch.tensor(np.ascontiguousarray(a), dtype=t) for a, t in
                 ((csr.indptr, torch.int64), (csr.indices, torch.int64), (csr.data, dtype))]
        weights = torch.sparse_csr_tensor(*parts, csr.shape).to(device)

    def apply(spikes: torch.Tensor) -> torch.Tensor:
        flat = spikes.reshape(spikes.shape[0], -1)
        return (weights @ flat.T).T.reshape(spikes.shape[0], *target_shape)

    return apply


def _round(value):
    return round_s1615(value.clone()) if torch.is_tensor(value) else float(round_s1615(value))


def _exp_bias(value, cell: ExpCell):
    """The per-tick membrane bias an IF_curr_exp neuron applies for a bias ``value`` per IR step:
    ``R (1 - e) round(value dt / (R (1 - e)))``."""
    if torch.is_tensor(value):
        return round_s1615(value * (cell.dt / cell.bias_gain)).mul_(cell.bias_gain)
    return float(cell.offset_for(value)) * cell.bias_gain


def _per_tick(value, dt: float):
    """A bias or current per IR step as its share per tick of ``dt`` ms (unchanged for dt = 1)."""
    return value if dt == 1.0 or value is None else value * dt


def cell_parts(cell: str) -> tuple[str, ...]:
    """The :data:`PARTS` that change anything for ``cell`` ("delta", "exp")."""
    return PARTS if cell == "exp" else tuple(p for p in PARTS if p not in EXP_ONLY_PARTS)


def exp_synaptic_fn(excitatory, inhibitory, limits: tuple[float, float], cell: ExpCell, floor: bool = True):
    """One projection into an IF_curr_exp population: per receptor the ring-buffer sum saturates at its
    limit and becomes the current ``floor(x * init)`` (exact integer arithmetic on the S16.15 bits); the
    result is the membrane change ``R (1 - e) (I_exc - I_inh)``. ``excitatory`` / ``inhibitory``: the
    receptors' weight functions (magnitudes). ``floor=False`` (a diagnosis that leaves the floor out): the
    current ``x * init`` exactly."""
    init, scale = cell.init_bits, cell.bias_gain * S1615_RESOLUTION

    def current_bits(fn, limit, spikes):
        # the sums of quantized weights are multiples of 2^(shift - 15) below 2^24 of them: exact in float32,
        # and so are their S16.15 bits
        summed = fn(spikes).clamp_(max=limit)
        if not floor:
            return summed.double().mul_(init / (S1615_RESOLUTION * U032_ONE))
        bits = summed.mul_(1.0 / S1615_RESOLUTION).long()
        return torch.bitwise_right_shift(bits.mul_(init), 32)

    def apply(spikes: torch.Tensor) -> torch.Tensor:
        total = current_bits(excitatory, limits[0], spikes).sub_(current_bits(inhibitory, limits[1], spikes))
        return total.double().mul_(scale).to(spikes.dtype)

    return apply


def apply_spinnaker_arithmetic(compiled: CompiledNetwork, network: Network, encoding: str, device: torch.device,
                               dtype: torch.dtype = torch.float32, tau_m: float = DEFAULT_TAU_M,
                               parts: tuple[str, ...] = PARTS, cell: str = "delta", substeps: int = 1) -> dict:
    """Turns ``compiled`` (built with delay 1) into the SpiNNaker profile in place; returns a report per
    population: ring-buffer shifts, saturation limits and how many weights rounded to zero or clipped.
    ``parts`` picks which of :data:`PARTS` apply ("weights": 16-bit ring-buffer weights, receptors and
    saturation; "floor": with ``cell="exp"`` the synaptic current's floor, nothing for "delta"; "fixed_point":
    S16.15 rounding of parameters and state). ``cell``: "delta" (IF_curr_delta) or "exp" (IF_curr_exp with the
    local-only connectors of the module docstring). ``substeps``: ticks per IR step (module docstring); the network
    is then simulated with :func:`simulate_substeps`."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise BackendError(f"unknown spinnaker profile parts {sorted(unknown)}; choose from {PARTS}")
    if cell not in CELLS:
        raise BackendError(f"unknown spinnaker profile cell {cell!r}; choose from {CELLS}")
    if substeps not in SUBSTEPS:
        raise BackendError(f"substeps = {substeps}: choose one of {', '.join(map(str, SUBSTEPS))}")
    if "hard_reset" in parts:
        check_substeps(network, substeps)
    fixed = "fixed_point" in parts
    exp = cell == "exp"
    dt = 1.0 / substeps
    constants = ExpCell.for_tick(tau_m, dt) if exp else DeltaCell.for_tau(tau_m, dt)
    kinds = local_connector_kinds(network) if exp else [None] * len(network.projections)
    summed = summed_weights_or_bound(network, encoding)
    index = {layer.name: i for i, layer in enumerate(compiled.layers)}
    report: dict = {"cell": {"model": "IF_curr_exp" if exp else "IF_curr_delta", "tau_m": constants.tau_m,
                             "cm": constants.cm, "decay": constants.decay, "substeps": substeps,
                             "machine_time_step_ms": dt}, "parts": list(parts), "populations": {}}
    if exp:
        report["cell"].update(tau_syn=constants.tau_syn, init_bits=constants.init_bits, bias_gain=constants.bias_gain,
                              gain=constants.gain)
        report["connectors"] = {kind or "fromlist": kinds.count(kind) for kind in set(kinds)}
    for layer in compiled.layers:
        if layer.role == "input":
            continue
        shifts = [ring_buffer_shift(w) for w in summed[layer.name]]
        if "hard_reset" in parts:
            layer.reset = "zero"
        if "leak" in parts:
            layer.decay = constants.decay
        if "weights" in parts and not exp:  # the exp cell saturates inside each projection's function
            layer.saturation = tuple(ring_buffer_limit(s) for s in shifts)
        if fixed:
            layer.fixed_point = True
            layer.threshold = _round(layer.threshold)
            layer.v_init = _round(layer.v_init)
            if layer.bias is not None:
                layer.bias = _exp_bias(layer.bias, constants) if exp else _round(_per_tick(layer.bias, dt))
        else:
            layer.bias = _per_tick(layer.bias, dt)
        if "hard_reset" in parts:
            _reset_to(layer, v_reset(network, layer.name), fixed, device)
        layer.amplitude = None  # folded into the synapse matrices below
        layer.incoming = []
        report["populations"][layer.name] = {"max_expected_summed_weight": summed[layer.name],
                                             "ring_buffer_shift": shifts, "weights_to_zero": 0, "weights_clipped": 0}
        if "hard_reset" in parts and RESET_KEY in network.populations[layer.name].metadata:
            report["populations"][layer.name]["reset_compensation"] = network.populations[layer.name].metadata[
                RESET_KEY]
    for projection, kind in zip(network.projections, kinds, strict=True):
        source = network.populations[projection.source]
        target = compiled.layers[index[projection.target]]
        if source.role == "input" and encoding == "analog":
            chain = compile_chain(projection.ops, device=device, dtype=dtype)
            if not fixed or not exp:  # the exp cell's bias rule takes the tick's share itself
                chain = _tick_share(chain, dt)
            if fixed and exp:
                target.incoming.append(Incoming(0, lambda x, chain=chain: _exp_bias(chain(x), constants)))
            else:
                target.incoming.append(Incoming(0, (lambda x, chain=chain: round_s1615(chain(x))) if fixed else chain))
            continue
        matrix = projection_matrix(network, projection)
        weights, floor = "weights" in parts, exp and "floor" in parts
        if not weights and not floor:
            target.incoming.append(Incoming(index[projection.source], _sparse_fn(matrix, device, dtype, target.shape)))
            continue
        entry = report["populations"][projection.target]
        receptors = []
        for receptor, part in enumerate(receptor_parts(matrix)):
            part = part.tocoo()
            if weights:
                quantized, clipped = quantize_weights(part.data, entry["ring_buffer_shift"][receptor],
                                                      LOCAL_ONLY_WEIGHT_MAX if kind else RING_BUFFER_MAX)
                entry["weights_to_zero"] += int(((quantized == 0) & (part.data != 0)).sum())
                entry["weights_clipped"] += clipped
                part.data = quantized
            receptors.append(_sparse_fn(part, device, dtype, target.shape))
        if exp:
            limits = tuple(ring_buffer_limit(s) if weights else float("inf") for s in entry["ring_buffer_shift"])
            target.incoming.append(Incoming(index[projection.source],
                                            exp_synaptic_fn(*receptors, limits, constants, floor)))
        else:
            target.incoming.append(Incoming(index[projection.source], *receptors))
    return report


def _tick_share(fn, dt: float):
    """``fn`` (an analog input's current per IR step) as its share per tick of ``dt`` ms."""
    return fn if dt == 1.0 else (lambda x: fn(x) * dt)  # not in place: an identity chain returns x itself


def simulate_substeps(compiled: CompiledNetwork, x: torch.Tensor, T: int, encoding: str, chunk: int, delay: int,
                      seed: int, substeps: int, record_neurons: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, None]:
    """``engine.simulate_batch`` of a network whose layers take a tick's share of every current (this profile with
    ``substeps``) for ``T`` IR steps of ``substeps`` ticks each: a spiking input is
    encoded from ``x / substeps`` per tick; the results are per IR step as ``simulate_batch`` returns them (readout
    ``[B, T, C]`` after each step's last tick, counts ``[B, T, P, 2]`` summed over its ticks, ``stop`` all T,
    per-neuron counts over the run, no recorded spike trains). No early exit (a tick's readout is no step's)."""
    if substeps == 1:
        return simulate_batch(compiled, x, T, encoding, chunk, delay, seed, None, record_neurons)
    ticks = x if encoding == "analog" else x * (1.0 / substeps)
    readout, counts, stop, neurons, _ = simulate_batch(compiled, ticks, T * substeps, encoding, chunk, delay, seed,
                                                       None, record_neurons)
    B = x.shape[0]
    counts = counts.reshape(B, T, substeps, *counts.shape[2:]).sum(2)
    return readout[:, substeps - 1::substeps].contiguous(), counts, torch.full_like(stop, T), neurons, None


def _reset_to(layer: Layer, values: np.ndarray, fixed: bool, device: torch.device) -> None:
    """A hard reset to ``values`` (per neuron, C order) on an engine that resets to 0: the layer simulates
    ``v - values`` (module docstring). Nothing changes where every value is 0."""
    if not values.any():
        return
    shift = torch.as_tensor(round_s1615(values) if fixed else values, dtype=torch.float32, device=device)
    shift = shift.reshape(layer.shape)
    layer.threshold = torch.as_tensor(layer.threshold, dtype=torch.float32, device=device) - shift
    layer.v_init = torch.as_tensor(layer.v_init, dtype=torch.float32, device=device) - shift
    if layer.decay is not None:
        extra = shift * -(1.0 - layer.decay)
        layer.bias = extra if layer.bias is None else layer.bias + extra


def mean_overshoot(network: Network, x: torch.Tensor, encoding: str = "analog", device: torch.device | None = None,
                   T: int = COMPENSATION_STEPS, batch_size: int = 64, substeps: int = 1) -> dict[str, float]:
    """``{population: E[o]}``: per population of ``passes.reset_compensation.compensated_populations``, the
    mean over its spikes of the overshoot ``o = v - theta`` the subtract reset keeps (the membrane right
    after the spike, capped at ``theta``: a neuron driven above ``theta`` every tick fires every tick
    whatever its reset), simulated with the IR's own cell and one-tick delays on items ``x [N, *input]``
    for ``T`` steps of ``substeps`` ticks (the ticks of the board: biases and the analog input's current enter as
    ``1 / substeps`` of themselves per tick, a spiking input is encoded from ``x / substeps``, weights unchanged:
    :func:`in_ticks`). The overshoot a hard reset discards is that of the tick the spike fires in; ``substeps`` 1
    measures it in steps (``v_reset="calibrated"``), the run's K in its ticks (``"calibrated_ticks"``; module
    docstring, "Sub-stepping"). Populations that never spike are left out."""
    device = device or torch.device("cpu")
    names = compensated_populations(network)
    compiled = compile_network(network, device, torch.float32, delay=1)
    if substeps != 1:
        in_ticks(compiled, encoding, substeps)
        x = x if encoding == "analog" else x * (1.0 / substeps)
    index = {layer.name: i for i, layer in enumerate(compiled.layers)}
    thresholds = {name: torch.as_tensor(compiled.layers[index[name]].threshold, dtype=torch.float32, device=device)
                  for name in names}
    # running sums stay on the device: no host synchronization per step
    overshoot = {name: torch.zeros((), dtype=torch.float64, device=device) for name in names}
    spikes = {name: torch.zeros((), dtype=torch.int64, device=device) for name in names}
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            sim = BatchSimulation(compiled, x[start:start + batch_size].to(device, torch.float32), encoding, 1, 0)
            for _ in range(T * substeps):
                sim.step_chunk(1)
                for name in names:
                    k = index[name]
                    v, spiked = sim.v[k], sim.last[k] > 0  # sim.last: the spikes of the tick just simulated
                    overshoot[name] += torch.minimum(v, thresholds[name]).mul(spiked).sum(dtype=torch.float64)
                    spikes[name] += spiked.sum()
    return {name: float(overshoot[name]) / int(spikes[name]) for name in names if int(spikes[name])}


def in_ticks(compiled: CompiledNetwork, encoding: str, substeps: int) -> CompiledNetwork:
    """``compiled`` (the IR's cell, built with delay 1) in place as the network of ``substeps`` ticks per IR step: each
    bias and the analog input's current enter as ``1 / substeps`` of themselves per tick, every other projection as
    compiled (its own ops, not the profile's sparse matrices: what :func:`apply_spinnaker_arithmetic` with no part
    computes, up to float32 rounding, at the speed of the compiled ops). Simulate it for ``substeps`` T steps with
    a spiking input encoded from ``x / substeps``."""
    dt = 1.0 / substeps
    for layer in compiled.layers:
        if layer.role == "input":
            continue
        layer.bias = _per_tick(layer.bias, dt)
        layer.incoming = [Incoming(i.source, _tick_share(i.fn, dt)) if i.source == 0 and encoding == "analog" else i
                          for i in layer.incoming]
    return compiled


def compensate_hard_reset(network: Network, calibration: torch.Tensor, encoding: str = "analog",
                          device: torch.device | None = None, substeps: int = 1) -> Network:
    """The hard-reset compensation pass (``passes.reset_compensation``) with ``E[o]`` from
    :func:`mean_overshoot` on the first ``COMPENSATION_ITEMS`` calibration items in ``substeps`` ticks per step (the
    ticks the board runs); in place."""
    items = calibration[:COMPENSATION_ITEMS]
    overshoot = mean_overshoot(network, items, encoding, device, substeps=substeps)
    ticks = f" of {substeps} ticks (one-tick delays)" if substeps != 1 else " (one-step delays)"
    return annotate_reset_compensation(network, overshoot, (
        f"mean v - theta after a spike (subtract reset), {len(items)} calibration items, "
        f"{COMPENSATION_STEPS} steps{ticks}, {encoding} input"), substeps)


def channel_spike_counts(compiled: CompiledNetwork, x: torch.Tensor, encoding: str, T: int, names: list[str],
                         batch_size: int = 64, substeps: int = 1) -> dict[str, np.ndarray]:
    """``{population: spikes per channel [C]}`` of ``compiled`` (any profile, one-step delays; with ``substeps``
    a network in ticks, see :func:`simulate_substeps`) on items ``x [N, *input]`` over ``T`` steps, summed over
    items, the channel's neurons and steps."""
    index = {layer.name: i for i, layer in enumerate(compiled.layers)}
    offsets = np.cumsum([0] + [layer.size for layer in compiled.layers])
    totals = {name: 0.0 for name in names}
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size].to(torch.float32)
            chunk = chunk_steps(compiled, len(batch), T, CHUNK_BUDGET_BYTES)
            _, _, _, neurons, _ = simulate_substeps(compiled, batch, T, encoding, chunk, 1, 0, substeps,
                                                    record_neurons=True)
            counts = neurons.sum(0).double().cpu().numpy()
            for name in names:
                k = index[name]
                layer = compiled.layers[k]
                totals[name] = totals[name] + counts[offsets[k]:offsets[k + 1]].reshape(layer.shape[0], -1).sum(1)
    return totals


def refine_hard_reset(network: Network, calibration: torch.Tensor, encoding: str = "analog",
                      device: torch.device | None = None, cell: str = "delta", tau_m: float = DEFAULT_TAU_M,
                      passes: int = REFINEMENT_PASSES, substeps: int = 1) -> Network:
    """The per-channel refinement of the reset values (``passes.reset_compensation``), in place, starting from
    :func:`compensate_hard_reset`'s: on the first ``COMPENSATION_ITEMS`` calibration items, ``passes`` times,
    the profile of ``cell`` (every part, the reset values so far) is simulated for ``COMPENSATION_STEPS`` steps,
    its spike count per channel compared with the IR's (one-step delays, subtract reset) and each channel's reset
    value moved by ``passes.reset_compensation.refined_channel_resets``; the values of the last pass are kept.
    Rates of a hard reset move in jumps (a neuron of constant input fires every whole number of steps), so a move
    can overshoot; keeping instead the pass whose counts came closest (per channel, or for the whole network) was
    measured and lost accuracy on the test items (``docs/semantics.md``). Needs the ring-buffer annotation first
    (the profile sizes its ring buffers from it). ``substeps``: ticks per IR step of the profile simulated."""
    device = device or torch.device("cpu")
    compensate_hard_reset(network, calibration, encoding, device, substeps)
    names = refinable_populations(network)
    if not names:
        return network
    items = calibration[:COMPENSATION_ITEMS].to(device)
    reference = channel_spike_counts(compile_network(network, device, torch.float32, delay=1), items, encoding,
                                     COMPENSATION_STEPS, names)
    values = {name: _channel_mean(v_reset(network, name), network.populations[name].shape) for name in names}
    measured_on = (f"per-channel spike counts of the {cell} profile against the subtract reset, {len(items)} "
                   f"calibration items, {COMPENSATION_STEPS} steps, {passes} passes, {encoding} input")
    for _ in range(passes):
        compiled = compile_network(network, device, torch.float32, delay=1)
        apply_spinnaker_arithmetic(compiled, network, encoding, device, tau_m=tau_m, cell=cell, substeps=substeps)
        board = channel_spike_counts(compiled, items, encoding, COMPENSATION_STEPS, names, substeps=substeps)
        values = {name: refined_channel_resets(values[name], channel_thresholds(network, name), board[name],
                                               reference[name]) for name in names}
        annotate_channel_resets(network, values, measured_on)
    return network


def _channel_mean(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(values, np.float64).reshape(shape[0], -1).mean(1)


def set_reset_values(network: Network, calibration: torch.Tensor, encoding: str, mode: str,
                     device: torch.device | None = None, cell: str = "delta", tau_m: float = DEFAULT_TAU_M,
                     substeps: int = 1) -> Network:
    """The :data:`V_RESET_OPTION` value ``mode`` applied to ``network``, in place: "refined" runs
    :func:`refine_hard_reset` for the cell ``cell`` ("delta", "exp") of membrane time constant ``tau_m``,
    "calibrated" :func:`compensate_hard_reset` in steps (one tick per step) whatever ``substeps``,
    "calibrated_ticks" in ``substeps`` ticks per step, all on ``calibration`` with ``encoding``; "zero" records that no
    population is compensated (also in an IR that was compensated before)."""
    if mode == "refined":
        return refine_hard_reset(network, calibration, encoding, device, cell, tau_m, substeps=substeps)
    if mode in ("calibrated", "calibrated_ticks"):
        return compensate_hard_reset(network, calibration, encoding, device, substeps if mode == "calibrated_ticks"
                                     else 1)
    return annotate_reset_compensation(network, {}, "")


def annotate_for_board(network: Network, calibration: torch.Tensor, encoding: str, v_reset_mode: str,
                       device: torch.device | None = None, cell: str = "delta", tau_m: float = DEFAULT_TAU_M,
                       substeps: int = 1) -> Network:
    """What a board of ``substeps`` ticks per IR step reads from the network, in place, from ``calibration`` items
    ``[N, *input]`` with ``encoding``: each population's ring buffers (``passes.ring_buffers``) and reset values
    (:func:`set_reset_values` with ``v_reset_mode``); the spinnaker backend and the gpu profiles that predict it
    prepare networks with it, for a fixed K or each K :func:`choose_substeps` tries."""
    annotate_summed_weights(network, calibration.numpy(), encoding, substeps=substeps)
    return set_reset_values(network, calibration, encoding, v_reset_mode, device, cell, tau_m, substeps)


#: the numbers of ticks per IR step ``--substeps auto`` tries, cheapest first (board time K T ms per item)
AUTO_SUBSTEPS = (1, 2, 4)
#: steps of the calibration runs that choose K where the run's T is not given (a job gives its own: the loss a hard
#: reset causes, and what K recovers, differ with T)
AUTO_STEPS = 100
#: the largest loss (points of accuracy on the calibration items) against the pynn profile a chosen K may have
AUTO_LIMIT_PP = 1.0


def calibration_accuracy(compiled: CompiledNetwork, x: torch.Tensor, labels: torch.Tensor, encoding: str, T: int,
                         substeps: int = 1, batch_size: int = 64) -> float:
    """Accuracy at step ``T`` (argmax of the readout after the last step, as ``SimulationResult.accuracy_curve``) of
    ``compiled`` (one-step delays; with ``substeps`` a profile in ticks, :func:`simulate_substeps`) on items
    ``x [N, *input]`` with ``labels [N]``."""
    hits = 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size].to(torch.float32)
            chunk = chunk_steps(compiled, len(batch), T, CHUNK_BUDGET_BYTES)
            readout = simulate_substeps(compiled, batch, T, encoding, chunk, 1, 0, substeps)[0]
            hits += int((readout[:, -1].argmax(-1).cpu() == labels[start:start + batch_size].cpu()).sum())
    return hits / len(x)


def choose_substeps(network: Network, calibration: torch.Tensor, labels: torch.Tensor | None, encoding: str,
                    v_reset_mode: str, device: torch.device | None = None, cell: str = "delta",
                    tau_m: float = DEFAULT_TAU_M, candidates: tuple[int, ...] = AUTO_SUBSTEPS, T: int = AUTO_STEPS,
                    limit_pp: float = AUTO_LIMIT_PP) -> dict:
    """``--substeps auto``: the cheapest number of ticks per IR step whose board prediction keeps the accuracy.

    On the calibration items (training split, ``calibration [N, *input]`` with ``labels [N]``) the pynn profile
    (the IR's cell, one-step delays) and, for each K of ``candidates`` in order, the profile of ``cell`` with its
    ring buffers and reset values set for K (``passes.ring_buffers``, ``v_reset_mode``; with "calibrated" or
    "calibrated_ticks" and K > 1 that rule, then, if it loses more than the limit, the other: which of the two keeps
    a network's accuracy was measured to differ between networks) are
    simulated for ``T`` steps; the first (K, reset rule) whose accuracy is at most ``limit_pp`` points below pynn's
    is chosen, else the most accurate (the smaller K on a tie). ``network`` is left annotated for the choice, as a
    backend's ``prepare`` leaves it for a fixed K, so the board lowering and the gpu profiles read the same values.
    Returns the report: the chosen ``substeps`` and ``v_reset`` rule, each candidate's accuracy, the reference's,
    the items and steps, and the choice's ``time_scale_factor`` K (a board time of K ms per step). Cost: one pynn
    run and one profile run per candidate tried, each of ``T`` steps (K T ticks)."""
    if labels is None or len(labels) != len(calibration):
        raise BackendError("--substeps auto chooses K by the accuracy of labelled calibration items; give the "
                           "calibration items' labels, or a number of substeps (1, 2, 4, 8)")
    device = device or torch.device("cpu")
    x, y = calibration.to(device), torch.as_tensor(labels)
    reference = calibration_accuracy(compile_network(network, device, torch.float32, delay=1), x, y, encoding, T)
    other = {"calibrated": "calibrated_ticks", "calibrated_ticks": "calibrated"}
    tried = [(k, mode) for k in candidates for mode in (
        (v_reset_mode, other[v_reset_mode]) if v_reset_mode in other and k > 1 else (v_reset_mode,))]
    accuracy: dict[tuple[int, str], float] = {}

    chosen = None
    for k, mode in tried:
        annotate_for_board(network, calibration, encoding, mode, device, cell, tau_m, k)
        compiled = compile_network(network, device, torch.float32, delay=1)
        apply_spinnaker_arithmetic(compiled, network, encoding, device, tau_m=tau_m, cell=cell, substeps=k)
        accuracy[k, mode] = calibration_accuracy(compiled, x, y, encoding, T, k)
        if round(100.0 * (reference - accuracy[k, mode]), 9) <= limit_pp:
            chosen = (k, mode)
            break
    within = chosen is not None
    if chosen is None:
        chosen = max(accuracy, key=lambda c: (accuracy[c], -c[0]))
        annotate_for_board(network, calibration, encoding, chosen[1], device, cell, tau_m, chosen[0])
    return {"substeps": chosen[0], "v_reset": chosen[1], "rule": f"cheapest of {list(candidates)} within "
            f"{limit_pp:g} pp of the pynn profile on {len(x)} calibration items (training split), T = {T}",
            "reference_accuracy": reference, "accuracy": {f"{k} {mode}": a for (k, mode), a in accuracy.items()},
            "within_limit": within, "cell": cell, "items": len(x), "T": T, "time_scale_factor": chosen[0]}


def require_chosen(backend: str, substeps: int | str) -> None:
    """Raises BackendError where ``substeps`` is still "auto": the K is chosen by :func:`prepare_for_board` when a
    backend prepares the network, so a network run or lowered without that preparation has no K."""
    if substeps == "auto":
        raise BackendError(f"{backend} backend: --substeps auto chooses K when the network is prepared (prepare with "
                           "labelled calibration items, as every job does); this network was not prepared")


def prepare_for_board(network: Network, calibration: torch.Tensor, labels: torch.Tensor | None, encoding: str,
                      v_reset_mode: str, substeps: int | str, device: torch.device | None = None, cell: str = "delta",
                      tau_m: float = DEFAULT_TAU_M, T: int | None = None) -> int:
    """A backend's ``prepare`` for a SpiNNaker board or the gpu profile that predicts it, in place: with a number
    ``substeps`` K, :func:`annotate_for_board` for K ticks per step; with "auto", the K :func:`choose_substeps`
    chooses on the labelled calibration items (``labels [N]``) at the run's ``T`` steps (None: ``AUTO_STEPS``), its
    report recorded in ``network.metadata["substeps_choice"]``. Returns the K the network is annotated for."""
    if substeps == "auto":
        choice = choose_substeps(network, calibration, labels, encoding, v_reset_mode, device, cell, tau_m,
                                 T=T or AUTO_STEPS)
        network.metadata["substeps_choice"] = choice
        return choice["substeps"]
    annotate_for_board(network, calibration, encoding, v_reset_mode, device, cell, tau_m, substeps)
    return substeps
