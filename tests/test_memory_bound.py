"""Memory bounded in T (issue 19): what the evaluator and the batch loop allocate beyond a result of
N x T steps stays below the result's own size, at two T, measured with tracemalloc (numpy's array
allocations are traced). Ratios, not timings or absolute sizes."""

import tracemalloc

import numpy as np
import pytest
import torch

from neurodeploy.backends.base import run_in_batches
from neurodeploy.errors import ResultFormatError
from neurodeploy.evaluate import result as result_module
from neurodeploy.evaluate.result import ResultAssembler, SimulationResult
from neurodeploy.evaluate.summary import summarize

N_ITEMS, CLASSES = 200, 10
POPULATIONS = [{"name": "input", "role": "input", "size": 784}, {"name": "h1", "role": "hidden", "size": 100},
               {"name": "h2", "role": "hidden", "size": 100}, {"name": "output", "role": "output", "size": CLASSES}]


def synthetic_result(T: int, n_items: int = N_ITEMS, seed: int = 0) -> SimulationResult:
    """A cumulative readout whose label class drifts upward, so the confidence rises at almost every step:
    the most records the Dynamic Confidence sweep can meet (one per item and step)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n_items)
    drift = np.zeros((n_items, 1, CLASSES), np.float32)
    drift[np.arange(n_items), 0, labels] = rng.uniform(0.05, 0.3, n_items)
    readout = np.cumsum(drift + rng.normal(0, 1, (n_items, T, CLASSES)).astype(np.float32), axis=1)
    spikes = rng.integers(0, 30, (n_items, T, len(POPULATIONS))).astype(np.float32)
    events = spikes * np.float32(50)
    return SimulationResult(readout, labels, spikes, events, {"populations": POPULATIONS, "T": T})


def nbytes(result: SimulationResult) -> int:
    return sum(a.nbytes for a in (result.readout, result.labels, result.spike_counts, result.synaptic_events))


def traced_peak(fn) -> int:
    """Bytes allocated at the peak of ``fn()`` beyond what was allocated when it started."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 256 KiB, so the per-chunk temporaries are small next to these small results (a run
    uses 16 MiB chunks next to results of hundreds of MB)."""
    monkeypatch.setattr(result_module, "CHUNK_BYTES", 256 << 10)


def test_evaluator_allocates_less_than_the_result_at_two_T(small_chunks):
    ratios = {}
    for T in (300, 1200):
        result = synthetic_result(T)
        peak = traced_peak(lambda result=result: summarize(result, 0.9))
        ratios[T] = peak / nbytes(result)
    # the result holds 72 bytes per item-step; the evaluator's [N, T] curves, confidences and sweep
    # records stay well below that (before issue 19 its float64 copies of the readout took 5.3x)
    assert max(ratios.values()) < 0.75, ratios
    assert ratios[1200] < ratios[300] * 1.25, ratios  # grows with T no faster than the result


def test_batches_are_joined_without_holding_every_part(tmp_path):
    T, batch = 400, 25
    inputs, labels = torch.zeros(N_ITEMS, 1), torch.arange(N_ITEMS) % CLASSES
    template = synthetic_result(T, batch)

    def simulate(x, y, first):
        return SimulationResult(template.readout.copy(), y.numpy(), template.spike_counts.copy(),
                                template.synaptic_events.copy())

    joined = []
    peak = traced_peak(lambda: joined.append(run_in_batches(simulate, inputs, labels, batch, progress=False)))
    whole = nbytes(joined[0])
    # the whole result plus one batch (1/8 of it), never all batches and their concatenation (2x)
    assert peak < 1.25 * whole, peak / whole
    np.testing.assert_array_equal(joined[0].readout[batch:2 * batch], template.readout)


def test_one_batch_is_the_result_itself():
    part = synthetic_result(5, 4)
    assembler = ResultAssembler(4)
    assembler.add(0, part)
    assert assembler.result() is part


def test_concatenate_equals_numpy_and_refuses_a_part_of_another_shape():
    parts = [synthetic_result(6, 3, seed) for seed in range(3)]
    joined = SimulationResult.concatenate(parts)
    for name in ("readout", "labels", "spike_counts", "synaptic_events"):
        np.testing.assert_array_equal(getattr(joined, name), np.concatenate([getattr(p, name) for p in parts]))
    with pytest.raises(ResultFormatError, match="differs from the first batch's"):
        SimulationResult.concatenate([parts[0], synthetic_result(7, 3)])
    wider = synthetic_result(6, 3, 5)
    wider.readout = wider.readout.astype(np.float64)
    mixed = SimulationResult.concatenate([parts[0], wider])  # promoted as np.concatenate does
    assert mixed.readout.dtype == np.float64
    np.testing.assert_array_equal(mixed.readout, np.concatenate([parts[0].readout, wider.readout]))
    assembler = ResultAssembler(6)
    assembler.add(0, parts[0])
    with pytest.raises(ResultFormatError, match="3 of 6 items arrived"):
        assembler.result()


def test_a_checkpointed_batch_of_another_shape_is_simulated_again(tmp_path):
    inputs, labels = torch.zeros(8, 1), torch.arange(8) % CLASSES
    calls = []

    def simulate_with(T):
        def simulate(x, y, first):
            calls.append(first)
            return synthetic_result(T, len(y), first)
        return simulate

    run_in_batches(simulate_with(5), inputs, labels, 4, tmp_path, progress=False)
    (tmp_path / "batch_0000004.npz").write_bytes(b"")  # the second batch is lost ...
    synthetic_result(9, 4).save(tmp_path / "batch_0000004.npz")  # ... and one of another run lies there
    calls.clear()
    again = run_in_batches(simulate_with(5), inputs, labels, 4, tmp_path, progress=False)
    assert calls == [4] and again.T == 5


def test_chunking_changes_no_number(monkeypatch):
    """The evaluator on one-item chunks gives the numbers it gives on whole-result chunks, bit for bit."""
    result = synthetic_result(60, 50)
    whole, whole_arrays = summarize(result, 0.9, dc_alpha="fit")
    monkeypatch.setattr(result_module, "CHUNK_BYTES", 1)
    chunked, chunked_arrays = summarize(result, 0.9, dc_alpha="fit")
    assert {k: v for k, v in chunked.items() if k != "wall_time_s"} == {k: v for k, v in whole.items()
                                                                       if k != "wall_time_s"}  # NaN: no timing
    for name in ("stop_times", "mean_confidence", "never_correct", "dc_correct", "accuracy", "events_per_step"):
        np.testing.assert_array_equal(chunked_arrays[name], whole_arrays[name])
    np.testing.assert_array_equal(chunked_arrays["sweep"].accuracy, whole_arrays["sweep"].accuracy)
