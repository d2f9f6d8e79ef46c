"""Delayed readout: the step from which the output population is read, chosen on calibration items.

In a deep network the first steps carry the transient of every layer: a layer's rate is wrong until its
inputs' rates have settled, and the output membrane O(t) = sum of the currents so far keeps that early
error in its sum. Reading O'(t) = O(t) - O(k) from step k on (``docs/semantics.md``, "Delayed readout")
drops it, at the price of integrating over t - k steps only. The best k depends on the network's depth
and on T; :func:`choose_readout_start` simulates the calibration items (training data, never test
data) for T steps once and picks the k whose delayed prediction at T agrees most often with the ANN's.
"""

from __future__ import annotations

import numpy as np
import torch

from neurodeploy.ir.network import Network


def agreement_by_start(readout: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``[T]``: for each k = 0 .. T - 1, the fraction of items whose prediction argmax(O(T) - O(k)) at the
    last step equals ``reference`` (O(0) = 0); ``readout [N, T, C]`` holds O(1) .. O(T)."""
    last = readout[:, -1]
    before = np.concatenate([np.zeros_like(readout[:, :1]), readout[:, :-1]], axis=1)  # O(k), k = 0 .. T - 1
    predictions = (last[:, None, :] - before).argmax(axis=2)
    return (predictions == reference[:, None]).mean(axis=0)


def choose_readout_start(network: Network, images: torch.Tensor, reference: np.ndarray, T: int,
                         batch_size: int = 250) -> dict:
    """Simulates ``images`` (calibration items) for ``T`` steps with the reference simulator (ideal
    profile, analog input) and returns ``{"readout_start": k, "T": T, "items": N, "agreement": at k,
    "agreement_without": at k = 0}``: the smallest k with the highest agreement with ``reference`` (the
    ANN's predicted classes)."""
    return readout_starts(network, images, reference, [T], batch_size)[T]


def readout_starts(network: Network, images: torch.Tensor, reference: np.ndarray, Ts: list[int],
                   batch_size: int = 250) -> dict[int, dict]:
    """:func:`choose_readout_start` for several T from one run of max(Ts) steps (the simulation is
    causal: the first T steps of a longer run are a run of T steps)."""
    from neurodeploy.backends import RunOptions, get_backend

    backend = get_backend("gpu")
    labels = torch.as_tensor(reference, dtype=torch.long)
    result = backend.run(network, images, labels, RunOptions(T=max(Ts), batch_size=batch_size, progress=False))
    readout = result.readout.astype(np.float64)
    choices = {}
    for T in Ts:
        agreement = agreement_by_start(readout[:, :T], np.asarray(reference))
        k = int(np.argmax(agreement))
        choices[T] = {"readout_start": k, "T": int(T), "items": int(len(images)), "agreement": float(agreement[k]),
                      "agreement_without": float(agreement[0])}
    return choices
