"""What a run will hold in memory, estimated before it starts, and refused above a budget.

A result stores, per item and step, the readout of every class and the spike and synaptic-event counts of
every population, as float32 (:mod:`neurodeploy.evaluate.result`): ``N x T x (C + 2 P) x 4`` bytes, plus
the spike count of every neuron (``N x M x 4``). While a batch is joined its own arrays exist beside the
result (``min(B, N) x T x (C + 2 P) x 4``), and the evaluator's per-item curves add about 16 bytes per item
and step. The estimate is checked twice: before any work with what the settings and the data say (at
least an input and an output population), and once the network is converted with its real counts.

The budget is ``--memory-budget`` GiB (default :data:`DEFAULT_BUDGET_GIB`, at most the machine's physical
memory).
"""

from __future__ import annotations

import os

from neurodeploy.errors import ConfigError

#: default budget of a run's estimated memory (GiB)
DEFAULT_BUDGET_GIB = 8.0
_CURVE_BYTES = 16


def physical_memory() -> int | None:
    """Bytes of physical memory (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_bytes(n_items: int, T: int, batch_size: int, n_classes: int, n_populations: int,
                   n_neurons: int = 0) -> int:
    """Bytes a run of ``n_items`` items x ``T`` steps holds at its peak (see the module docstring)."""
    per_step = (n_classes + 2 * n_populations) * 4
    return (n_items * T * per_step + min(batch_size, n_items) * T * per_step + n_items * T * _CURVE_BYTES
            + n_items * n_neurons * 4)


def check_estimate(needed: int, budget_gib: float | None, what: str) -> None:
    """Raises ConfigError (one line) when ``needed`` bytes exceed the budget."""
    budget = (DEFAULT_BUDGET_GIB if budget_gib is None else budget_gib) * 2**30
    physical = physical_memory()
    if physical is not None and budget_gib is None:
        budget = min(budget, 0.8 * physical)
    if needed > budget:
        raise ConfigError(f"{what} would hold about {needed / 2**30:,.1f} GiB in memory, more than the budget of "
                          f"{budget / 2**30:,.1f} GiB: lower -T, --samples or --batch-size, or raise "
                          "--memory-budget GIB")


def check_settings(config, n_items: int, n_classes: int) -> None:
    """The estimate from the settings and the data alone (before any work)."""
    r = config.run
    check_estimate(estimate_bytes(n_items, r.T, r.batch_size, n_classes, 2), r.memory_budget,
                   f"simulating {n_items:,} items for {r.T:,} steps")


def check_memory(config, network, n_items: int) -> None:
    """The estimate with the converted network's populations, classes and neurons."""
    r = config.run
    n_classes = int(network.output.size)
    n_neurons = sum(int(p.size) for p in network.populations.values())
    check_estimate(estimate_bytes(n_items, r.T, r.batch_size, n_classes, len(network.populations), n_neurons),
                   r.memory_budget, f"simulating {n_items:,} items for {r.T:,} steps")
