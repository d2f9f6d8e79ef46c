"""SpiNNaker's S16.15 fixed point: every membrane parameter and state must lie in about +/-65536 with a
resolution of 2^-15. Values are checked before sPyNNaker sees them, naming population and value."""

from __future__ import annotations

import numpy as np

from neurodeploy.errors import BackendError

S1615_MAX = 65535.0 + (2**15 - 1) / 2**15
S1615_RESOLUTION = 2.0**-15


def check_s1615(population: str, parameter: str, values: np.ndarray) -> None:
    """Raises BackendError when any value of ``parameter`` is outside the S16.15 range."""
    values = np.asarray(values, np.float64)
    bad = np.flatnonzero(~(np.abs(values) <= S1615_MAX))
    if bad.size:
        index = int(bad[0])
        raise BackendError(
            f"population {population!r}: {parameter} of neuron {index} is {values[index]:.6g}, outside the S16.15 "
            f"range of SpiNNaker (|x| <= {S1615_MAX:.5f}); rescale the population (threshold, bias and incoming "
            "weights together)"
        )


def lost_to_resolution(values: np.ndarray) -> float:
    """Fraction of non-zero values smaller than the S16.15 resolution (they would round to 0)."""
    values = np.asarray(values, np.float64)
    nonzero = values[values != 0]
    return float((np.abs(nonzero) < S1615_RESOLUTION / 2).mean()) if nonzero.size else 0.0
