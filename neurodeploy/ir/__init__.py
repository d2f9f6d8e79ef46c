"""The network IR: populations + projections on a networkx graph, validation and file format."""

from neurodeploy.ir.connectivity import fan_maps, network_summary
from neurodeploy.ir.io import load_network, save_network
from neurodeploy.ir.network import Network, Projection
from neurodeploy.ir.ops import AvgPool2d, Conv2d, Dense, Flatten, Identity, Op, Scale
from neurodeploy.ir.population import NeuronSpec, Population, initial_membrane

__all__ = [
    "AvgPool2d", "Conv2d", "Dense", "Flatten", "Identity", "NIRError", "NIRUnsupportedError", "NIRWarning",
    "Network", "NeuronSpec", "Op", "Population", "Projection", "Scale", "fan_maps", "initial_membrane",
    "load_network", "network_summary", "read_nir", "save_network", "write_nir",
]


def __getattr__(name: str):
    """The NIR names (``neurodeploy.nir``, which imports this package) on first use."""
    if name in ("NIRError", "NIRUnsupportedError", "NIRWarning", "read_nir", "write_nir"):
        import neurodeploy.nir

        return getattr(neurodeploy.nir, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
