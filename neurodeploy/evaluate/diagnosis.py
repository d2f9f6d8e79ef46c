"""Which population and which of a board's differences lose a prediction's accuracy: per-population spike-count
agreement of a board's prediction, and of each difference applied on its own, with the reference semantics
(``docs/semantics.md``, "SpiNNaker", "Diagnosis").

All functions take results of the same network and items (``SimulationResult.neuron_counts`` recorded).
"""

from __future__ import annotations

import numpy as np

from neurodeploy.evaluate.compare import _check_same_run
from neurodeploy.evaluate.result import SimulationResult


def count_agreement(reference: SimulationResult, other: SimulationResult) -> dict[str, dict]:
    """Per spiking population (input and never-spiking populations left out): ``agreement = 1 - sum |n - n_ref|
    / sum n_ref`` over every (item, neuron) spike count of the run (1: the same counts; 0: as far from them as
    no spikes at all) and ``rate_ratio = sum n / sum n_ref``."""
    _check_same_run(reference, other)
    a, b = reference.population_neuron_counts(), other.population_neuron_counts()
    out = {}
    for pop in reference.populations:
        name = pop["name"]
        total = float(a[name].sum())
        if pop["role"] == "input" or total == 0:
            continue
        out[name] = {"agreement": 1.0 - float(np.abs(b[name] - a[name]).sum()) / total,
                     "rate_ratio": float(b[name].sum()) / total}
    return out


def final_accuracy(result: SimulationResult) -> float:
    """Accuracy at the last step."""
    return float(result.accuracy_curve()[-1])


def attribute_loss(board: dict[str, dict], factors: dict[str, dict[str, dict]], sources: dict[str, list[str]]
                   ) -> list[dict]:
    """Per population of ``board`` (its :func:`count_agreement`), in the order given: its agreement, the drop
    against the worst of its sources (``sources[name]``; the input counts as 1) -- what the population adds to
    the disagreement it receives -- each factor's agreement there (``factors[f]``: the :func:`count_agreement` of
    factor ``f`` applied alone) and ``factor``, the one with the lowest (None without factors)."""
    rows = []
    for name, entry in board.items():
        upstream = min((board[s]["agreement"] for s in sources.get(name, []) if s in board), default=1.0)
        per_factor = {f: agreement[name]["agreement"] for f, agreement in factors.items() if name in agreement}
        rows.append({"population": name, "agreement": entry["agreement"], "rate_ratio": entry["rate_ratio"],
                     "drop": upstream - entry["agreement"], "factors": per_factor,
                     "factor": min(per_factor, key=per_factor.get) if per_factor else None})
    return rows


def cause(rows: list[dict]) -> dict | None:
    """The row of :func:`attribute_loss` where the agreement drops most (the population that loses it), or None."""
    return max(rows, key=lambda r: r["drop"]) if rows else None
