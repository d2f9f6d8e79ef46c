"""Scale optimization: the parameter space is exact, the search never ends worse than H0, and an
interrupted search resumes to the same result."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from neurodeploy.backends.gpu import GpuBackend
from neurodeploy.convert import convert
from neurodeploy.convert.normalize import apply_normalization
from neurodeploy.errors import NeurodeployError
from neurodeploy.optimize import OptimizeConfig, ScaleSpace, channel_groups, optimize_scales
from neurodeploy.train import evaluate_accuracy
from neurodeploy.train.trainer import split_validation


def simulator(network, images, labels, T):
    return GpuBackend(device="cpu").anytime_simulator(network, images, labels, T)


def search(network, images, labels, ann, config, *args, **kwargs):
    """The scale search on the reference simulator."""
    return optimize_scales(network, simulator(network, images, labels, config.T), images, labels, ann, config,
                           *args, **kwargs)


@pytest.fixture(scope="module")
def setup(small_dense_model, mnist):
    network = convert(small_dense_model, mnist.train.images[:500], granularity="neuron", v_init="half")
    _, val = split_validation(mnist.train, 0.1, 0)
    images, labels = val.images[:150], val.labels[:150]
    return network, images, labels, evaluate_accuracy(small_dense_model, val.head(150))


def test_threshold_factors_equal_rescaled_weights(setup):
    """Threshold exp(z) with spikes of amplitude theta is the normalization with lambda * exp(z)."""
    network, images, labels, _ = setup
    space = ScaleSpace.of(network)
    z = np.random.default_rng(1).uniform(-0.5, 0.5, space.size)
    by_threshold = space.apply(network, z)
    by_weights = copy.deepcopy(network)
    for population in by_weights.populations.values():
        if population.role == "hidden":
            population.neuron.v_init = "zero"
    offsets = space.offsets()
    apply_normalization(by_weights, {name: np.exp(z[offsets[i]:offsets[i + 1]])
                                     for i, name in enumerate(space.populations)})
    for name in space.populations:  # half threshold in the rescaled units
        by_threshold.populations[name].neuron.v_init = "zero"
    cached = simulator(network, images, labels, 30)
    a1, e1 = cached.curves(by_threshold)
    a2, e2 = simulator(by_weights, images, labels, 30).curves(by_weights)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_allclose(e1, e2, rtol=1e-6)


def test_channel_groups_follow_heuristic_scale(setup):
    network, *_ = setup
    space = ScaleSpace.of(network)
    labels = channel_groups(network, space, 4)
    first = space.populations[0]
    lam = np.asarray(network.populations[first].metadata["lambda"])
    n = space.channels[0]
    group = labels[:n]
    assert sorted(np.bincount(group)) == [n // 4] * 4
    # every channel of group 0 has a smaller heuristic scale than every channel of group 3
    assert lam[group == 0].max() <= lam[group == 3].min()
    assert labels[n:].min() == 4  # the next population's groups are numbered after
    assert np.array_equal(channel_groups(network, space, None), np.arange(space.n_scales))


@pytest.mark.parametrize("method", ["coarse_to_fine", "subplex"])
def test_search_never_worse_than_start(setup, method):
    network, images, labels, ann = setup
    config = OptimizeConfig(method=method, max_evals=25, T=20, groups=(1, 2), evals_per_dimension=(5, 5))
    optimized, result = search(network, images, labels, ann, config, progress=False)
    assert result.evaluations == 25
    assert result.losses[0] == pytest.approx(result.start_loss)
    assert result.best_loss <= result.start_loss
    assert result.best_loss == pytest.approx(min(result.losses))
    # the returned network measures what the search recorded
    again = simulator(network, images, labels, 20).curves(optimized)[0]
    assert again.max() == pytest.approx(result.best.peak_accuracy)


def test_interrupted_search_resumes_to_same_result(setup, tmp_path):
    network, images, labels, ann = setup
    config = OptimizeConfig(max_evals=30, T=20, groups=(1, 2), evals_per_dimension=(8, 6))
    _, whole = search(network, images, labels, ann, config, tmp_path / "whole.jsonl", progress=False)

    def interrupt(count: int) -> None:
        if count == 12:
            raise KeyboardInterrupt

    log = tmp_path / "cut.jsonl"
    with pytest.raises(KeyboardInterrupt):
        search(network, images, labels, ann, config, log, progress=False, on_evaluation=interrupt)
    assert len(log.read_text().splitlines()) == 1 + 12
    with log.open("a") as handle:
        handle.write('{"x": [0.1, ')  # a line cut off mid-write
    _, resumed = search(network, images, labels, ann, config, log, progress=False)
    assert resumed.replayed == 12
    assert resumed.losses == whole.losses
    np.testing.assert_array_equal(resumed.x, whole.x)
    assert log.read_text().splitlines()[1:] == (tmp_path / "whole.jsonl").read_text().splitlines()[1:]


def test_log_of_another_search_is_refused(setup, tmp_path):
    network, images, labels, ann = setup
    log = tmp_path / "log.jsonl"
    search(network, images, labels, ann, OptimizeConfig(max_evals=3, T=10), log, progress=False)
    with pytest.raises(NeurodeployError, match="other settings"):
        search(network, images, labels, ann, OptimizeConfig(max_evals=3, T=12), log, progress=False)
    log.write_text(json.dumps({"format": "something else"}) + "\n")
    with pytest.raises(NeurodeployError, match="not a version-1"):
        search(network, images, labels, ann, OptimizeConfig(max_evals=3, T=10), log, progress=False)


def test_loss_is_the_papers_formula(setup):
    """L_SNN = lambda_e (1 - peak) + P_l / P_l(H0) + P_p / P_p(H0): at H0 it is lambda_e (1 - peak) + 2."""
    network, images, labels, ann = setup
    _, result = search(network, images, labels, ann, OptimizeConfig(max_evals=1, T=15, lambda_e=50.0),
                                progress=False)
    start = result.start
    assert result.start_loss == pytest.approx(50.0 * (1 - start.peak_accuracy) + 2.0)
    assert result.lambdas["lambda_l"] == pytest.approx(1 / start.pareto_latency)
    assert result.lambdas["lambda_p"] == pytest.approx(1 / start.pareto_power)


def test_bad_settings_are_named():
    with pytest.raises(NeurodeployError, match="method"):
        OptimizeConfig(method="adam")
    with pytest.raises(NeurodeployError, match="max_factor"):
        OptimizeConfig(max_factor=0.5)


def test_qffs_network_is_refused(setup):
    network, *_ = setup
    qffs = copy.deepcopy(network)
    next(p for p in qffs.populations.values() if p.role == "hidden").neuron.spike_cap = 3
    with pytest.raises(NeurodeployError, match="QFFS"):
        ScaleSpace.of(qffs)


def test_wrong_vector_shape_is_named(setup):
    network, *_ = setup
    with pytest.raises(NeurodeployError, match="shape"):
        ScaleSpace.of(network).apply(network, torch.zeros(3).numpy())
