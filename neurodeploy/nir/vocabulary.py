"""The NIR vocabulary shared by the writer and the readers: the metadata format of docs/nir.md, the errors
and warnings, the lazy import of the optional ``nir`` package, and small array helpers."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.ops import AvgPool2d
from neurodeploy.ir.population import per_neuron

#: graph metadata ``format`` of files written here, and the version of the vocabulary (docs/nir.md)
NIR_FORMAT = "neurodeploy-nir"
NIR_FORMAT_VERSION = 2
#: seconds per step written when the caller gives none (the backends' 1 ms step)
DEFAULT_DT = 1e-3
#: "nir": faithful NIR; "sinabs": only what ``sinabs.from_nir`` imports (see docs/nir.md)
DIALECTS = ("nir", "sinabs")
#: discretizations of a foreign leaky node: exact exponential decay, or snnTorch's and Norse's Euler step
LEAK_RULES = ("exp", "euler")
#: how a foreign spiking node resets: "zero" to its v_reset (NIR's meaning), "subtract" v -= v_threshold in the
#: step of the spike (sinabs), "subtract-next" in the next step, after the leak (snnTorch's reset_delay)
NIR_RESETS = ("zero", "subtract", "subtract-next")
#: the import options each writer's graphs need (docs/nir.md, "Import options"): seconds per step, reset, leak
WRITERS: dict[str, dict] = {
    "nir": {"dt": None, "reset": "zero", "leak": "exp"},
    "sinabs": {"dt": 1.0, "reset": "subtract", "leak": "exp"},
    "snntorch": {"dt": 1e-4, "reset": "subtract-next", "leak": "euler"},
    "norse": {"dt": 1e-3, "reset": "zero", "leak": "euler"},
}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NIR_PIP = "nir==1.0.8"


@dataclass(frozen=True)
class ImportOptions:
    """How to read a graph that does not state its time step or reset (docs/nir.md, "Import options").

    writer: a preset of the three below for graphs written by that library (:data:`WRITERS`; None: "nir").
    dt: seconds per step (leaky nodes and Delay nodes need it); None: the preset's.
    reset: "zero" (to the node's v_reset, NIR's meaning), "subtract" (v -= v_threshold in the step of the spike:
        sinabs) or "subtract-next" (in the next step, after the leak: snnTorch); None: the preset's.
    leak: "exp" (decay exp(-dt / tau) per step) or "euler" (1 - dt / tau: snnTorch, Norse); None: the preset's.
    A value given here, not by the preset, is "given": the graph's own metadata still wins over it, with a note.
    """

    writer: str | None = None
    dt: float | None = None
    reset: str | None = None
    leak: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (("writer", self.writer, WRITERS), ("reset", self.reset, NIR_RESETS),
                                     ("leak", self.leak, LEAK_RULES)):
            if value is not None and value not in allowed:
                raise NIRError(f"NIR import option {name} {value!r}: choose from {', '.join(allowed)}")
        if self.dt is not None and not (isinstance(self.dt, int | float) and math.isfinite(self.dt) and self.dt > 0):
            raise NIRError(f"NIR import option dt {self.dt!r}: a positive number of seconds")

    @property
    def given(self) -> bool:
        """Whether any option was given (not all defaults)."""
        return any(v is not None for v in (self.writer, self.dt, self.reset, self.leak))

    def resolved(self) -> dict:
        """``{"writer", "dt", "reset", "leak"}``: the preset with the given values over it."""
        preset = WRITERS[self.writer or "nir"]
        return {"writer": self.writer or "nir", "dt": preset["dt"] if self.dt is None else float(self.dt),
                "reset": self.reset or preset["reset"], "leak": self.leak or preset["leak"]}


class NIRError(NeurodeployError):
    """A network cannot be written to NIR, or a NIR file cannot be read into the IR."""


class NIRNotInstalledError(NIRError):
    """The optional ``nir`` package is not installed."""


class NIRUnsupportedError(NIRError):
    """A NIR graph uses something outside the IR (recurrence, synaptic state, ...); the message
    names the node."""


class NIRWarning(UserWarning):
    """An assumption made while reading or writing NIR (e.g. NIR's reset-to-``v_reset``)."""


def _nir():
    try:
        import nir
    except ImportError:
        raise NIRNotInstalledError(
            f"NIR interchange needs the optional package 'nir': pip install '{NIR_PIP}' "
            "(or the project's 'nir' extra)") from None
    return nir


def _warn(message: str) -> None:
    warnings.warn(message, NIRWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# helpers shared by both directions


def _sanitize(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return text if text and not text[0].isdigit() else f"n_{text}"


class _Names:
    """Unique NIR node names (HDF5 group and torch module safe)."""

    def __init__(self, reserved: Iterable[str] = ("input", "output")):
        self.used = set(reserved)

    def take(self, wanted: str) -> str:
        base = _sanitize(wanted)
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _channel_form(value, shape: tuple[int, ...]) -> np.ndarray | None:
    """A per-neuron array as a scalar (0-d) or per-channel ``[C]`` array when it is constant enough,
    else None."""
    array = np.asarray(value)
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return np.asarray(flat[0])
    if array.shape == shape and len(shape) > 1:
        rows = array.reshape(shape[0], -1)
        if np.all(rows == rows[:, :1]):
            return rows[:, 0].copy()
        return None
    if array.ndim == 1:
        return array.copy()
    return None


def _scalar(value) -> float | int | bool | str:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _full(value, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    return per_neuron(value, shape).astype(dtype)



class _SumPool2d(AvgPool2d):
    """Sum pooling (the sinabs dialect's form of an average pool whose 1 / area was folded away)."""

    kind = "sumpool2d"

def _ungroup(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped convolution's weight ``[C_out, C_in / g, kh, kw]`` as the block-diagonal weight of the
    same convolution with one group ``[C_out, C_in, kh, kw]``."""
    c_out, c_in_g = weight.shape[:2]
    full = np.zeros((c_out, c_in_g * groups, *weight.shape[2:]), weight.dtype)
    per_group = c_out // groups
    for g in range(groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        full[rows, g * c_in_g:(g + 1) * c_in_g] = weight[rows]
    return full


def _regroup(weight: np.ndarray, groups: int) -> np.ndarray:
    """Inverse of :func:`_ungroup`."""
    c_out, c_in = weight.shape[:2]
    c_in_g, per_group = c_in // groups, c_out // groups
    return np.concatenate([weight[g * per_group:(g + 1) * per_group, g * c_in_g:(g + 1) * c_in_g]
                           for g in range(groups)])


