"""The fuzzing harness in CI: seeded mutations of IR files, results, dataset folders and model files
(``fuzzlib``). Every file is refused in one NeurodeployError line or accepted with the meaning it
states; no traceback, no hang, no more than 1 GiB allocated for a file under 10 MB.

NEURODEPLOY_FUZZ_CASES (default 300) sets the total number of cases, split 50 % IR, 30 % results,
15 % data folders and 5 % model files; ``python tests/fuzz/fuzzlib.py --cases N`` runs it by hand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzlib import DEFAULT_CASES, case_counts, run_fuzz  # noqa: E402

TOTAL = int(os.environ.get("NEURODEPLOY_FUZZ_CASES", DEFAULT_CASES))


@pytest.mark.parametrize("kind", ["ir", "result", "data", "model"])
def test_every_mutated_file_is_refused_in_one_line_or_read_as_it_says(kind):
    count = case_counts(TOTAL)[kind]
    report = run_fuzz(kinds=(kind,), counts={kind: count}, seed=19)[kind]
    print(report.line())
    assert sum(report.outcomes.values()) == count
    assert not report.defects, "\n".join(report.defects[:20])
    assert report.outcomes["refused"] > 0
