"""Model files: ``torch.save`` of a plain dict (architecture name, its arguments, state dict and
training record), loaded with ``weights_only=True`` so no code is unpickled.

Reading is strict: only a regular file is opened; it must be the zip archive ``torch.save`` writes,
its members stored or deflated and inflating to a bounded size (:mod:`neurodeploy.safe_io`); the
dict must match :class:`CheckpointSchema` exactly (pydantic, strict: the architecture one of the zoo's,
integers where integers are meant, bounded sizes, a state dict of tensors, a JSON-like record); the
architecture is first built on PyTorch's ``meta`` device (nothing allocated) and every tensor of the
state dict must have the name, shape and dtype it expects, and be finite, before the model is built.
Every failure is one :class:`ModelFormatError` line naming the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from neurodeploy.errors import ModelFormatError
from neurodeploy.safe_io import Budget, SafeZip, clip, open_regular, pydantic_message
from neurodeploy.train.quantized import quantize_activations
from neurodeploy.train.zoo import ARCHITECTURES, build

FORMAT_NAME = "neurodeploy-model"
FORMAT_VERSION = 1
#: largest input a model file may declare (elements per item)
MAX_INPUT_ELEMENTS = 1 << 24


class _PoolingStep(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    flatten_index: Annotated[int, Field(ge=0, lt=4096)]
    factor: Annotated[int, Field(ge=1, le=64)]


class CheckpointSchema(BaseModel):
    """What a model file's dict must hold."""

    model_config = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)
    format: Literal["neurodeploy-model"]
    version: Annotated[int, Field(ge=FORMAT_VERSION, le=FORMAT_VERSION)]
    arch: Literal[tuple(ARCHITECTURES)]  # type: ignore[valid-type]
    input_shape: Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1, max_length=4)]
    n_classes: Annotated[int, Field(ge=1, le=100_000)]
    state_dict: dict[str, torch.Tensor]
    record: dict[str, JsonValue]
    quant_bits: Annotated[int, Field(ge=1, le=8)] | None
    pooling: Annotated[list[_PoolingStep], Field(max_length=64)]


def save_model(path: str | Path, model: nn.Module, arch: str, input_shape, n_classes: int, record: dict,
               quant_bits: int | None = None, pooling: list[dict] | None = None) -> Path:
    """Writes a model file; ``quant_bits`` marks a model whose ReLUs were replaced by QuantReLU,
    ``pooling`` one with pools inserted by the fan-in pass (``passes.fan_in.plan_dense_pooling``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "arch": arch, "input_shape": [int(s) for s in input_shape],
        "n_classes": int(n_classes), "state_dict": model.state_dict(), "record": record,
        "quant_bits": None if quant_bits is None else int(quant_bits), "pooling": pooling or [],
    }, tmp)
    tmp.replace(path)
    return path


_REFUSED = re.compile(r"\bGLOBAL\b")


def _torch_load(path: Path) -> object:
    handle, info = open_regular(path, ModelFormatError, "model file")
    with handle:
        archive = SafeZip(handle, ModelFormatError, str(path), Budget(info.st_size, ModelFormatError, str(path)),
                          what="model file (torch.save writes a zip archive)")
        archive.verify()  # sizes within the budget, every member's CRC right (torch.load checks none)
        handle.seek(0)
        try:
            return torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for corrupt or refused archives
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            refused = next((line for line in lines if _REFUSED.search(line)), None)
            if refused:  # torch's weights-only unpickler met a global (code) it does not admit
                detail = re.sub(r"^WeightsUnpickler error: ", "", refused).split(" Please use")[0][:160]
                raise ModelFormatError(f"{path}: refusing to load code from a model file ({detail}); only tensors "
                                       "and plain data are read") from None
            detail = next((line for line in lines if "nsupported" in line), lines[0] if lines else "")[:200]
            raise ModelFormatError(f"{path}: not a readable model file ({type(err).__name__}: {detail})") from None


def _build(checkpoint: CheckpointSchema) -> nn.Module:
    model = build(checkpoint.arch, tuple(checkpoint.input_shape), checkpoint.n_classes)
    if checkpoint.pooling:
        from neurodeploy.passes.fan_in import apply_dense_pooling

        model = apply_dense_pooling(model, tuple(checkpoint.input_shape), [p.model_dump() for p in checkpoint.pooling],
                                    init_weights=False)
    if checkpoint.quant_bits:
        model = quantize_activations(model, checkpoint.quant_bits)
    return model


def _check_state(path: Path, checkpoint: CheckpointSchema) -> None:
    """Builds the architecture on the meta device and compares every tensor's name, shape and dtype."""
    what = (f"{checkpoint.arch} for input_shape {checkpoint.input_shape}, {checkpoint.n_classes} classes"
            + (f", pooling {[p.model_dump() for p in checkpoint.pooling]}" if checkpoint.pooling else ""))
    try:
        with torch.device("meta"):
            expected = _build(checkpoint).state_dict()
    except Exception as err:  # the zoo's constructors refuse shapes in many ways
        raise ModelFormatError(f"{path}: the file describes a model that cannot be built ({what}: "
                               f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})"
                               ) from None
    given = checkpoint.state_dict
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        problem = f"lacks {clip(missing[0])}" if missing else f"has the unexpected {clip(unexpected[0])}"
        raise ModelFormatError(f"{path}: state_dict {problem} ({len(missing)} missing, {len(unexpected)} unexpected "
                               f"for {what})")
    for key, tensor in expected.items():
        found = given[key]
        if tuple(found.shape) != tuple(tensor.shape) or found.dtype != tensor.dtype:
            raise ModelFormatError(f"{path}: state_dict[{key!r}] is {found.dtype} {list(found.shape)}, {what} needs "
                                   f"{tensor.dtype} {list(tensor.shape)}")
        if found.layout != torch.strided or found.is_quantized or found.device.type != "cpu":
            raise ModelFormatError(f"{path}: state_dict[{key!r}] is not a plain dense CPU tensor")
        if found.is_floating_point() and not bool(torch.isfinite(found).all()):
            raise ModelFormatError(f"{path}: state_dict[{key!r}] contains NaN or infinite values")


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Returns ``(model in eval mode, checkpoint dict without the state dict)``."""
    path = Path(path)
    raw = _torch_load(path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}: not a {FORMAT_NAME} file (write one with `neurodeploy train`)")
    if type(raw.get("version")) is not int or raw.get("version") != FORMAT_VERSION:
        raise ModelFormatError(f"{path}: model format version {clip(raw.get('version'))} is not supported")
    try:
        checkpoint = CheckpointSchema.model_validate(raw)
    except ValidationError as err:
        raise ModelFormatError(f"{path}: {pydantic_message(err)}") from None
    elements = 1
    for size in checkpoint.input_shape:
        elements *= size
    if elements > MAX_INPUT_ELEMENTS:
        raise ModelFormatError(f"{path}: input_shape {checkpoint.input_shape} has {elements:,} elements per item, "
                               f"more than the {MAX_INPUT_ELEMENTS:,} allowed")
    _check_state(path, checkpoint)
    model = _build(checkpoint)
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as err:
        first_line = next((line.strip() for line in str(err).splitlines() if line.strip()), "")[:200]
        raise ModelFormatError(f"{path}: weights do not fit architecture {checkpoint.arch!r}: {first_line}") from None
    model.eval()
    info = {k: v for k, v in raw.items() if k != "state_dict"}
    return model, info
