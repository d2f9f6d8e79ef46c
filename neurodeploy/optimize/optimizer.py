"""``optimize_scales``: formal optimization of a converted network's per-channel scale factors (and
optionally its initial membranes) for the anytime loss L_SNN (see :mod:`neurodeploy.optimize.objective`).

The search starts at the heuristic scaling H0 (the network as converted), evaluates H0 first, and
returns the best point it evaluated, so its loss on the optimization set is never above H0's. With an
accuracy floor (``OptimizeConfig.accuracy_floor``) the best point is the feasible one (peak accuracy at
or above the floor) of least L_SNN; when no point is feasible, the one closest to the floor. Every
evaluation goes to a replay log (:mod:`neurodeploy.optimize.replay_log`): run again with the same log
and settings and an interrupted search resumes with the same result.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.network import Network
from neurodeploy.optimize.budget import CONFIDENCE
from neurodeploy.optimize.check import HeldOutCheck, choose_checked
from neurodeploy.optimize.methods import coarse_to_fine, subplex
from neurodeploy.optimize.objective import AnytimeObjective, Measurement, Simulator
from neurodeploy.optimize.parameters import ScaleSpace
from neurodeploy.optimize.replay_log import ReplayLog
from neurodeploy.optimize.silence import disconnect_silenced, silence_order

METHODS = ("coarse_to_fine", "subplex")


@dataclass
class OptimizeConfig:
    """method: "coarse_to_fine" (ours, default) or "subplex" (nlopt LN_SBPLX over every channel).
    max_evals: simulations of the optimization set, H0 included. T: steps per simulation.
    lambda_e: weight of (1 - peak accuracy) (the paper: 200 for MNIST models, 50 for CIFAR).
    max_factor: scale factors stay within [1/max_factor, max_factor] of H0.
    initial_step: first simplex step in log-scale units (0.3 = a factor of 1.35).
    v_init: also search one initial membrane (fraction of threshold) per population.
    silence: also search, per population, the fraction of its channels silenced, in the order of
    :func:`neurodeploy.optimize.silence.silence_order` on the optimization set (the channels that change
    the fewest predictions first); the returned network has them disconnected
    (:func:`~neurodeploy.optimize.silence.disconnect_silenced`).
    groups, evals_per_dimension: the stages of coarse_to_fine (channel groups per population; None =
    every channel) and the evaluations each stage may spend per searched dimension.
    accuracy_floor: least peak accuracy (fraction, on the optimization set) of a feasible point, a hard
    constraint (:mod:`neurodeploy.optimize.objective`); None: no floor.
    accuracy_budget, confidence: the paired constraint against the reference given to
    :func:`optimize_scales` (a point is infeasible when its paired interval at the peak step, two-sided
    level ``confidence``, lies wholly below -accuracy_budget; fraction); None: no budget. With neither,
    accuracy only weighs through lambda_e.
    """

    method: str = "coarse_to_fine"
    max_evals: int = 400
    T: int = 100
    lambda_e: float = 200.0
    max_factor: float = 8.0
    initial_step: float = 0.3
    v_init: bool = False
    silence: bool = False
    groups: tuple[int | None, ...] = (1, 4, 16)
    evals_per_dimension: tuple[int, ...] = (25, 10, 6)
    accuracy_floor: float | None = None
    accuracy_budget: float | None = None
    confidence: float = CONFIDENCE

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise NeurodeployError(f"optimization method must be one of {METHODS}, not {self.method!r}")
        if self.max_evals < 1:
            raise NeurodeployError(f"max_evals must be at least 1, got {self.max_evals}")
        if not self.max_factor > 1.0:
            raise NeurodeployError(f"max_factor must exceed 1, got {self.max_factor}")
        if len(self.groups) != len(self.evals_per_dimension):
            raise NeurodeployError("groups and evals_per_dimension need one entry per stage")
        if self.accuracy_floor is not None and not 0.0 <= self.accuracy_floor <= 1.0:
            raise NeurodeployError(f"accuracy_floor must lie in [0, 1], got {self.accuracy_floor}")
        if self.accuracy_budget is not None and not 0.0 <= self.accuracy_budget <= 1.0:
            raise NeurodeployError(f"accuracy_budget must lie in [0, 1], got {self.accuracy_budget}")


@dataclass
class OptimizeResult:
    """x: best parameter vector; start / best: their measurements on the optimization set;
    start_loss / best_loss: their losses (L_SNN plus any penalty below the accuracy floor);
    losses: the loss of every evaluation in order; evaluations: how many; replayed: how many came from
    the log; wall_time_s: this call's wall time; accuracy_floor, accuracy_budget: the constraints (None: none);
    start_feasible / feasible: whether H0 and the best point meet it; check: the held-out check's record
    (:mod:`neurodeploy.optimize.check`; None: none ran); n_scales: how many entries of x are log scale factors
    (the rest: initial membranes, silenced fractions; None: all)."""

    x: np.ndarray
    start: Measurement
    best: Measurement
    start_loss: float
    best_loss: float
    lambdas: dict
    evaluations: int
    replayed: int
    losses: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0
    accuracy_floor: float | None = None
    accuracy_budget: float | None = None
    start_feasible: bool = True
    feasible: bool = True
    check: dict | None = None
    n_scales: int | None = None

    def as_dict(self) -> dict:
        scales = self.x[:self.n_scales]  # the log scale factors, not the initial membranes or silenced fractions
        return {"start": self.start.as_dict(), "best": self.best.as_dict(), "start_loss": self.start_loss,
                "best_loss": self.best_loss, "lambdas": self.lambdas, "evaluations": self.evaluations,
                "replayed": self.replayed, "wall_time_s": self.wall_time_s, "accuracy_floor": self.accuracy_floor,
                "accuracy_budget": self.accuracy_budget, "start_feasible": self.start_feasible,
                "feasible": self.feasible, "check": self.check,
                "scale_factor_range": [float(np.exp(scales.min())), float(np.exp(scales.max()))]}


def search_fingerprint(network: Network, images: torch.Tensor, labels: torch.Tensor, ann_accuracy: float,
                       space: ScaleSpace, config: OptimizeConfig, reference_correct: np.ndarray | None = None) -> str:
    """Hash of everything a search's path depends on: network parameters, data, a*, the budget's reference,
    space and settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"config": asdict(config), "space": asdict(space), "ann": ann_accuracy},
                             sort_keys=True, default=str).encode())
    for name in network.topological_order():
        population = network.populations[name]
        digest.update(repr((name, population.shape, population.neuron)).encode())
        if population.bias is not None:
            digest.update(np.ascontiguousarray(population.bias).tobytes())
    for projection in network.projections:
        for op in projection.ops:
            for array in op.arrays().values():
                digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(labels.contiguous().numpy().tobytes())
    if reference_correct is not None:
        digest.update(np.asarray(reference_correct, bool).tobytes())
    return digest.hexdigest()[:24]


