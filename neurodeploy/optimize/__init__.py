"""Formal optimization of the scale factors of a converted network for latency and power (Dutson et al.)."""

from neurodeploy.optimize.objective import AnytimeObjective, Measurement, Simulator
from neurodeploy.optimize.optimizer import METHODS, OptimizeConfig, OptimizeResult, optimize_scales
from neurodeploy.optimize.parameters import ScaleSpace, channel_groups

__all__ = ["METHODS", "AnytimeObjective", "Measurement", "OptimizeConfig", "OptimizeResult",
           "ScaleSpace", "Simulator", "channel_groups", "optimize_scales"]
