"""``convert``: a trained ``torch.nn.Module`` becomes a normalized spiking network IR."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.fx
import torch.nn as nn

from neurodeploy.convert.fx_graph import FxConverter
from neurodeploy.convert.normalize import apply_normalization, channel_lambdas
from neurodeploy.convert.refusals import REFUSALS
from neurodeploy.convert.statistics import activation_scales
from neurodeploy.errors import ConfigError, DataError, UnsupportedOperationError
from neurodeploy.ir.network import Network
from neurodeploy.ir.population import NeuronSpec
from neurodeploy.train.sparsity import weight_sparsity

DEFAULT_PERCENTILE = {"max": 100.0, "percentile": 99.9, "percentile_all": 99.0}
CONVERSIONS = ("rate", "qcfs", "qffs")


class _Recorder(torch.fx.Interpreter):
    """Runs the traced model and keeps a copy of the chosen nodes' outputs."""

    def __init__(self, graph_module: torch.fx.GraphModule, wanted: dict[str, str]):
        super().__init__(graph_module)
        self.by_node = {node: name for name, node in wanted.items()}
        self.recorded: dict[str, torch.Tensor] = {}

    def run_node(self, n: torch.fx.Node):
        result = super().run_node(n)
        if n.name in self.by_node:
            self.recorded[self.by_node[n.name]] = result.detach().clone()
        return result


def _batches(data: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, data.shape[0], batch_size):
        yield data[start: start + batch_size]


def _quantized_neuron(name: str, node: str, quantizer, conversion: str) -> NeuronSpec:
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
    v_init: str | float = "zero",
    seed: int = 0,
    batch_size: int = 500,
    conversion: str = "rate",
) -> Network:
    """Converts ``model`` into a rate-coded IF network.

    conversion: "rate" (data-based normalization of a ReLU network, threshold 1), or, for models whose
        hidden activations are ``QuantReLU`` (LSQ step s, Q levels): "qcfs" (no normalization;
        theta = s * Q, v_init = theta / 2, reset by subtraction) or "qffs" (QCFS plus a cap of Q net
        spikes per neuron and negative spikes). The normalization arguments are ignored for these.

    calibration: input samples ``[N, *input_shape]`` used for activation statistics (float32).
    normalization: "max", "percentile" (over non-zero activations; Rueckauer 2017, default p = 99.9)
        or "percentile_all" (over all activations; SaRNN, default p = 99.0).
    granularity: "layer" (one lambda per population) or "neuron" (one per channel; Dutson et al.).
    reset, v_init, seed: neuron spec of every hidden population (see :class:`NeuronSpec`).
    Returns a validated :class:`Network` whose metadata records the settings, the ANN's activation
    sparsity S_a and weight sparsity S_w, and ``conversion_notes``: what the conversion changed without
    changing predictions (a dropped final softmax), one line each.
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
    was_training = model.training
    model.eval()
    try:
        fx = FxConverter(model, tuple(calibration.shape[1:]))
        network = fx.run()

        def recorded_batches():
            recorder = _Recorder(fx.graph_module, fx.activation_nodes)
            with torch.no_grad():
                for batch in _batches(calibration.float(), batch_size):
                    recorder.recorded = {}
                    recorder.run(batch)
                    yield recorder.recorded

        scales, zero_counts = activation_scales(recorded_batches, normalization, percentile, granularity)
    finally:
        model.train(was_training)
    if conversion == "rate":
        lambdas = {name: channel_lambdas(scales[name], network.populations[name].shape) for name in scales}
        apply_normalization(network, lambdas)
    for name, population in network.populations.items():
        if population.role != "hidden":
            pass
        elif conversion == "rate":
            population.neuron = NeuronSpec(threshold=1.0, reset=reset, v_init=v_init, v_init_seed=seed)
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
        "conversion_notes": fx.notes,
    })
    return network.validate()
