"""What the PyNN backends (neuron, spinnaker) share: lowering the IR to per-neuron parameters and
explicit synapse lists."""

from neurodeploy.backends.pynn.lowering import LoweredNetwork, LoweredPopulation, SynapseList, lower_network

__all__ = ["LoweredNetwork", "LoweredPopulation", "SynapseList", "lower_network"]
