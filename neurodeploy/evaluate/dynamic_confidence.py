"""Dynamic Confidence early exit (Li et al., ICCV 2023) and the oracle upper bound.

Confidence after step t is C_t = max_k softmax(O_t / alpha)_k, with O_t the cumulative readout.
An item stops at the first t with C_t > c (or runs to T). Stopping is monotone in c, so every
operating point is found exactly in one sorted pass over the "record" confidences (the values where an
item's running maximum of C rises): lowering c below a record value moves that item's stop to the
record's step. Thresholds are picked on a validation split and applied to the test split.

Stop times are 1-based steps in [1, T].

Thresholds are searched on the log-odds of the confidence, log(C / (1 - C)) = z_max - logsumexp of the
other classes' z (z = O_t / alpha): a monotone transform of C, so every decision is the same, but one
that does not saturate at C = 1.0 in floating point when alpha is small or the readout is large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, logsumexp, softmax

from neurodeploy.errors import ConfigError
from neurodeploy.evaluate.result import item_chunks


def _per_chunk(readout: np.ndarray, index: np.ndarray | None, fn) -> np.ndarray:
    """``fn`` (``[n, T, K]`` float64 -> ``[n, T]``) over item chunks of ``readout [N, T, K]`` (with
    ``index``: of those items), so that its temporaries (a copy of the chunk and a few float64 ones)
    stay within about ``CHUNK_BYTES`` whatever N and T; returns ``[N, T]`` (``[len(index), T]``) float64."""
    items = None if index is None else np.asarray(index)
    n = readout.shape[0] if items is None else len(items)
    out = np.empty((n, readout.shape[1]), np.float64)
    for rows in item_chunks(n, 64 * readout.shape[1] * readout.shape[2]):  # a float32 copy, ~6 float64
        part = readout[rows] if items is None else readout[items[rows]]
        out[rows] = fn(np.asarray(part, np.float64))
    return out


def confidence(readout: np.ndarray, alpha: float, index: np.ndarray | None = None) -> np.ndarray:
    """C_t for every item and step: ``readout [N, T, K]`` -> ``[N, T]`` (with ``index``: those items)."""
    return _per_chunk(readout, index, lambda z: softmax(z / alpha, axis=2).max(axis=2))


def _log_odds(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=2, keepdims=True)
    first_max = np.argmax(z, axis=2)[..., None]
    others = z.copy()
    np.put_along_axis(others, first_max, -np.inf, axis=2)
    return (top[..., 0] - logsumexp(others, axis=2))


def confidence_log_odds(readout: np.ndarray, alpha: float, index: np.ndarray | None = None) -> np.ndarray:
    """log(C_t / (1 - C_t)) for every item and step, ``[N, T]`` (with ``index``: those items), computed
    without saturation."""
    return _per_chunk(readout, index, lambda z: _log_odds(z / alpha))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """alpha minimizing the negative log-likelihood of softmax(logits / alpha) (temperature scaling)."""
    logits = np.asarray(logits, np.float64)

    def nll(log_alpha: float) -> float:
        return float(-log_softmax(logits / np.exp(log_alpha), axis=1)[np.arange(len(labels)), labels].mean())

    scale = np.log(max(np.abs(logits).max(), 1e-6))
    best = minimize_scalar(nll, bounds=(scale - 12.0, scale + 6.0), method="bounded")
    return float(np.exp(best.x))


def parse_alpha(spec: str | float) -> str | float:
    """Checks an alpha policy before any work: "T", "fit", "bits:B" (B a whole number 1..16) or a positive
    number (given as a number or its text); returns it as :func:`resolve_alpha` takes it."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        value = float(spec)
    elif spec in ("T", "fit"):
        return spec
    elif isinstance(spec, str) and spec.startswith("bits:"):
        bits = spec.split(":", 1)[1]
        if not (bits.isdigit() and 1 <= int(bits) <= 16):
            raise ConfigError(f"--dc-alpha {spec!r}: bits:B takes a whole number of bits from 1 to 16")
        return spec
    else:
        try:
            value = float(spec)
        except (TypeError, ValueError):
            raise ConfigError(f"--dc-alpha {spec!r}: use T, fit, bits:B or a positive number") from None
    if not (np.isfinite(value) and value > 0):
        raise ConfigError(f"--dc-alpha {spec!r}: a temperature must be a positive finite number")
    return value


def resolve_alpha(policy: str | float, T: int, final_readout: np.ndarray, labels: np.ndarray) -> float:
    """alpha from a policy: "T" (the number of steps ``T``), "bits:B" (2^B - 1, QFFS), "fit" (temperature
    scaling of O_T, ``final_readout [N, K]``, on these items' ``labels``) or a number."""
    policy = parse_alpha(policy)
    if isinstance(policy, float):
        return policy
    if policy == "T":
        return float(T)
    if policy.startswith("bits:"):
        return float(2 ** int(policy.split(":", 1)[1]) - 1)
    return fit_temperature(final_readout, labels)


