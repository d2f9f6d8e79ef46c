"""The shared evaluator: SimulationResult, anytime metrics, Dynamic Confidence, reports and plots."""

from neurodeploy.evaluate.dynamic_confidence import (
    choose_threshold,
    confidence,
    evaluate_dynamic_confidence,
    oracle,
    pareto_front,
    stop_times,
    threshold_sweep,
)
from neurodeploy.evaluate.metrics import anytime_metrics, pareto_latency, pareto_power
from neurodeploy.evaluate.result import SimulationResult

__all__ = [
    "SimulationResult", "anytime_metrics", "choose_threshold", "confidence", "evaluate_dynamic_confidence",
    "oracle", "pareto_front", "pareto_latency", "pareto_power", "stop_times", "threshold_sweep",
]
