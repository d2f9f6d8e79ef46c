"""The neuron scan of the int8 path fused into one C++ pass per item and chunk (``csrc/fused_if.cpp``).

A hidden integrate-and-fire layer whose spikes are read only by int8 projections (``binary_ops``) needs its
spikes only as uint8 and its counts only as totals per item and step. The eager scan
(:func:`neurons.integrate_and_fire`) takes about five passes over the membrane per step and writes float32
spikes, which the count (a matrix product) and every int8 reader (a conversion to uint8) read again. Here one
pass per step and item adds the input, tests the threshold, resets, writes the uint8 spike and sums the
step's spikes and synaptic events (each spike times its neuron's fan-out), with the same float32 operations
in the same order as the eager scan, so the membranes and spikes are identical (``tests/test_fused.py``).

The kernel is built once per machine with PyTorch's C++ extension loader (a C++ compiler and ninja are
needed; the build is cached under ``TORCH_EXTENSIONS_DIR``). Where it cannot be built the engine keeps the
eager scan: :func:`kernel` returns None.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "fused_if.cpp"


#: vector instructions the build may use, by PyTorch's reading of this CPU (the build is named after it, so a
#: cached build never runs on a CPU without them)
VECTOR_FLAGS = {"AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
                "AVX2": ["-mavx2", "-mfma"]}


def extension_name() -> str:
    """The extension's name: named after this CPU's vector instructions (:data:`VECTOR_FLAGS`)."""
    return f"neurodeploy_fused_if_{torch.backends.cpu.get_cpu_capability().lower()}"


@functools.cache
def kernel():
    """The built extension (its ``if_chunk``), or None where it cannot be built."""
    try:
        from torch.utils.cpp_extension import load

        capability = torch.backends.cpu.get_cpu_capability()
        return load(name=extension_name(), sources=[str(SOURCE)],
                    extra_cflags=["-O3", "-ffp-contract=off", *VECTOR_FLAGS.get(capability, [])], verbose=False)
    except Exception:  # no compiler, no ninja, headers missing: the eager scan stays
        return None


#: what the first build takes on one core, as a job announces it (about a minute on the project's machines)
BUILD_TIME = "~1 min"


def library_path() -> Path:
    """Where the loader keeps the built library: ``<TORCH_EXTENSIONS_DIR or PyTorch's default root>/<name>/<name>.so``
    (PyTorch's own rule for the folder, which it makes when missing)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(extension_name(), verbose=False)) / f"{extension_name()}.so"


def stale(library: Path) -> bool:
    """Whether the loader has to build ``library`` again: it is missing or older than the source."""
    return not library.is_file() or library.stat().st_mtime < SOURCE.stat().st_mtime


def build_pending() -> bool:
    """Whether the next :func:`kernel` call builds the extension (about a minute, :data:`BUILD_TIME`): it was not
    loaded in this process, a compiler and ninja are there, and the cached library is :func:`stale`. A job
    announces the build from this before it starts (``GpuBackend.build_estimate``). A cached library built by other
    compiler flags (another PyTorch) is rebuilt without being announced."""
    import shutil

    from torch.utils.cpp_extension import is_ninja_available

    if kernel.cache_info().currsize:  # loaded, or found unbuildable, in this process
        return False
    if not is_ninja_available() or shutil.which(os.environ.get("CXX", "c++")) is None:
        return False  # the build fails at once and the eager scan stays: nothing to wait for
    try:
        library = library_path()
    except (ImportError, OSError):  # another PyTorch's layout, an unwritable folder: nothing to say
        return False
    return stale(library)


@dataclass
class FusedNeuron:
    """A layer's constants for the fused scan, each over its neurons in memory order (``[N]``)."""

    theta: torch.Tensor  # float32 threshold per neuron
    fan: torch.Tensor  # int32 fan-out (synapses) per neuron
    reset_to_zero: bool  # reset "zero" to 0 instead of subtracting theta
    wide: bool  # some fan-out is 2^15 or more: events summed in int64 (else in int32 blocks, vectorized)


def memory_order(tensor: torch.Tensor, lead: int, shape: tuple[int, ...], channels_last: bool) -> torch.Tensor:
    """``tensor [*lead dims, *shape]`` as ``[*lead dims, N]`` with its neurons in ``channels_last`` memory order
    ((h, w, c) for a ``(C, H, W)`` shape): a view when the tensor has that layout, else a copy."""
    if channels_last and len(shape) == 3:
        tensor = tensor.permute(*range(lead), lead + 1, lead + 2, lead)
    return tensor.reshape(*tensor.shape[:lead], -1).contiguous()


def spike_buffer(steps: int, batch: int, shape: tuple[int, ...], channels_last: bool, device) -> torch.Tensor:
    """An empty uint8 ``[steps, batch, *shape]`` whose every step is channels-last when ``channels_last``."""
    if channels_last and len(shape) == 3:
        flat = torch.empty((steps * batch, *shape), dtype=torch.uint8, device=device,
                           memory_format=torch.channels_last)
        return flat.view(steps, batch, *shape)
    return torch.empty((steps, batch, *shape), dtype=torch.uint8, device=device)


def scan(fused: FusedNeuron, v_flat: torch.Tensor, dynamic: torch.Tensor | None, constant: torch.Tensor | None,
         spikes_flat: torch.Tensor, counts: torch.Tensor) -> None:
    """Advances ``v_flat [B, N]`` (float32, in place) over the steps of ``spikes_flat [S, B, N]`` (uint8, out)
    with input ``dynamic [S, B, N]`` and ``constant [1 or B, N]`` (either may be None), writing each step's
    spikes and synaptic events into ``counts [S, B, 2]`` (float32)."""
    kernel().if_chunk(v_flat, dynamic, constant, fused.theta, fused.fan, fused.reset_to_zero, fused.wide, spikes_flat,
                      counts)