@dataclass
class Sweep:
    """Every operating point of the threshold rule on one split, thresholds descending."""

    thresholds: np.ndarray    # [M]
    mean_latency: np.ndarray  # [M] steps
    accuracy: np.ndarray      # [M] fraction


def threshold_sweep(conf: np.ndarray, correct: np.ndarray) -> Sweep:
    """Exact (mean latency, accuracy) for every distinct threshold, in one sorted pass.

    conf: ``[N, T]`` confidences; correct: ``[N, T]`` bool (prediction at t is right).
    The first point (largest threshold) lets no item exit early; the last exits every item at t = 1.
    Records are found per item chunk and kept compactly (value float64, latency change int32,
    correctness change int8), sorted in place and their changes summed per distinct value, so the pass
    needs about 30 bytes per record (at most one per item and step) besides its inputs and the sweep.
    """
    n, T = conf.shape
    pieces = [list(kind) for kind in zip(*(_records(conf[rows], correct[rows]) for rows in item_chunks(n, 64 * T)),
                                        strict=True)]
    joined = []
    for k in range(3):  # one array at a time, dropping its pieces before the next is joined
        joined.append(np.concatenate(pieces[k]))
        pieces[k] = []
    values, d_latency, d_correct = joined
    del joined
    np.negative(values, out=values)  # descending values = ascending negated ones (stable: ties keep their order)
    order = np.argsort(values, kind="stable")
    values = values[order]
    np.negative(values, out=values)
    d_latency = d_latency[order]
    d_correct = d_correct[order]
    del order
    group_start = np.flatnonzero(np.append(True, values[1:] != values[:-1]))
    thresholds = np.append(values[group_start], np.nextafter(values[-1], -np.inf))
    del values
    # the point of threshold k has the changes of every record above it: those of groups 0 .. k-1
    mean_latency = _points(d_latency, group_start, n * T, n)
    del d_latency
    accuracy = _points(d_correct, group_start, int(correct[:, -1].sum()), n)
    return Sweep(thresholds, mean_latency, accuracy)


def _points(changes: np.ndarray, group_start: np.ndarray, base: int, n: int) -> np.ndarray:
    """(base + the changes of groups 0 .. k-1) / n for k = 0 .. number of groups, ``[groups + 1]``."""
    totals = np.empty(len(group_start) + 1, np.int64)
    totals[0] = 0
    np.add.reduceat(changes, group_start, dtype=np.int64, out=totals[1:])
    np.cumsum(totals, out=totals)
    totals += base
    return totals / n


