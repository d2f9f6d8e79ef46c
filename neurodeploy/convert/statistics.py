"""Exact dataset-level activation statistics, streamed over calibration batches.

Percentiles over millions of activations (``torch.quantile`` refuses more than 2^24 elements) are
computed exactly in three passes over the data: (1) counts, zeros and maxima per group, (2) a
histogram per group over (0, max], which locates the two order statistics the percentile needs, and
(3) a gather of the few values inside those bins, sorted to read the exact order statistics. The
percentile interpolates linearly between order statistics, as ``numpy.percentile`` does.

A group is a whole layer (granularity "layer") or one channel (granularity "neuron": channel = first
non-batch axis, so for dense layers each neuron is its own group).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from neurodeploy.errors import ConfigError

N_BINS = 4096
Method = str  # "max" | "percentile" (non-zero activations) | "percentile_all"


#: one scale per layer, or per channel (first axis after the batch; "neuron" in Dutson et al.'s words)
GRANULARITIES = ("layer", "neuron")


def grouped(activation: torch.Tensor, granularity: str) -> torch.Tensor:
    """``[B, C, ...]`` activations to ``[G, n]`` rows: one row per group."""
    x = activation.detach().to(torch.float64)
    if granularity == "layer":
        return x.reshape(1, -1)
    if granularity == "neuron":
        return x.transpose(0, 1).reshape(x.shape[1], -1)
    raise ConfigError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")


@dataclass
class _Counts:
    total: np.ndarray
    nonzero: np.ndarray
    maximum: np.ndarray


class ExactQuantiles:
    """Exact per-group percentile of a stream of ``[G, n]`` rows (all values must be >= 0)."""

    def __init__(self, n_groups: int, percentile: float, nonzero_only: bool):
        if not 0.0 <= percentile <= 100.0:
            raise ConfigError(f"percentile must lie in [0, 100], got {percentile}")
        self.n_groups = n_groups
        self.percentile = percentile
        self.nonzero_only = nonzero_only
        self.counts = _Counts(np.zeros(n_groups, np.int64), np.zeros(n_groups, np.int64),
                              np.zeros(n_groups, np.float64))

    def pass_counts(self, rows: torch.Tensor) -> None:
        self.counts.total += rows.shape[1]
        self.counts.nonzero += (rows != 0).sum(1).numpy()
        self.counts.maximum = np.maximum(self.counts.maximum, rows.max(1).values.numpy())

    def _prepare_ranks(self) -> None:
        """Ranks of the two order statistics among the positive values (-1: the value is 0)."""
        n = self.counts.nonzero if self.nonzero_only else self.counts.total
        zeros = 0 if self.nonzero_only else self.counts.total - self.counts.nonzero
        position = self.percentile / 100.0 * np.maximum(n - 1, 0)
        self.low, self.frac = np.floor(position).astype(np.int64), position - np.floor(position)
        self.high = np.minimum(self.low + 1, np.maximum(n - 1, 0))
        self.low_pos, self.high_pos = self.low - zeros, self.high - zeros
        self.width = np.where(self.counts.maximum > 0, self.counts.maximum / N_BINS, 1.0)
        self.histogram = np.zeros((self.n_groups, N_BINS), np.int64)

    def _bins(self, rows: torch.Tensor) -> torch.Tensor:
        width = torch.as_tensor(self.width)[:, None]
        return torch.clamp(torch.ceil(rows / width).long() - 1, 0, N_BINS - 1)

    def pass_histogram(self, rows: torch.Tensor) -> None:
        if not hasattr(self, "histogram"):
            self._prepare_ranks()
        positive = rows > 0
        index = self._bins(rows) + torch.arange(self.n_groups)[:, None] * N_BINS
        counts = torch.bincount(index[positive], minlength=self.n_groups * N_BINS)
        self.histogram += counts.reshape(self.n_groups, N_BINS).numpy()

    def _locate(self) -> None:
        """Bin holding each order statistic, and the rank of the first value of that bin."""
        cumulative = np.cumsum(self.histogram, axis=1)
        self.bins_low, self.bins_high, self.base = [], [], []
        for g in range(self.n_groups):
            ranks = [max(r, 0) for r in (self.low_pos[g], self.high_pos[g])]
            lo_bin, hi_bin = (int(np.searchsorted(cumulative[g], r, side="right")) for r in ranks)
            self.bins_low.append(min(lo_bin, N_BINS - 1))
            self.bins_high.append(min(hi_bin, N_BINS - 1))
            self.base.append(int(cumulative[g][lo_bin - 1]) if lo_bin > 0 else 0)
        self.gathered: list[list[torch.Tensor]] = [[] for _ in range(self.n_groups)]

    def pass_gather(self, rows: torch.Tensor) -> None:
        if not hasattr(self, "gathered"):
            self._locate()
        bins = self._bins(rows)
        for g in range(self.n_groups):
            mask = (rows[g] > 0) & (bins[g] >= self.bins_low[g]) & (bins[g] <= self.bins_high[g])
            self.gathered[g].append(rows[g][mask])

    def result(self) -> np.ndarray:
        out = np.zeros(self.n_groups, np.float64)
        for g in range(self.n_groups):
            values = torch.sort(torch.cat(self.gathered[g])).values.numpy() if self.gathered[g] else np.zeros(0)

            def order_statistic(pos: int, g: int = g, values: np.ndarray = values) -> float:
                return 0.0 if pos < 0 or values.size == 0 else float(values[min(pos - self.base[g], values.size - 1)])

            lo, hi = order_statistic(self.low_pos[g]), order_statistic(self.high_pos[g])
            out[g] = lo + self.frac[g] * (hi - lo)
        return out


def activation_scales(
    batches: Callable[[], Iterable[dict[str, torch.Tensor]]],
    method: Method,
    percentile: float,
    granularity: str,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, int]]]:
    """Scale lambda per group for every recorded layer.

    batches: a callable returning a fresh iterable of ``{layer: activation [B, C, ...]}`` dicts (it is
        called once per pass).
    Returns ``(scales, zero_counts)``: scales per layer (shape ``[G]``; layer granularity has G = 1)
    and ``(zeros, total)`` activation counts per layer (for activation sparsity).
    """
    if method not in ("max", "percentile", "percentile_all"):
        raise ConfigError(f"normalization must be 'max', 'percentile' or 'percentile_all', not {method!r}")
    quantiles: dict[str, ExactQuantiles] = {}
    for acts in batches():
        for name, act in acts.items():
            rows = grouped(act, granularity)
            if name not in quantiles:
                quantiles[name] = ExactQuantiles(rows.shape[0], percentile if method != "max" else 100.0,
                                                 nonzero_only=method == "percentile")
            quantiles[name].pass_counts(rows)
    zero_counts = {
        name: (int((q.counts.total - q.counts.nonzero).sum()), int(q.counts.total.sum()))
        for name, q in quantiles.items()
    }
    if method == "max":
        return {name: q.counts.maximum for name, q in quantiles.items()}, zero_counts
    for step in ("pass_histogram", "pass_gather"):
        for acts in batches():
            for name, act in acts.items():
                getattr(quantiles[name], step)(grouped(act, granularity))
    return {name: q.result() for name, q in quantiles.items()}, zero_counts
