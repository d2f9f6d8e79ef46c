"""The objective of the scale optimizer (Dutson et al., WACV 2023, section 4.2):

    L_SNN = lambda_e * (1 - peak accuracy) + lambda_l * P_l + lambda_p * P_p

measured by simulating the network on an optimization set (never the test split). lambda_l = 1 / P_l(H0)
and lambda_p = 1 / P_p(H0), with H0 the heuristic scaling the search starts from, so both terms are 1 at
H0; lambda_e is given (the paper: 200 for MNIST models, 50 for CIFAR). P_l and P_p are the Pareto forms
of :mod:`neurodeploy.evaluate.metrics`.

lambda_e only weighs accuracy softly. An accuracy budget makes it a constraint, decided by the paired rule
of :mod:`neurodeploy.optimize.budget`: at the step of its peak accuracy, the candidate's per-item
correctness is compared with a reference's (the original ANN on the same items); the candidate is
infeasible when the interval of the difference lies wholly below -budget, and its shortfall is how far the
interval's upper end lies below -budget. (A fixed accuracy floor, a plain number, is the other form of the
constraint: shortfall = floor - peak.) An infeasible candidate's loss is L_SNN + CONSTRAINT_WEIGHT *
shortfall (so the search turns back towards the feasible region), and :meth:`AnytimeObjective.rank`
orders every feasible candidate before every infeasible one, whatever their L_SNN.

A candidate only changes thresholds and initial membranes (:class:`ScaleSpace`), so the simulator
(:class:`Simulator`) is built once and given each variant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from neurodeploy.evaluate.metrics import pareto_latency, pareto_power
from neurodeploy.ir.network import Network
from neurodeploy.optimize.budget import CONFIDENCE, compare_paired
from neurodeploy.optimize.parameters import ScaleSpace

#: loss per unit of accuracy (fraction) below the floor: 100 per percentage point, 50 times what lambda_e = 200
#: gives it; it steers the search, while the best point is picked by :meth:`AnytimeObjective.rank`
CONSTRAINT_WEIGHT = 1e4
#: peak accuracies are item counts over the set: a shortfall below this is rounding, not an item
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Measurement:
    """The anytime metrics of one simulated candidate (Pareto forms; P_l in steps, P_p in events); with a
    reference, ``paired``: the paired comparison at the peak step (``PairedComparison.as_dict()``)."""

    peak_accuracy: float
    pareto_latency: float
    pareto_power: float
    paired: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class Simulator(Protocol):
    """What the optimizer needs of a simulator: built once for a network on a fixed optimization set,
    it simulates variants that differ from that network only in thresholds and initial membranes. The
    gpu backend implements it (``GpuBackend.anytime_simulator``)."""

    def item_curves(self, network: Network) -> tuple[np.ndarray, np.ndarray]:
        """``(correct [N, T] bool, mean synaptic events per item [T])`` of ``network``."""
        ...


@dataclass
class AnytimeObjective:
    """L_SNN of a parameter vector; :meth:`calibrate` with the measurement of H0 sets lambda_l, lambda_p.
    accuracy_floor: the least peak accuracy (fraction, on the optimization set) of a feasible candidate;
    reference_correct ``[N]`` (bool) with budget (fraction): the paired constraint against that reference
    (the original ANN's per-item correctness on the optimization set), at two-sided ``confidence``;
    None: no constraint of that form."""

    simulator: Simulator
    space: ScaleSpace
    network: Network
    ann_accuracy: float
    lambda_e: float
    lambda_l: float = 1.0
    lambda_p: float = 1.0
    accuracy_floor: float | None = None
    reference_correct: np.ndarray | None = None
    budget: float | None = None
    confidence: float = CONFIDENCE

    def measure(self, x: np.ndarray) -> Measurement:
        """Simulates the candidate ``x`` on the optimization set."""
        correct, events = self.simulator.item_curves(self.space.apply(self.network, x))
        accuracy = correct.mean(0, dtype=np.float64)
        paired = None
        if self.reference_correct is not None:
            peak = int(accuracy.argmax())  # the first step of the peak accuracy
            paired = compare_paired(correct[:, peak], self.reference_correct, self.budget, self.confidence).as_dict()
        return Measurement(float(accuracy.max()), pareto_latency(accuracy, self.ann_accuracy),
                           pareto_power(accuracy, self.ann_accuracy, events), paired)

    def l_snn(self, m: Measurement) -> float:
        """lambda_e (1 - peak accuracy) + lambda_l P_l + lambda_p P_p."""
        return self.lambda_e * (1.0 - m.peak_accuracy) + self.lambda_l * m.pareto_latency \
            + self.lambda_p * m.pareto_power

    def shortfall(self, m: Measurement) -> float:
        """How far the candidate lies outside the constraints (fraction): the peak accuracy below the floor,
        plus the paired interval's upper end below -budget; 0 when feasible."""
        short = 0.0
        if self.accuracy_floor is not None and m.peak_accuracy < self.accuracy_floor - _TOLERANCE:
            short += self.accuracy_floor - m.peak_accuracy
        if m.paired is not None and not m.paired["within_budget"]:
            short += -m.paired["budget"] - m.paired["upper"]
        return short

    def feasible(self, m: Measurement) -> bool:
        return self.shortfall(m) == 0.0

    def loss(self, m: Measurement) -> float:
        """What the search minimizes: L_SNN, plus CONSTRAINT_WEIGHT times the shortfall below the floor."""
        return self.l_snn(m) + CONSTRAINT_WEIGHT * self.shortfall(m)

    def rank(self, m: Measurement) -> tuple[float, float]:
        """Sort key of candidates, best first: the smaller shortfall (every feasible one first), then the
        smaller L_SNN."""
        return self.shortfall(m), self.l_snn(m)

    def calibrate(self, start: Measurement) -> None:
        """lambda_l = 1 / P_l(H0) and lambda_p = 1 / P_p(H0) (1 where that is 0)."""
        self.lambda_l = 1.0 / start.pareto_latency if start.pareto_latency > 0 else 1.0
        self.lambda_p = 1.0 / start.pareto_power if start.pareto_power > 0 else 1.0