def _records(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The records of items ``conf [n, T]`` (steps where an item's running maximum of the confidence
    rises; the first step always), item by item: their values, and how latency and correctness change
    when an item's stop moves from its next record (or T) to this one."""
    T = conf.shape[1]
    record = np.ones_like(conf, dtype=bool)
    record[:, 1:] = conf[:, 1:] > np.maximum.accumulate(conf, axis=1)[:, :-1]
    items, steps = np.nonzero(record)  # sorted by item, then step
    del record
    stops = steps + 1
    last_of_item = np.append(items[1:] != items[:-1], True)
    next_stop = np.where(last_of_item, T, np.append(stops[1:], T))
    d_latency = (stops - next_stop).astype(np.int32)
    d_correct = (correct[items, steps].astype(np.int8) - correct[items, next_stop - 1].astype(np.int8))
    return conf[items, steps], d_latency, d_correct


def pareto_front(sweep: Sweep) -> np.ndarray:
    """Indices of the sweep's non-dominated points (no other point is faster and at least as accurate),
    ordered by increasing latency."""
    order = np.lexsort((-sweep.accuracy, sweep.mean_latency))
    front, best = [], -np.inf
    for index in order:
        if sweep.accuracy[index] > best:
            front.append(index)
            best = sweep.accuracy[index]
    return np.array(front, dtype=np.int64)


PICK_RULES = ("stable", "fastest")


def choose_threshold(sweep: Sweep, tolerance: float = 0.0, rule: str = "stable") -> int:
    """Index of the chosen operating point. The first sweep point is the full-T run; along the sweep
    thresholds fall and mean latency never rises.

    "fastest": the lowest-latency point whose accuracy is at least the full-T accuracy minus
        ``tolerance`` (the rule of ``docs/semantics.md``, "Dynamic Confidence", applied to every point).
    "stable" (default): the same rule restricted to the unbroken run of points, starting at full T,
        that all stay at or above that accuracy: stop lowering the threshold at the first point that
        drops below. A single lucky point far down the sweep is then not picked, which matters
        because the pick must carry over to unseen items (dense MNIST, embedded data, 10 seeded
        validation/test splits: test-part accuracy change -0.9..+0.1 pp with "fastest", -0.1..0 pp
        with "stable", at 87 % vs 77 % step saving).
    """
    if rule not in PICK_RULES:
        raise ConfigError(f"rule must be one of {PICK_RULES}, not {rule!r}")
    ok = sweep.accuracy >= sweep.accuracy[0] - tolerance - 1e-12
    if rule == "stable":
        first_bad = np.flatnonzero(~ok)
        ok[first_bad[0] if first_bad.size else len(ok):] = False
    candidates = np.flatnonzero(ok)
    return int(candidates[np.lexsort((-sweep.accuracy[candidates], sweep.mean_latency[candidates]))[0]])


def stop_times(conf: np.ndarray, threshold: float) -> np.ndarray:
    """First step (1-based) with C_t > threshold, else T; shape ``[N]``."""
    above = conf > threshold
    return np.where(above.any(axis=1), above.argmax(axis=1) + 1, conf.shape[1])


def oracle(correct: np.ndarray) -> dict:
    """Upper bound: stop each item at its first correct step. Items never correct count as wrong and
    stop at T ("never_correct_at_T") or at 1 ("never_correct_at_1")."""
    ever = correct.any(axis=1)
    first = correct.argmax(axis=1) + 1
    T = correct.shape[1]
    return {
        "accuracy": float(ever.mean()),
        "mean_latency": float(np.where(ever, first, T).mean()),
        "mean_latency_never_correct_at_1": float(np.where(ever, first, 1).mean()),
        "stop_times": np.where(ever, first, T),
    }


def validation_test_split(n_items: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint index arrays (validation, test) over ``n_items`` items."""
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError(f"validation fraction must lie in (0, 1), got {validation_fraction}")
    order = np.random.default_rng(seed).permutation(n_items)
    n_val = max(1, min(n_items - 1, int(round(validation_fraction * n_items))))
    return np.sort(order[:n_val]), np.sort(order[n_val:])


def evaluate_dynamic_confidence(result, alpha: str | float = "T", tolerance: float = 0.0,
                                validation_fraction: float = 0.5, seed: int = 0, rule: str = "stable") -> dict:
    """Picks the threshold on a validation part of ``result`` and applies it to the rest (test part).
    The sweep's thresholds are log-odds; the summary gives the threshold as a confidence too.

    Returns the summary (alpha, threshold, mean latency, accuracy, full-T accuracy, step saving,
    spike and synaptic-event savings on the test part, oracle bound on the test part) plus arrays for
    plots under the key "arrays" (validation sweep, Pareto front, chosen index, test stop times, mean
    confidence per step, test items never correct and those correct at their stop). The readout is
    read per item chunk: no copy of a part of the result, no float64 copy of its readout.
    """
    from neurodeploy.evaluate.metrics import item_events, spikes_per_neuron

    val_index, test_index = validation_test_split(result.n_items, validation_fraction, seed)
    readout = result.readout
    alpha_value = resolve_alpha(alpha, result.T, readout[val_index, -1], result.labels[val_index])
    sweep = threshold_sweep(confidence_log_odds(readout, alpha_value, val_index), result.correct(val_index))
    chosen = choose_threshold(sweep, tolerance, rule)
    threshold = float(sweep.thresholds[chosen])
    test_conf = confidence_log_odds(readout, alpha_value, test_index)
    test_correct = result.correct(test_index)
    stops = stop_times(test_conf, threshold)
    n_test, T = len(test_index), result.T
    dc_correct = test_correct[np.arange(n_test), stops - 1]
    accuracy = float(dc_correct.mean())
    events_full, events_dc = (float(item_events(result, test_index, stop).mean()) for stop in (None, stops))
    spikes_full, spikes_dc = spikes_per_neuron(result, index=test_index), spikes_per_neuron(result, stops, test_index)
    bound = oracle(test_correct)
    summary = {
        "alpha": alpha_value,
        "alpha_policy": str(alpha),
        "threshold": float(expit(threshold)),
        "threshold_log_odds": threshold,
        "tolerance": tolerance,
        "pick_rule": rule,
        "n_validation": len(val_index),
        "n_test": n_test,
        "mean_latency": float(stops.mean()),
        "accuracy": accuracy,
        "full_T_accuracy": float(test_correct[:, -1].mean()),
        "step_saving": 1.0 - float(stops.mean()) / T,
        "spikes_per_neuron_full": spikes_full,
        "spikes_per_neuron_dc": spikes_dc,
        "synaptic_events_full": events_full,
        "synaptic_events_dc": events_dc,
        "event_saving": 1.0 - events_dc / events_full if events_full else 0.0,
        "validation_full_T_accuracy": float(sweep.accuracy[0]),
        "validation_accuracy": float(sweep.accuracy[chosen]),
        "validation_mean_latency": float(sweep.mean_latency[chosen]),
    }
    oracle_summary = {key: value for key, value in bound.items() if key != "stop_times"}
    arrays = {
        "sweep": sweep, "front": pareto_front(sweep), "chosen": chosen, "stop_times": stops,
        "oracle_stop_times": bound["stop_times"], "mean_confidence": expit(test_conf).mean(axis=0),
        "never_correct": ~test_correct.any(axis=1), "dc_correct": dc_correct,
    }
    return {"dynamic_confidence": summary, "oracle": oracle_summary, "arrays": arrays}
