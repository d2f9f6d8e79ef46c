"""Checkpointing by replay: an append-only log of every evaluation, so an interrupted search resumes
with exactly the result an uninterrupted one would have given.

The search methods are deterministic functions of the objective values they see. On resume the search
starts again from the beginning; every point it asks for that the log already holds is answered from
the log at once (and must be bit-identical to the logged point, else the log belongs to another
search), and the first point past the end of the log is simulated and appended. So no optimizer needs
to expose its internal state (nlopt's SUBPLEX does not), and the search after resuming follows the
same path as one that was never stopped.

File: JSON lines. Line 1 is a header ``{"format", "version", "fingerprint"}``; every further line is
``{"x": [...], "m": {peak_accuracy, pareto_latency, pareto_power}}``. JSON keeps Python floats exact.
A last line cut off mid-write is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neurodeploy.errors import NeurodeployError
from neurodeploy.optimize.objective import Measurement
from neurodeploy.safe_io import write_bytes

FORMAT = "neurodeploy-scale-search"
VERSION = 1


class ReplayLog:
    """Evaluations of one search; ``path`` None keeps them in memory only."""

    def __init__(self, path: str | Path | None, fingerprint: str):
        self.path = Path(path) if path is not None else None
        self.records: list[tuple[np.ndarray, Measurement]] = []
        self.cursor = 0
        if self.path is None:
            return
        if self.path.exists() and self.path.stat().st_size > 0:
            self._read(fingerprint)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(self.path, (json.dumps({"format": FORMAT, "version": VERSION, "fingerprint": fingerprint})
                                    + "\n").encode())

    def _read(self, fingerprint: str) -> None:
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            raise NeurodeployError(f"{self.path}: not a scale-search log (unreadable header)") from None
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise NeurodeployError(f"{self.path}: not a version-{VERSION} {FORMAT} log")
        if header.get("fingerprint") != fingerprint:
            raise NeurodeployError(f"{self.path} holds a search with other settings, model or data; "
                                   "delete it or choose another run id")
        for number, line in enumerate(lines[1:], start=2):
            try:
                entry = json.loads(line)
                self.records.append((np.asarray(entry["x"], np.float64), Measurement(**entry["m"])))
            except (json.JSONDecodeError, KeyError, TypeError):
                if number != len(lines):
                    raise NeurodeployError(f"{self.path}: line {number} is corrupt") from None
                self._rewrite()  # the last line was cut off by an interruption

    def _rewrite(self) -> None:
        lines = self.path.read_text().splitlines()[: 1 + len(self.records)]
        write_bytes(self.path, ("\n".join(lines) + "\n").encode())

    @property
    def replaying(self) -> bool:
        return self.cursor < len(self.records)

    def evaluate(self, x: np.ndarray, measure: Callable[[np.ndarray], Measurement]) -> Measurement:
        """The logged measurement of the next point when replaying, else ``measure(x)``, logged."""
        x = np.array(x, np.float64)
        if self.replaying:
            logged, measurement = self.records[self.cursor]
            if logged.shape != x.shape or not np.array_equal(logged, x):
                raise NeurodeployError(f"{self.path}: evaluation {self.cursor + 1} of the log is another point than "
                                       "the search asks for now; the log belongs to another search")
            self.cursor += 1
            return measurement
        measurement = measure(x)
        self.records.append((x, measurement))
        self.cursor += 1
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"x": x.tolist(), "m": measurement.as_dict()}) + "\n")
        return measurement
