"""The trust fuzzing harness in CI (``fuzz_trust``): mutated ``.pt2`` archives are refused in one line or
read as the program they hold, and no payload ever runs; CLI runs with one run id at once or under a
file-size limit end in one line or a finished run, and never change a finished run's files.

NEURODEPLOY_FUZZ_PT2 (default 40, a few seconds) and NEURODEPLOY_FUZZ_RUNS (default 4, a minute of CLI
processes; marked slow) set the counts; ``python tests/fuzz/fuzz_trust.py --pt2 N --runs M`` runs it by
hand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_trust import fuzz_pt2, fuzz_runs  # noqa: E402


def test_mutated_pt2_archives_are_refused_in_one_line_and_run_no_code():
    count = int(os.environ.get("NEURODEPLOY_FUZZ_PT2", 40))
    report = fuzz_pt2(count, seed=29)
    print(report.line())
    assert sum(report.outcomes.values()) == count
    assert not report.defects, "\n".join(report.defects[:20])
    assert report.outcomes["refused"] > count // 2 and report.outcomes["accepted"] > 0


@pytest.mark.slow
def test_concurrent_and_failing_file_system_runs_stay_clean():
    count = int(os.environ.get("NEURODEPLOY_FUZZ_RUNS", 4))
    report = fuzz_runs(count, seed=29)
    print(report.line())
    assert sum(report.outcomes.values()) >= count
    assert not report.defects, "\n".join(report.defects[:20])
    assert report.outcomes["finished"] >= 1
