"""The NIR file fuzzing harness in CI (``fuzz_nir``): structure mutations of NIR files (HDF5) written here and
by ``nir`` as other libraries write them are read as a graph and simulated, or refused in one line; no
traceback, no hang, no link followed.

NEURODEPLOY_FUZZ_NIR (default 90, a few seconds) sets the count; ``python tests/fuzz/fuzz_nir.py --cases N
--seed S`` runs it by hand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_nir import fuzz_nir  # noqa: E402


def test_mutated_nir_files_are_read_or_refused_in_one_line():
    count = int(os.environ.get("NEURODEPLOY_FUZZ_NIR", 90))
    report = fuzz_nir(count, seed=31)
    print(report.line())
    assert sum(report.outcomes.values()) == count
    assert not report.defects, "\n".join(report.defects[:20])
    assert report.outcomes["refused"] > count // 2 and report.outcomes["accepted"] > 0