class _Search:
    """The loss as the methods see it: logged, counted, tracked for the best point (by the objective's
    rank: feasible first), with progress."""

    def __init__(self, objective: AnytimeObjective, log: ReplayLog, max_evals: int, progress: bool,
                 on_evaluation: Callable[[int], None] | None):
        self.objective, self.log, self.max_evals = objective, log, max_evals
        self.on_evaluation = on_evaluation
        self.losses: list[float] = []
        self.best_x: np.ndarray | None = None
        self.best: Measurement | None = None
        self.bar = tqdm(total=max_evals, desc="optimizing scales", unit="sim", disable=not progress, leave=False)

    def __call__(self, x: np.ndarray) -> float:
        if len(self.losses) >= self.max_evals:
            return self.losses[-1] if self.best is None else self.objective.loss(self.best)
        measurement = self.log.evaluate(x, self.objective.measure)
        loss = self.objective.loss(measurement)
        self.losses.append(loss)
        if self.best is None or self.objective.rank(measurement) < self.objective.rank(self.best):
            self.best, self.best_x = measurement, np.array(x, np.float64)
        self.bar.update(1)
        self.bar.set_postfix(best=f"{self.objective.loss(self.best):.4f}", replay=self.log.replaying)
        if self.on_evaluation is not None:
            self.on_evaluation(len(self.losses))
        return loss


