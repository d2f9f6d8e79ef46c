"""PyTorch model -> spiking IR: torch.fx tracing, batch-norm folding, activation statistics, scaling."""

from neurodeploy.convert.activations import replace_activations
from neurodeploy.convert.converter import convert
from neurodeploy.convert.max_pool import replace_max_pooling
from neurodeploy.convert.statistics import ExactQuantiles, activation_scales

__all__ = ["ExactQuantiles", "activation_scales", "convert", "replace_activations", "replace_max_pooling"]
