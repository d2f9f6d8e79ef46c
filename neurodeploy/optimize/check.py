"""The held-out check of phase 2's result: the search fits its scales to its optimization items (on dense MNIST
the chosen point was 0.75 pp above its ANN there and 0.40 pp below it on the test split), so where the training
split's validation part holds items beyond the optimization items, the points the search would return are
measured again on those: H0 and the best point after each stage of the search (a later stage fits more
parameters to the same items). Each is simulated on the check items and judged there as the search judged it
on its own items (:class:`neurodeploy.optimize.objective.AnytimeObjective`: the paired floor against the
original ANN on the check items, L_SNN with lambda_l and lambda_p calibrated at H0 on the check items); the
returned point is the best by that ranking (feasible first, then the least L_SNN)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodeploy.ir.network import Network
from neurodeploy.optimize.budget import CONFIDENCE
from neurodeploy.optimize.objective import AnytimeObjective, Simulator
from neurodeploy.optimize.parameters import ScaleSpace


@dataclass
class HeldOutCheck:
    """simulator: built for the network on the check items (never the optimization items nor the test
    split); reference_correct ``[M]`` bool: the original ANN's per-item correctness there; ann_accuracy: a*,
    the converted model's ANN accuracy there (fraction)."""

    simulator: Simulator
    reference_correct: np.ndarray
    ann_accuracy: float


def choose_checked(check: HeldOutCheck, network: Network, space: ScaleSpace, candidates: list[np.ndarray],
                   lambda_e: float, budget: float | None, confidence: float = CONFIDENCE
                   ) -> tuple[int, list[dict]]:
    """Index of the best of ``candidates`` (parameter vectors, H0 first) on the check items, and each one's
    measurement there (``Measurement.as_dict()`` with its ``loss`` and ``feasible``)."""
    reference = None if budget is None else np.asarray(check.reference_correct, bool)
    objective = AnytimeObjective(check.simulator, space, network, check.ann_accuracy, lambda_e,
                                 reference_correct=reference, budget=budget, confidence=confidence)
    measured = [objective.measure(x) for x in candidates]
    objective.calibrate(measured[0])
    ranks = [objective.rank(m) for m in measured]
    chosen = min(range(len(candidates)), key=lambda i: (ranks[i], i))
    return chosen, [{**m.as_dict(), "loss": objective.loss(m), "feasible": objective.feasible(m)} for m in measured]
