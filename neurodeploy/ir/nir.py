"""NIR interchange lives in :mod:`neurodeploy.nir` (vocabulary, writer, reader); this module keeps the
names importable from ``neurodeploy.ir.nir``."""

import neurodeploy.nir as _package
from neurodeploy.nir import *  # noqa: F403

__all__ = _package.__all__
