"""torchvision's classifier architectures, built with random weights (never downloaded).

torchvision's wheels on the package index are built against CUDA PyTorch: next to the CPU build,
``import torchvision`` loads no compiled ops and then fails (``RuntimeError: operator torchvision::nms does
not exist``) because ``torchvision/_meta_registrations.py`` registers a fake kernel for two ops of that
library whether or not it was loaded. The model definitions (``torchvision/models/*.py``) are plain
Python and use none of the compiled ops. So when that import fails, :func:`torchvision_models` declares
the two missing op schemas (no kernel: calling ``torchvision.ops.nms`` still fails, as it would anyway
without the extension) and imports again; where the extension loads, the first import simply works.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch
import torch.nn as nn

from neurodeploy.errors import ConfigError

#: architectures of the converter's table (``docs/converter.md``); name -> keyword arguments of the builder
ARCHITECTURES: dict[str, dict] = {
    "resnet18": {}, "resnet50": {}, "vgg11_bn": {}, "vgg16": {}, "mobilenet_v2": {}, "mobilenet_v3_small": {},
    "efficientnet_b0": {}, "densenet121": {}, "squeezenet1_0": {}, "googlenet": {"aux_logits": False,
                                                                                "init_weights": True},
    "shufflenet_v2_x0_5": {}, "regnet_x_400mf": {}, "alexnet": {},
}
#: op schemas torchvision's Python registers fake kernels for at import (torchvision 0.2x)
_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_library: torch.library.Library | None = None  # kept alive: the schemas live as long as it does


def torchvision_models() -> ModuleType:
    """``torchvision.models``, imported without torchvision's compiled ops where they do not load (see the
    module docstring). Raises :class:`ConfigError` when torchvision is not installed."""
    global _library
    try:
        import torchvision.models as models
        return models
    except ModuleNotFoundError:
        raise ConfigError("torchvision is not installed: pip install torchvision (in the 'dev' extra; with "
                          "-c constraints-cpu.txt next to the CPU build of PyTorch)") from None
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import's half-initialized modules
    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)
    import torchvision.models as models
    return models


def torchvision_model(name: str, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """The torchvision architecture ``name`` (one of :data:`ARCHITECTURES`) with ``num_classes`` outputs and
    random weights drawn under ``seed``, in eval mode."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown torchvision architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    builder = getattr(torchvision_models(), name)
    torch.manual_seed(seed)
    return builder(weights=None, num_classes=num_classes, **ARCHITECTURES[name]).eval()
