"""``convert``: a trained ``torch.nn.Module`` becomes a normalized spiking network IR."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.fx
import torch.nn as nn

from neurodeploy.convert.fx_graph import MAX_POOL_STRATEGIES, FxConverter
from neurodeploy.convert.max_pool import average_pooling_model
from neurodeploy.convert.membrane import calibrate_initial_membrane
from neurodeploy.convert.normalize import apply_normalization, channel_lambdas
from neurodeploy.convert.readout import choose_readout_start
from neurodeploy.convert.refusals import REFUSALS
from neurodeploy.convert.statistics import activation_scales
from neurodeploy.errors import ConfigError, DataError, UnsupportedOperationError
from neurodeploy.ir.network import Network
from neurodeploy.ir.population import CONVERSION_FEATURES, VINIT_NAMES, NeuronSpec
from neurodeploy.train.sparsity import weight_sparsity

DEFAULT_PERCENTILE = {"max": 100.0, "percentile": 99.9, "percentile_all": 99.0}
CONVERSIONS = ("rate", "qcfs", "qffs")
#: initial membranes the converter offers: the IR's named ones and "calibrated" (``convert.membrane``)
V_INIT_CHOICES = VINIT_NAMES + ("calibrated",)


def conversion_features(conversion: str, negative_spikes: bool = False) -> tuple[str, ...]:
    """The ``neurodeploy.ir.population.CONVERSION_FEATURES`` that :func:`convert` with ``conversion`` and
    ``negative_spikes`` gives hidden neurons (known before converting: a job checks them against its backends
    before any work): qffs spike caps and negative spikes, rate conversion negative spikes where asked."""
    used = {"spike caps": conversion == "qffs", "negative spikes": conversion == "qffs" or negative_spikes}
    return tuple(name for name in CONVERSION_FEATURES if used[name])


class _Recorder(torch.fx.Interpreter):
    """Runs the traced model and keeps a copy of the chosen nodes' outputs (``recorded``: node -> output)."""

    def __init__(self, graph_module: torch.fx.GraphModule, nodes: set[str]):
        super().__init__(graph_module)
        self.nodes = nodes
        self.recorded: dict[str, torch.Tensor] = {}

    def run_node(self, n: torch.fx.Node):
        result = super().run_node(n)
        if n.name in self.nodes:
            self.recorded[n.name] = result.detach().clone()
        return result


def _float32_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """``model`` itself when its parameters and buffers are float32 (or not floating point), else a
    float32 copy and the note that says so; complex or quantized parameters are refused."""
    tensors = list(model.parameters()) + list(model.buffers())
    odd = sorted({str(t.dtype) for t in tensors if t.is_complex() or t.is_quantized})
    if odd:
        raise UnsupportedOperationError(f"cannot convert model {type(model).__name__}: it has {', '.join(odd)} "
                                        f"parameters: {REFUSALS['model parameters that are not real floating point']}")
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in tensors if t.is_floating_point()} - {"float32"})
    if not dtypes:
        return model, []
    note = (f"cast the model from {' and '.join(dtypes)} to float32 (a copy; the IR stores float32 weights and "
            "the simulators run in float32)")
    return copy.deepcopy(model).float(), [note]


def _batches(data: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, data.shape[0], batch_size):
        yield data[start: start + batch_size]


def _quantized_neuron(name: str, node: str, quantizer, conversion: str) -> NeuronSpec:
    """theta = s * Q and v_init = theta / 2 (QCFS's shift; ``convert`` may calibrate it afterwards)."""
    if quantizer is None:
        advice = REFUSALS["plain ReLU with conversion 'qcfs' or 'qffs'"]
        raise UnsupportedOperationError(
            f"cannot convert population {name!r} (graph node {node!r}), a plain ReLU: {conversion.upper()} "
            f"conversion needs quantized activations (QuantReLU); {advice}"
        )
    levels = quantizer.levels
    theta = float(quantizer.step.detach().abs()) * levels
    if conversion == "qcfs":
        return NeuronSpec(threshold=theta, reset="subtract", v_init="half")
    return NeuronSpec(threshold=theta, reset="subtract", v_init="half", spike_cap=levels, negative_spikes=True)


