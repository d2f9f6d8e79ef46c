"""The search space of the scale optimizer: per-channel scale factors (and optionally initial membranes)
of a converted network's hidden populations.

A rate-converted network has threshold 1 and spikes that carry the threshold as amplitude, so giving
channel c of population l the threshold theta_lc = exp(z_lc) is exactly the normalization
W_ij <- W_ij * lambda_j / lambda_i with lambda_lc multiplied by exp(z_lc) (``docs/semantics.md``, "Conversion"): the
weights need not be touched. The vector ``z`` (log scale factors, 0 = the heuristic scaling H0) holds
every hidden channel, populations in topological order. With ``v_init`` the space also holds one
initial membrane u_l per population, as a fraction of the threshold (v0 = u_l * theta, in [0, 1)). With
``silence`` (an order of each population's channels, :func:`neurodeploy.optimize.silence.silence_order`) it
ends with one fraction f_l per population in [0, MAX_SILENCED]: the first floor(f_l * channels) channels of
that order are silenced (threshold :data:`~neurodeploy.optimize.silence.SILENT_THRESHOLD`: they never fire).

A *grouping* ties channels together for coarse search: group g of population l moves all its
channels by the same log factor. Groups are formed from channels of similar heuristic scale lambda.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.network import Network
from neurodeploy.optimize.silence import SILENT_THRESHOLD

#: the conversion features (``neurodeploy.ir.population.CONVERSION_FEATURES``) of the networks the scale optimizer
#: takes: none (it scales rate-converted IF neurons); a job checks its conversion against it before any work
#: (``neurodeploy.jobs.config.check_optimizable``)
NEURON_FEATURES: frozenset[str] = frozenset()

#: the largest fraction of a population's channels the search may silence
MAX_SILENCED = 0.9


@dataclass(frozen=True)
class ScaleSpace:
    """Which populations are scaled, and where their channels sit in the parameter vector.

    populations: hidden population names (topological order); channels: channels of each.
    v_init: True when the vector holds one initial-membrane fraction per population after the scales.
    silence: per population, its channels in the order they are silenced; the vector then ends with one
    silenced fraction per population (None: nothing is silenced).
    """

    populations: tuple[str, ...]
    channels: tuple[int, ...]
    v_init: bool = False
    silence: tuple[tuple[int, ...], ...] | None = None

    @staticmethod
    def of(network: Network, v_init: bool = False, silence: tuple[tuple[int, ...], ...] | None = None
           ) -> ScaleSpace:
        hidden = [p for p in (network.populations[n] for n in network.topological_order()) if p.role == "hidden"]
        if not hidden:
            raise NeurodeployError("the network has no hidden population to optimize")
        for population in hidden:
            used = [f for f in population.neuron.conversion_features() if f not in NEURON_FEATURES]
            if used:
                raise NeurodeployError(f"population {population.name!r} has {' and '.join(used)} (QFFS neurons); the "
                                       "scale optimizer works on rate-converted networks without them")
        channels = tuple(p.shape[0] for p in hidden)
        if silence is not None and (len(silence) != len(channels) or any(
                sorted(order) != list(range(c)) for order, c in zip(silence, channels, strict=True))):
            raise NeurodeployError("the silence order needs every channel of every hidden population once")
        return ScaleSpace(tuple(p.name for p in hidden), channels, v_init, silence)

    @property
    def n_scales(self) -> int:
        return sum(self.channels)

    @property
    def n_v_init(self) -> int:
        return len(self.populations) if self.v_init else 0

    @property
    def silence_offset(self) -> int:
        """Where the silenced fractions start in the vector."""
        return self.n_scales + self.n_v_init

    @property
    def size(self) -> int:
        """Length of the full parameter vector."""
        return self.silence_offset + (len(self.populations) if self.silence is not None else 0)

    def silenced(self, x: np.ndarray) -> list[np.ndarray]:
        """Per population, the channels ``x`` silences (the first floor(f_l * channels) of its order)."""
        if self.silence is None:
            return [np.zeros(0, np.int64) for _ in self.populations]
        fractions = np.clip(np.asarray(x, np.float64)[self.silence_offset:], 0.0, MAX_SILENCED)
        return [np.asarray(order[:int(np.floor(f * len(order) + 1e-9))], np.int64)
                for order, f in zip(self.silence, fractions, strict=True)]

    def offsets(self) -> np.ndarray:
        """Start of each population's channels in the vector, plus the end: ``[P + 1]``."""
        return np.concatenate([[0], np.cumsum(self.channels)])

    def start(self, network: Network) -> np.ndarray:
        """The vector of the network as converted (H0): log factors 0, and the initial membranes it has
        (0.5 for "half", 0 for "zero" and for "uniform", whose draws the fraction then replaces; for a
        value or array, e.g. a calibrated one, the mean of v0 / theta)."""
        x = np.zeros(self.size)
        if self.v_init:
            for i, name in enumerate(self.populations):
                neuron = network.populations[name].neuron
                if isinstance(neuron.v_init, str):
                    x[self.n_scales + i] = 0.5 if neuron.v_init == "half" else 0.0
                else:
                    ratio = np.asarray(neuron.v_init, np.float64) / np.asarray(neuron.threshold, np.float64)
                    x[self.n_scales + i] = float(np.clip(ratio.mean(), 0.0, 0.999))
        return x

    def bounds(self, max_factor: float) -> tuple[np.ndarray, np.ndarray]:
        """Scale factors within [1/max_factor, max_factor]; membrane fractions within [0, 1); silenced
        fractions within [0, MAX_SILENCED]."""
        lower = np.full(self.size, -np.log(max_factor))
        upper = np.full(self.size, np.log(max_factor))
        if self.v_init:
            lower[self.n_scales:self.silence_offset], upper[self.n_scales:self.silence_offset] = 0.0, 0.999
        lower[self.silence_offset:], upper[self.silence_offset:] = 0.0, MAX_SILENCED
        return lower, upper

    def apply(self, network: Network, x: np.ndarray) -> Network:
        """A copy of ``network`` with thresholds (and initial membranes) set from ``x``; projections and
        biases are shared with ``network``, not copied."""
        x = np.asarray(x, np.float64)
        if x.shape != (self.size,):
            raise NeurodeployError(f"parameter vector has shape {x.shape}, the space needs ({self.size},)")
        out = copy.copy(network)
        out.populations = dict(network.populations)
        offsets = self.offsets()
        silenced = self.silenced(x)
        for i, name in enumerate(self.populations):
            population = copy.copy(network.populations[name])
            neuron = copy.copy(population.neuron)
            base = np.broadcast_to(np.asarray(neuron.threshold, np.float64), (self.channels[i],))
            neuron.threshold = (base * np.exp(x[offsets[i]:offsets[i + 1]])).astype(np.float32)
            neuron.threshold[silenced[i]] = SILENT_THRESHOLD
            if self.v_init:
                neuron.v_init = (x[self.n_scales + i] * neuron.threshold).astype(np.float32)
            population.neuron = neuron
            population.metadata = {**population.metadata,
                                   "optimized_scale_factor_mean": float(np.exp(x[offsets[i]:offsets[i + 1]]).mean())}
            if self.silence is not None:
                population.metadata["silenced_channels"] = [int(c) for c in silenced[i]]
            out.populations[name] = population
        return out


def channel_groups(network: Network, space: ScaleSpace, groups_per_population: int | None) -> np.ndarray:
    """Group index of every channel, ``[n_scales]``: each population's channels sorted by their
    heuristic scale lambda (``population.metadata["lambda"]`` from the converter, else channel order)
    and cut into ``groups_per_population`` runs of near-equal size; None = one group per channel."""
    labels, next_group = [], 0
    for name, channels in zip(space.populations, space.channels, strict=True):
        if groups_per_population is None:
            labels.append(next_group + np.arange(channels))
            next_group += channels
            continue
        k = max(1, min(groups_per_population, channels))
        lam = network.populations[name].metadata.get("lambda")
        order = np.argsort(np.asarray(lam), kind="stable") if lam is not None and len(lam) == channels \
            else np.arange(channels)
        rank = np.empty(channels, np.int64)
        rank[order] = np.arange(channels)
        labels.append(next_group + rank * k // channels)
        next_group += k
    return np.concatenate(labels)
