"""Quantized activations for low-latency conversion (QCFS / QFFS; Li et al. ICCV 2023 build on them).

``QuantReLU`` is the LSQ-style quantized ReLU a(x) = s * clip(round(x / s), 0, Q), Q = 2^bits - 1,
with a learned step s (straight-through rounding, LSQ gradient scale 1 / sqrt(n Q)). An IF neuron with
threshold theta = s * Q, initial membrane theta / 2 and reset by subtraction reproduces it after Q
steps (QCFS); the converter reads ``step`` and ``levels`` from the module.

After T steps of a constant input z the same neuron has fired round(z T / theta) times (clipped to
[0, T]): the SNN computes a T-level staircase of the same clip range, which tends to the clipped ramp
clip(z, 0, theta) as T grows. A network fine-tuned at exactly Q levels can learn to depend on the
coarse staircase (pre-activations piled in the dead zone (0, s / 2), or a bias sitting on a rounding
edge, e.g. the zero background of MNIST digits) and then fails at every T > Q: a 2-bit resnet_small
scored 91.6 % as a quantized ANN and 38 % with the ramp (and as an SNN at T = 32). With
``resolution="mixed"`` (the default) each training batch draws one of three schedules with equal
probability: the whole network at Q levels; the whole network at one finer resolution Q * 2^j (j uniform
in 1 .. 4, the same clip); or each QuantReLU at its own Q * 2^j (j uniform in 0 .. 4). The ANN then stays
accurate at Q levels, at the finer resolutions the SNN runs at for larger T, and when its layers are off
their levels by different amounts, as an SNN's layers are while it settles. Evaluation always uses Q
levels. The draw is made by a forward pre-hook that :func:`quantize_activations` puts on the model's root.
``resolution="fixed"`` trains at Q levels only.
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


#: training resolutions of :class:`QuantReLU`: "mixed" (Q * 2^j levels, j uniform in 0..MAX_DOUBLINGS) or "fixed"
RESOLUTIONS = ("mixed", "fixed")
MAX_DOUBLINGS = 4
#: the "mixed" schedules, each drawn for a third of the training batches
SCHEDULES = ("Q levels everywhere", "one finer resolution everywhere", "a resolution per layer")


class QuantReLU(nn.Module):
    """LSQ quantized ReLU with ``bits`` bits; the step is initialized from the first training batch
    (or by :func:`calibrate_steps`). ``resolution`` chooses the levels used in training (module
    docstring); evaluation always uses Q = 2^bits - 1 levels."""

    def __init__(self, bits: int = 2, resolution: str = "mixed"):
        super().__init__()
        if bits < 1:
            raise ConfigError(f"bits must be at least 1, got {bits}")
        if resolution not in RESOLUTIONS:
            raise ConfigError(f"resolution must be one of {RESOLUTIONS}, not {resolution!r}")
        self.bits = bits
        self.resolution = resolution
        self.levels = 2**bits - 1
        self.finer = 1  # training resolution Q * finer, set per batch by the model's resolution hook
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
        y = torch.clamp(x / step, 0, self.levels)
        finer = getattr(self, "finer", 1)
        if self.training and finer > 1:
            return _round_ste(y * finer) / finer * step
        return _round_ste(y) * step

    def extra_repr(self) -> str:
        return f"bits={self.bits}, resolution={getattr(self, 'resolution', 'fixed')}"


def draw_resolution(model: nn.Module, args) -> None:
    """Forward pre-hook of a model with "mixed" QuantReLUs: in training, draws one of :data:`SCHEDULES`
    (every QuantReLU at Q levels; all at one Q * 2^j, j uniform in 1 .. ``MAX_DOUBLINGS``; or each at its
    own Q * 2^j, j uniform in 0 .. ``MAX_DOUBLINGS``)."""
    if not model.training:
        return
    schedule = int(torch.randint(0, len(SCHEDULES), ()))
    shared = 1 if schedule == 0 else 2 ** int(torch.randint(1, MAX_DOUBLINGS + 1, ()))
    for module in model.modules():
        if isinstance(module, QuantReLU) and module.resolution == "mixed":
            module.finer = shared if schedule < 2 else 2 ** int(torch.randint(0, MAX_DOUBLINGS + 1, ()))


def quantize_activations(model: nn.Module, bits: int, resolution: str = "mixed") -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` replaced by ``QuantReLU(bits, resolution)``; with
    "mixed" the copy gets the :func:`draw_resolution` hook."""
    quantized = copy.deepcopy(model)
    for module in list(quantized.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, QuantReLU(bits, resolution))
    if resolution == "mixed":
        quantized.register_forward_pre_hook(draw_resolution)
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
                       progress: bool = True, resolution: str = "mixed") -> tuple[nn.Module, dict]:
    """Quantizes the hidden activations of a trained full-precision ``model`` (the output stays full
    precision) and fine-tunes it (``resolution``: see the module docstring); returns the quantized
    model (eval mode) and its training record."""
    quantized = quantize_activations(model, bits, resolution)
    calibrate_steps(quantized, train.images[:1000])
    record = train_model(quantized, train, config, progress=progress)
    return quantized, record
