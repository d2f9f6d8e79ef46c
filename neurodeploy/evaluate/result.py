"""SimulationResult: the one result format every backend returns (``docs/semantics.md``).

Arrays (per test item n, step t = 1..T, class c, population p):
    readout          float32 [N, T, C]  output O(t) after step t (cumulative membrane or spike count)
    labels           int64   [N]
    spike_counts     float32 [N, T, P]  spikes emitted at step t by population p (|spikes| for signed)
    synaptic_events  float32 [N, T, P]  synaptic events caused by those spikes (spikes x fan-out)
    stop_times       int64   [N]        optional: 1-based exit step of runs with early exit (after it
                                        the readout is frozen and counts are zero)
    neuron_counts    float32 [N, M]     optional: spikes of every neuron over the whole run (|spikes| for
                                        signed), the populations of ``metadata["populations"]``
                                        concatenated in that order, each in C order of its shape
Metadata (JSON): backend, T, dt_ms, profile, pipeline_delay, populations (name, role, size),
n_neurons, n_synapses, timings, and whatever the producer adds (ann_accuracy, model, ...).

Saved as one ``.npz`` (numeric arrays + the metadata as a JSON string; no pickle).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurodeploy.errors import ResultFormatError

FORMAT_NAME = "neurodeploy-result"
FORMAT_VERSION = 1
_ARRAYS = {"readout": 3, "labels": 1, "spike_counts": 3, "synaptic_events": 3}
_OPTIONAL = ("stop_times", "neuron_counts")


@dataclass
class SimulationResult:
    readout: np.ndarray
    labels: np.ndarray
    spike_counts: np.ndarray
    synaptic_events: np.ndarray
    metadata: dict = field(default_factory=dict)
    stop_times: np.ndarray | None = None
    neuron_counts: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return int(self.labels.shape[0])

    @property
    def T(self) -> int:
        return int(self.readout.shape[1])

    @property
    def populations(self) -> list[dict]:
        return self.metadata.get("populations", [])

    def predictions(self) -> np.ndarray:
        """Predicted class at every step, ``[N, T]`` (argmax of O(t); ties go to the lowest class)."""
        return self.readout.argmax(axis=2)

    def correct(self) -> np.ndarray:
        """``[N, T]`` bool: prediction at step t equals the label."""
        return self.predictions() == self.labels[:, None]

    def accuracy_curve(self) -> np.ndarray:
        """a(t) for t = 1..T as fractions in [0, 1], shape ``[T]``."""
        return self.correct().mean(axis=0)

    def population_neuron_counts(self) -> dict[str, np.ndarray]:
        """``neuron_counts`` split per population: ``{name: [N, size]}``."""
        if self.neuron_counts is None:
            raise ResultFormatError("this result has no per-neuron counts (run with record_neuron_counts)")
        sizes = [p["size"] for p in self.populations]
        parts = np.split(self.neuron_counts, np.cumsum(sizes)[:-1], axis=1)
        return {p["name"]: part for p, part in zip(self.populations, parts, strict=True)}

    def select(self, index: np.ndarray) -> SimulationResult:
        """A result holding only the items ``index`` (e.g. a validation or test part)."""
        return SimulationResult(self.readout[index], self.labels[index], self.spike_counts[index],
                                self.synaptic_events[index], dict(self.metadata),
                                *(None if a is None else a[index] for a in (self.stop_times, self.neuron_counts)))

    def exit_correct(self) -> np.ndarray:
        """``[N]`` bool: the prediction at each item's stop step is right (needs ``stop_times``)."""
        if self.stop_times is None:
            raise ResultFormatError("this result has no stop times (it was not run with early exit)")
        return self.correct()[np.arange(self.n_items), self.stop_times - 1]

    @staticmethod
    def concatenate(parts: list[SimulationResult]) -> SimulationResult:
        """Joins per-batch results along the item axis (metadata of the first part)."""
        def optional(name: str) -> np.ndarray | None:
            arrays = [getattr(p, name) for p in parts]
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        return SimulationResult(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAYS),
            metadata=dict(parts[0].metadata), stop_times=optional("stop_times"),
            neuron_counts=optional("neuron_counts"),
        )

    def validate(self, where: str = "result") -> SimulationResult:
        for name, ndim in _ARRAYS.items():
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.ndim != ndim:
                raise ResultFormatError(f"{where}: {name} must be a {ndim}-d array")
            if array.shape[0] != self.n_items:
                raise ResultFormatError(f"{where}: {name} has {array.shape[0]} items, labels have {self.n_items}")
        for name in ("spike_counts", "synaptic_events"):
            if getattr(self, name).shape[1] != self.T:
                raise ResultFormatError(f"{where}: {name} has {getattr(self, name).shape[1]} steps, readout {self.T}")
        if self.stop_times is not None and (self.stop_times.shape != (self.n_items,) or self.stop_times.min(
                initial=1) < 1 or self.stop_times.max(initial=1) > self.T):
            raise ResultFormatError(f"{where}: stop_times must hold one step in [1, T] per item")
        if self.neuron_counts is not None and self.populations:  # batch parts carry no metadata yet
            expected = (self.n_items, sum(p["size"] for p in self.populations))
            if self.neuron_counts.shape != expected:
                raise ResultFormatError(f"{where}: neuron_counts has shape {self.neuron_counts.shape}, the "
                                        f"populations need {expected}")
        if not np.all(np.isfinite(self.readout)):
            raise ResultFormatError(f"{where}: readout contains NaN or infinite values")
        return self

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "metadata": self.metadata}
        optional = {name: getattr(self, name) for name in _OPTIONAL if getattr(self, name) is not None}
        np.savez_compressed(path, metadata_json=np.array(json.dumps(header)),
                            **{name: getattr(self, name) for name in _ARRAYS}, **optional)
        return path

    @staticmethod
    def load(path: str | Path) -> SimulationResult:
        path = Path(path)
        if not path.is_file():
            raise ResultFormatError(f"{path}: no such result file")
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(str(npz["metadata_json"]))
                arrays = {name: npz[name] for name in _ARRAYS}
                optional = {name: npz[name] for name in _OPTIONAL if name in npz.files}
        except KeyError as err:
            raise ResultFormatError(f"{path}: missing array {err}") from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as err:
            raise ResultFormatError(f"{path}: not a readable result file ({err})") from None
        if header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
            raise ResultFormatError(f"{path}: not a {FORMAT_NAME} v{FORMAT_VERSION} file")
        return SimulationResult(**arrays, metadata=header.get("metadata", {}), **optional).validate(str(path))