def optimize_scales(network: Network, simulator: Simulator, images: torch.Tensor, labels: torch.Tensor,
                    ann_accuracy: float, config: OptimizeConfig | None = None, log_path: str | Path | None = None,
                    progress: bool = True, on_evaluation: Callable[[int], None] | None = None,
                    reference_correct: np.ndarray | None = None, check: HeldOutCheck | None = None
                    ) -> tuple[Network, OptimizeResult]:
    """Searches scale factors of ``network`` (as converted: H0) that minimize L_SNN on the optimization
    set ``images [N, *input_shape]``, ``labels [N]`` with ANN accuracy ``ann_accuracy`` on that set,
    keeping the peak accuracy at or above ``config.accuracy_floor`` when one is given.

    simulator: built for ``network`` on that set, for ``config.T`` steps (e.g.
    ``GpuBackend.anytime_simulator(network, images, labels, config.T)``); the images and labels key
    the replay log.
    log_path: the replay log (JSON lines); an existing log of the same search resumes it.
    on_evaluation: called with the evaluation count after each evaluation (progress hooks, tests).
    reference_correct: ``[N]`` bool, the reference's per-item correctness on the set (the original ANN's),
    which ``config.accuracy_budget`` compares every point with; needed when a budget is set.
    check: held-out items the returned point is chosen on (:mod:`neurodeploy.optimize.check`): H0 and the
    best point after each stage are measured there and the best there is returned; None: the best on the
    optimization set.
    Returns the optimized network and the :class:`OptimizeResult`.
    """
    config = config or OptimizeConfig()
    start_time = time.perf_counter()
    space = ScaleSpace.of(network, v_init=config.v_init)
    if config.silence:
        space = ScaleSpace.of(network, v_init=config.v_init,
                              silence=silence_order(network, images, space.populations))
    if (config.accuracy_budget is None) != (reference_correct is None):
        raise NeurodeployError("an accuracy budget needs the reference's per-item correctness, and only it")
    if reference_correct is not None:
        reference_correct = np.asarray(reference_correct, bool)
        if reference_correct.shape != (int(labels.shape[0]),):
            raise NeurodeployError(f"reference_correct has shape {reference_correct.shape}, the set has "
                                   f"{int(labels.shape[0])} items")
    objective = AnytimeObjective(simulator, space, network, ann_accuracy, config.lambda_e,
                                 accuracy_floor=config.accuracy_floor, reference_correct=reference_correct,
                                 budget=config.accuracy_budget, confidence=config.confidence)
    log = ReplayLog(log_path, search_fingerprint(network, images, labels, ann_accuracy, space, config,
                                                 reference_correct))
    replayed = len(log.records)
    x0 = space.start(network)
    lower, upper = space.bounds(config.max_factor)
    start = log.evaluate(x0, objective.measure)
    objective.calibrate(start)
    log.cursor = 0  # H0 is the first evaluation of the search too (answered from the log)
    search = _Search(objective, log, config.max_evals, progress, on_evaluation)
    stage_bests: list[tuple[np.ndarray, Measurement]] = []  # the best point at the start of every stage

    def stage_best() -> np.ndarray:
        stage_bests.append((search.best_x.copy(), search.best))
        return search.best_x

    try:
        search(x0)
        if config.method == "subplex":
            subplex(search, x0, lower, upper, config.max_evals - 1, config.initial_step)
        else:
            coarse_to_fine(search, stage_best, network, space, lower, upper, config.max_evals - 1,
                           config.initial_step, config.groups, config.evals_per_dimension)
    finally:
        search.bar.close()
    best_x, best = search.best_x, search.best
    checked = None
    if check is not None:
        points: list[tuple[np.ndarray, Measurement]] = [(x0, start)]
        for x, m in [*stage_bests, (search.best_x, search.best)]:
            if not any(np.array_equal(x, y) for y, _ in points):
                points.append((x, m))
        chosen, measured = choose_checked(check, network, space, [x for x, _ in points], config.lambda_e,
                                          config.accuracy_budget, config.confidence)
        best_x, best = points[chosen]
        checked = {"items": int(np.asarray(check.reference_correct).size), "ann_accuracy": check.ann_accuracy,
                   "chosen": chosen, "points": measured}
    result = OptimizeResult(
        x=best_x, start=start, best=best, start_loss=objective.loss(start),
        best_loss=objective.loss(best), check=checked, n_scales=space.n_scales,
        lambdas={"lambda_e": objective.lambda_e, "lambda_l": objective.lambda_l, "lambda_p": objective.lambda_p},
        evaluations=len(search.losses), replayed=min(replayed, len(search.losses)), losses=search.losses,
        wall_time_s=time.perf_counter() - start_time, accuracy_floor=config.accuracy_floor,
        accuracy_budget=config.accuracy_budget,
        start_feasible=objective.feasible(start), feasible=objective.feasible(best))
    optimized = space.apply(network, result.x)
    if space.silence is not None:
        scaled = ScaleSpace(space.populations, space.channels, space.v_init).apply(
            network, result.x[:space.silence_offset])
        optimized = disconnect_silenced(optimized, dict(zip(space.populations, space.silenced(result.x), strict=True)),
                                        {name: scaled.populations[name].neuron.threshold for name in space.populations})
    optimized.metadata = {**network.metadata, "scale_optimization": {
        "method": config.method, **{k: v for k, v in result.as_dict().items() if k != "losses"}}}
    return optimized.validate(), result
