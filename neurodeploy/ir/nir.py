"""NIR interchange lives in :mod:`neurodeploy.nir` (vocabulary, writer, reader); this module keeps the
names importable from ``neurodeploy.ir.nir``."""

from neurodeploy.nir import *  # noqa: F403
from neurodeploy.nir import __all__  # noqa: F401
