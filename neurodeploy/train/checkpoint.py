"""Model files: ``torch.save`` of a plain dict (architecture name, its arguments, state dict and
training record), loaded with ``weights_only=True`` so no code is unpickled."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from neurodeploy.errors import ModelFormatError
from neurodeploy.train.quantized import quantize_activations
from neurodeploy.train.zoo import build

FORMAT_NAME = "neurodeploy-model"
FORMAT_VERSION = 1


def save_model(path: str | Path, model: nn.Module, arch: str, input_shape, n_classes: int, record: dict,
               quant_bits: int | None = None, pooling: list[dict] | None = None) -> Path:
    """Writes a model file; ``quant_bits`` marks a model whose ReLUs were replaced by QuantReLU,
    ``pooling`` one with pools inserted by the fan-in pass (``passes.fan_in.plan_dense_pooling``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "arch": arch, "input_shape": list(input_shape),
        "n_classes": int(n_classes), "state_dict": model.state_dict(), "record": record,
        "quant_bits": quant_bits, "pooling": pooling or [],
    }, tmp)
    tmp.replace(path)
    return path


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Returns ``(model in eval mode, checkpoint dict without the state dict)``."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such model file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt archives
        first_line = (str(err).strip().splitlines() or [""])[0][:200]  # torch's messages run to many lines
        raise ModelFormatError(f"{path}: not a readable model file ({type(err).__name__}: {first_line})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}: not a {FORMAT_NAME} file (write one with `neurodeploy train`)")
    if checkpoint.get("version") != FORMAT_VERSION:
        raise ModelFormatError(f"{path}: model format version {checkpoint.get('version')} is not supported")
    model = build(checkpoint["arch"], tuple(checkpoint["input_shape"]), checkpoint["n_classes"])
    if checkpoint.get("pooling"):
        from neurodeploy.passes.fan_in import apply_dense_pooling

        model = apply_dense_pooling(model, tuple(checkpoint["input_shape"]), checkpoint["pooling"], init_weights=False)
    if checkpoint.get("quant_bits"):
        model = quantize_activations(model, int(checkpoint["quant_bits"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ModelFormatError(f"{path}: weights do not fit architecture {checkpoint['arch']!r}: {err}") from None
    model.eval()
    info = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    return model, info