def convert(
    model: nn.Module,
    calibration: torch.Tensor,
    normalization: str = "percentile",
    percentile: float | None = None,
    granularity: str = "layer",
    reset: str = "subtract",
    v_init: str | float | None = None,
    seed: int = 0,
    batch_size: int = 500,
    conversion: str = "rate",
    max_pool: str | None = None,
    readout_start: int | str = 0,
    T: int | None = None,
    choice_items: int = 500,
    progress: bool = False,
    negative_spikes: bool = False,
    headroom: float = 1.0,
) -> Network:
    """Converts ``model`` into a rate-coded IF network.

    conversion: "rate" (data-based normalization of a ReLU network, threshold 1), or, for models whose
        hidden activations are ``QuantReLU`` (LSQ step s, Q levels): "qcfs" (no normalization;
        theta = s * Q, v_init = theta / 2, reset by subtraction) or "qffs" (QCFS plus a cap of Q net
        spikes per neuron and negative spikes). The normalization arguments are ignored for these, and
        v_init may only be None, "half" or "calibrated".

    calibration: input samples ``[N, *input_shape]`` used for activation statistics (float32).
    normalization: "max", "percentile" (over non-zero activations; Rueckauer 2017, default p = 99.9)
        or "percentile_all" (over all activations; SaRNN, default p = 99.0).
    granularity: "layer" (one lambda per population) or "neuron" (one per channel; Dutson et al.): per-channel
        threshold balancing, which deep and residual networks need at low T (with ``v_init="half"``).
    reset, v_init, seed: neuron spec of every hidden population (see :class:`NeuronSpec`); v_init None is
        "zero" for rate conversion and "half" (theta / 2) for qcfs/qffs. v_init "calibrated": one fraction
        v0 / theta per hidden population, searched from theta / 2 on the first ``choice_items`` calibration
        items for the agreement of the SNN's prediction at ``T`` with the ANN's (``docs/semantics.md``,
        "Calibrated initial membrane"; :mod:`neurodeploy.convert.membrane`).
    max_pool: None (max pooling is refused), "avg" (replaced by average pooling of the same window, not
        retrained; :func:`neurodeploy.convert.replace_max_pooling` also fine-tunes) or "spiking" (an exact
        maximum of rates built from ReLU populations, max(a, b) = b + relu(a - b)).
    readout_start: delayed readout: the output is read from step k on, O'(t) = O(t) - O(k) for t > k
        (``docs/semantics.md``), so the first k steps, while deep layers settle, do not count. An int k,
        or "auto": k chosen on the first ``choice_items`` calibration items (never test items) as the step
        that maximizes the SNN's agreement with the ANN's predictions at ``T`` (after any v_init
        calibration).
    T: the steps the network will run; needed by readout_start "auto" and v_init "calibrated".
    negative_spikes: rate conversion: every hidden neuron also emits a negative spike (-theta; v += theta)
        when its membrane falls below 0 while its net count is positive (QFFS's negative spikes without its
        cap, ``docs/semantics.md``). A neuron then takes back the spikes an early transient of its input
        made it fire, so its net count follows the rounded ReLU of its cumulative input instead of keeping
        every overshoot: long chains (deep, residual, depthwise nets) converge in fewer steps
        (``docs/converter.md``, "torchvision classifiers").
    headroom: rate conversion: every scale lambda is the calibration statistic times ``headroom`` (>= 1), so
        test activations up to ``headroom`` times the largest (or percentile) calibration activation still
        fire below the one-spike-per-step limit instead of being clipped there. Statistics of a few
        thousand calibration items underestimate the activations of unseen items, and in weakly trained
        deep nets the clipping flips close decisions (``docs/converter.md``, "torchvision classifiers");
        the price is rates 1 / headroom lower, so more steps for the same resolution.
    progress: a progress bar for the v_init calibration's simulations.
    A model in float64, float16 or bfloat16 is converted from a float32 copy (said in the notes).
    Returns a validated :class:`Network` whose metadata records the settings, the ANN's activation
    sparsity S_a and weight sparsity S_w, ``readout_start`` (with ``readout_start_choice``), any
    ``v_init_calibration`` and ``conversion_notes``: what the conversion
    changed, one line each (a cast, a dropped final softmax, max pooling strategies).
    """
    if calibration.ndim < 2 or calibration.shape[0] == 0:
        raise DataError(f"calibration data must be [N, *input_shape] with N > 0, got {tuple(calibration.shape)}")
    if conversion not in CONVERSIONS:
        raise ConfigError(f"conversion must be one of {CONVERSIONS}, not {conversion!r}")
    if conversion != "rate":
        normalization, granularity = "max", "layer"  # statistics only feed the sparsity report
    if normalization not in DEFAULT_PERCENTILE:
        raise ConfigError(f"normalization must be one of {sorted(DEFAULT_PERCENTILE)}, not {normalization!r}")
    percentile = DEFAULT_PERCENTILE[normalization] if percentile is None else float(percentile)
    if max_pool is not None and max_pool not in MAX_POOL_STRATEGIES:
        raise ConfigError(f"max_pool must be None or one of {MAX_POOL_STRATEGIES}, not {max_pool!r}")
    quantized = conversion != "rate"
    if v_init is None:
        v_init = "half" if quantized else "zero"
    if isinstance(v_init, str) and v_init not in V_INIT_CHOICES:
        raise ConfigError(f"v_init must be one of {V_INIT_CHOICES} or a number, not {v_init!r}")
    calibrated = isinstance(v_init, str) and v_init == "calibrated"
    if quantized and not (isinstance(v_init, str) and v_init in ("half", "calibrated")):
        raise ConfigError(f"conversion {conversion!r} starts every membrane at theta / 2 (its shift): v_init must "
                          f"be 'half' or 'calibrated', not {v_init!r}")
    if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) or not 1.0 <= headroom < math.inf:
        raise ConfigError(f"headroom must be a number >= 1 (the factor above the calibration scale), not {headroom!r}")
    if headroom != 1.0 and quantized:
        raise ConfigError(f"headroom is a choice of rate conversion; conversion {conversion!r} takes its scale from "
                          f"the trained quantizer")
    if negative_spikes and quantized:
        raise ConfigError(f"negative_spikes is a choice of rate conversion; conversion {conversion!r} sets its own "
                          f"neurons (qffs has negative spikes, qcfs none)")
    for choice, wanted in (("readout_start='auto'", readout_start == "auto"),
                           ("v_init='calibrated'", calibrated)):
        if wanted and not (isinstance(T, int) and not isinstance(T, bool) and T > 1):
            raise ConfigError(f"{choice} needs T, the number of steps the network will run (> 1)")
    if readout_start != "auto" and (isinstance(readout_start, bool) or not isinstance(readout_start, int)
                                    or readout_start < 0):
        raise ConfigError(f"readout_start must be 'auto' or a whole number of steps >= 0, not {readout_start!r}")
    source = model
    model, notes = _float32_model(model)
    was_training = source.training
    model.eval()
    try:
        if max_pool == "avg":
            model, changes = average_pooling_model(model)
            notes += [f"{change} (max_pool='avg': not retrained)" for change in changes]
            model.eval()
        fx = FxConverter(model, tuple(calibration.shape[1:]), max_pool=max_pool if max_pool == "spiking" else None)
        network = fx.run()
        nodes = set(fx.activation_nodes.values()) | {node for node, _, _ in fx.derived}

        def recorded_batches():
            recorder = _Recorder(fx.graph_module, nodes)
            with torch.no_grad():
                for batch in _batches(calibration.float(), batch_size):
                    recorder.recorded = {}
                    recorder.run(batch)
                    acts = {name: recorder.recorded[node] for name, node in fx.activation_nodes.items()}
                    for node, function, names in fx.derived:
                        acts.update(zip(names, function(recorder.recorded[node]), strict=True))
                    yield acts

        scales, zero_counts = activation_scales(recorded_batches, normalization, percentile, granularity)
        if readout_start == "auto" or calibrated:
            with torch.no_grad():
                items = calibration[:choice_items].float()
                logits = torch.cat([fx.graph_module(b) for b in _batches(items, batch_size)]).numpy()
    finally:
        source.train(was_training)
    if conversion == "rate":
        lambdas = {name: headroom * channel_lambdas(scales[name], network.populations[name].shape) for name in scales}
        apply_normalization(network, lambdas)
    for name, population in network.populations.items():
        if population.role != "hidden":
            pass
        elif conversion == "rate":
            start = "half" if calibrated else v_init
            population.neuron = NeuronSpec(threshold=1.0, reset=reset, v_init=start, v_init_seed=seed,
                                           negative_spikes=negative_spikes)
            population.metadata["lambda_mean"] = float(np.mean(lambdas[name]))
            population.metadata["lambda"] = [float(v) for v in lambdas[name]]
        else:
            population.neuron = _quantized_neuron(name, population.metadata["fx_node"], fx.quantizers.get(name),
                                                  conversion)
        if population.bias is not None:
            population.bias = population.bias.astype(np.float32)
    for projection in network.projections:
        for op in projection.ops:
            for key, array in op.arrays().items():
                if array.dtype.kind == "f":  # weights to float32; a gather's indices stay integers
                    setattr(op, key, np.asarray(array, dtype=np.float32))
    zeros = sum(z for z, _ in zero_counts.values())
    total = sum(t for _, t in zero_counts.values())
    network.metadata.update({
        "converter": "neurodeploy.convert",
        "conversion": conversion,
        "source_model": type(model).__name__,
        "normalization": normalization,
        "percentile": percentile,
        "granularity": granularity,
        "calibration_samples": int(calibration.shape[0]),
        "activation_sparsity": zeros / total if total else 0.0,
        "weight_sparsity": weight_sparsity(model),
        "conversion_notes": notes + fx.notes,
        "readout_start": readout_start if isinstance(readout_start, int) else 0,
        "negative_spikes": bool(negative_spikes),
        "headroom": float(headroom),
    })
    network.validate()
    if calibrated:
        network.metadata["v_init_calibration"] = calibrate_initial_membrane(network, items, logits, T,
                                                                           batch_size=batch_size, progress=progress)
    if readout_start == "auto":
        choice = choose_readout_start(network, items, logits.argmax(1), T)
        network.metadata["readout_start"] = choice["readout_start"]
        network.metadata["readout_start_choice"] = choice
    return network
