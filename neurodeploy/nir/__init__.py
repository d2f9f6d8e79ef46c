"""NIR interchange: the IR to and from the Neuromorphic Intermediate Representation (PyPI ``nir``).

``write_nir`` / ``read_nir`` (and the in-memory ``to_nir_graph`` / ``from_nir_graph``) move a network
through NIR's HDF5 format. NIR cannot say everything a rate-coded IF network needs (reset by
subtraction, the time step, the initial membrane, the readout kind, per-projection delays, QFFS);
those facts travel in node and graph metadata with the vocabulary of docs/nir.md, so that a file
written here reads back bit-identical. Graphs without that metadata (sinabs, snnTorch, Norse, ...) are
read with NIR's semantics and the caller's import options (:class:`ImportOptions`), and each assumption
is stated in a :class:`NIRWarning`. Files are read with checks (:mod:`neurodeploy.nir.hdf5`): no links
followed, real numeric arrays only, declared sizes within a budget.

Modules: ``vocabulary`` (format constants, errors), ``writer`` (export), ``reader`` (import),
``foreign`` (graphs written elsewhere), ``hdf5`` (the checked file reader), ``reference`` (embedded
reference traces). The ``nir`` package is optional and imported lazily: without it these functions
raise :class:`NIRNotInstalledError`.
"""

from neurodeploy.nir.reader import from_nir_graph, is_nir_file, nir_info, read_nir
from neurodeploy.nir.reference import check_reference, read_reference
from neurodeploy.nir.vocabulary import (
    DEFAULT_DT,
    DIALECTS,
    LEAK_RULES,
    NIRError,
    NIRNotInstalledError,
    NIRUnsupportedError,
    NIRWarning,
)
from neurodeploy.nir.writer import fold_network_thresholds, to_nir_graph, write_nir

__all__ = [
    "DEFAULT_DT", "DIALECTS", "LEAK_RULES", "NIRError", "NIRNotInstalledError", "NIRUnsupportedError",
    "NIRWarning", "check_reference", "fold_network_thresholds", "from_nir_graph", "is_nir_file", "nir_info",
    "read_nir", "read_reference", "to_nir_graph", "write_nir",
]
