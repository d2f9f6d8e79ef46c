"""Quantized activations for low-latency conversion (QCFS / QFFS; Li et al. ICCV 2023 build on them).

``QuantReLU`` is the LSQ-style quantized ReLU a(x) = s * clip(round(x / s), 0, Q), Q = 2^bits - 1,
with a learned step s (straight-through rounding, LSQ gradient scale 1 / sqrt(n Q)). An IF neuron with
threshold theta = s * Q, initial membrane theta / 2 and reset by subtraction reproduces it after Q
steps (QCFS); the converter reads ``step`` and ``levels`` from the module.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from neurodeploy.data.datasets import Split
from neurodeploy.errors import ConfigError
from neurodeploy.train.trainer import TrainConfig, train_model


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x * factor + (x - x * factor).detach()


class QuantReLU(nn.Module):
    """LSQ quantized ReLU with ``bits`` bits; the step is initialized from the first training batch
    (or by :func:`calibrate_steps`)."""

    def __init__(self, bits: int = 2):
        super().__init__()
        if bits < 1:
            raise ConfigError(f"bits must be at least 1, got {bits}")
        self.bits = bits
        self.levels = 2**bits - 1
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def init_step(self, x: torch.Tensor) -> None:
        """s = 99.9th percentile of the positive pre-activations / Q (never below 1e-3)."""
        positive = x.detach().flatten()
        positive = positive[positive > 0]
        if positive.numel():
            k = max(1, int(math.ceil(0.999 * positive.numel())))
            top = positive.kthvalue(k).values
        else:
            top = torch.tensor(1.0)
        self.step.data.fill_(max(float(top) / self.levels, 1e-3))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.initialized):
            self.init_step(x)
        n = x[0].numel()
        step = _scale_grad(self.step.abs() + 1e-8, 1.0 / math.sqrt(n * self.levels))
        return _round_ste(torch.clamp(x / step, 0, self.levels)) * step

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def quantize_activations(model: nn.Module, bits: int) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` replaced by ``QuantReLU(bits)``."""
    quantized = copy.deepcopy(model)
    for module in list(quantized.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, QuantReLU(bits))
    return quantized


def calibrate_steps(model: nn.Module, images: torch.Tensor) -> None:
    """Initializes every QuantReLU step from one forward pass on ``images``."""
    handles = []
    for module in model.modules():
        if isinstance(module, QuantReLU):
            handles.append(module.register_forward_pre_hook(lambda m, args: m.init_step(args[0])))
    model.eval()
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()


def finetune_quantized(model: nn.Module, train: Split, bits: int, config: TrainConfig,
                       progress: bool = True) -> tuple[nn.Module, dict]:
    """Quantizes the hidden activations of a trained full-precision ``model`` (the output stays full
    precision) and fine-tunes it; returns the quantized model (eval mode) and its training record."""
    quantized = quantize_activations(model, bits)
    calibrate_steps(quantized, train.images[:1000])
    record = train_model(quantized, train, config, progress=progress)
    return quantized, record
