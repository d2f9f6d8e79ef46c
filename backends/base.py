"""What every backend offers, and the batched runner that makes long runs resumable."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from neurodeploy.errors import DataError, ResultFormatError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir.network import Network


@dataclass(frozen=True)
class ExitPolicy:
    """Dynamic Confidence early exit: stop an item at the first step whose confidence log-odds
    log(C_t / (1 - C_t)), C_t = max softmax(O_t / alpha), exceed ``threshold_log_odds``."""

    alpha: float
    threshold_log_odds: float

    @staticmethod
    def from_confidence(alpha: float, confidence: float) -> ExitPolicy:
        """From a confidence threshold c in (0, 1)."""
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"a confidence threshold lies in (0, 1), got {confidence}")
        return ExitPolicy(alpha, math.log(confidence / (1.0 - confidence)))


@dataclass
class RunOptions:
    """Options shared by all backends.

    T: number of time steps (dt = 1 ms each).
    batch_size: items simulated together (and the unit of checkpointing).
    encoding: "analog" (pixel value as input current every step), "if" (deterministic IF encoder)
        or "poisson" (Bernoulli spikes with p = |x| each step, signed).
    seed: seeds the Poisson encoder and any other randomness of the backend.
    progress: show a progress bar.
    exit_policy: stop items early by confidence (backends that cannot say so).
    record_neuron_counts: also return every neuron's spike count over the run
        (``SimulationResult.neuron_counts``), for spike-for-spike checks between backends.
    """

    T: int = 100
    batch_size: int = 500
    encoding: str = "analog"
    seed: int = 0
    progress: bool = True
    exit_policy: ExitPolicy | None = None
    record_neuron_counts: bool = False


class Backend(Protocol):
    name: str

    def run(self, network: Network, inputs: torch.Tensor, labels: torch.Tensor, options: RunOptions,
            checkpoint_dir: str | Path | None = None) -> SimulationResult:
        """Simulates every item of ``inputs`` ``[N, *input_shape]`` for ``options.T`` steps."""
        ...


def check_inputs(network: Network, inputs: torch.Tensor, labels: torch.Tensor) -> None:
    """Raises DataError when inputs do not fit the network's input population."""
    expected = network.input.shape
    if tuple(inputs.shape[1:]) != tuple(expected):
        hint = (" (its fan-in pass moved the input's pooling to the host: pass the items through "
                "neurodeploy.passes.fan_in.pool_inputs first)" if network.metadata.get("input_pooling") else "")
        raise DataError(f"inputs have shape {tuple(inputs.shape[1:])} per item, the network expects {expected}{hint}")
    if labels.shape[0] != inputs.shape[0]:
        raise DataError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels")
    if not torch.isfinite(inputs).all():
        raise DataError("inputs contain NaN or infinite values")


def run_in_batches(
    simulate_batch: Callable[[torch.Tensor, torch.Tensor, int], SimulationResult],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    description: str = "simulating",
) -> SimulationResult:
    """Runs ``simulate_batch(x, y, first_item_index)`` over batches and joins the results.

    With ``checkpoint_dir`` every finished batch is written there as ``batch_<first item>.npz``, and
    batches already present (from an interrupted run with the same batch size) are loaded instead of
    simulated again, so a long run resumes where it stopped.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be positive, got {batch_size}")
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    parts = []
    starts = list(range(0, inputs.shape[0], batch_size))
    bar = tqdm(total=inputs.shape[0], desc=description, unit="item", disable=not progress, leave=False)
    for start in starts:
        stop = min(start + batch_size, inputs.shape[0])
        path = folder / f"batch_{start:07d}.npz" if folder is not None else None
        part = None
        if path is not None and path.exists():
            try:
                part = SimulationResult.load(path)
            except ResultFormatError:
                part = None  # a batch cut off mid-write: simulate it again
            if part is not None and part.n_items != stop - start:
                part = None
        if part is None:
            part = simulate_batch(inputs[start:stop], labels[start:stop], start)
            if path is not None:
                tmp = path.with_suffix(".tmp.npz")
                part.save(tmp)
                tmp.replace(path)
        parts.append(part)
        bar.update(stop - start)
    bar.close()
    result = SimulationResult.concatenate(parts)
    result.labels = np.asarray(result.labels, dtype=np.int64)
    return result
