"""The backend contract, checked the same way for every registered backend that can run here: result
shapes and metadata, determinism under a seed, exact agreement with the backend each one claims to
equal, and refusals of what a backend cannot do. A third-party backend (entry-point group
``neurodeploy.backends``) can run this file against itself.

Backends that need a simulator package are skipped, with the reason, where it is not installed; a
backend that returns no data here (SpiNNaker on a virtual board) is checked for what it does instead:
saying so, and naming the backend that predicts it.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn

from neurodeploy.backends import Backend, ExitPolicy, RunOptions, available_backends, backend_class, get_backend
from neurodeploy.convert import convert
from neurodeploy.errors import BackendError, ConfigError, DataError

#: backend -> (options for this machine, packages it needs, whether its results are data here: a virtual
#: SpiNNaker board runs the whole per-item loop and returns zeros that say so)
HERE = {
    "gpu": ({"device": "cpu"}, (), True),
    "neuron": ({"workers": 2}, ("pyNN", "neuron"), True),
    "nest": ({"threads": 2}, ("pyNN", "nest"), True),
    "spinnaker": ({}, ("spynnaker",), False),
}
SLOW = {"neuron", "nest", "spinnaker"}


def _params():
    for name in sorted(available_backends()):
        options, packages, runs = HERE.get(name, ({}, (), True))
        marks = [pytest.mark.slow] if name in SLOW else []
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        if missing:
            marks.append(pytest.mark.skip(reason=f"{name} needs {', '.join(missing)}"))
        yield pytest.param(name, options, runs, marks=marks, id=name)


BACKENDS = list(_params())


@pytest.fixture(scope="module")
def network():
    """A small conv net (conv, average pool inside a projection, dense) converted with seeded
    uniform initial membranes, and 6 items."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(6, 1, 8, 8)
    return convert(model, x, normalization="max", v_init="uniform", seed=1), x, torch.tensor([0, 1, 2, 0, 1, 2])


def _options(**kw) -> RunOptions:
    return RunOptions(T=kw.pop("T", 12), batch_size=kw.pop("batch_size", 4), progress=False, **kw)


@pytest.mark.parametrize("name, options, runs", BACKENDS)
def test_is_a_backend_with_declared_options(name, options, runs):
    cls = backend_class(name)
    assert issubclass(cls, Backend) and cls.name == name
    for option in cls.options:
        assert option.help and option.flag.startswith("--")
    with pytest.raises(ConfigError, match=f"{name} backend has no option --no-such-option"):
        cls.validate_options({"no_such_option": 1})
    assert set(cls.validate_options({})) == {option.name for option in cls.options}


@pytest.mark.parametrize("name, options, runs", BACKENDS)
def test_result_shape_metadata_and_determinism(name, options, runs, network, tmp_path):
    net, x, labels = network
    backend = get_backend(name, **options)
    backend.use_folder(tmp_path / "backend")
    first = backend.run(net, x, labels, _options(), checkpoint_dir=tmp_path / "a")
    second = get_backend(name, **options).run(net, x, labels, _options())
    n_pops = len(net.populations)
    assert first.readout.shape == (6, 12, 3) and first.labels.tolist() == labels.tolist()
    assert first.spike_counts.shape == first.synaptic_events.shape == (6, 12, n_pops)
    metadata = first.metadata
    for key in ("backend", "options", "T", "dt_ms", "encoding", "pipeline_delay", "n_neurons", "n_synapses",
                "populations", "timings"):
        assert key in metadata, key
    assert metadata["backend"] == name and metadata["T"] == 12
    assert metadata["n_neurons"] == sum(p.size for p in net.populations.values() if p.role != "input")
    assert set(metadata["timings"]) >= {"build_s", "run_s", "per_item_s"}
    np.testing.assert_array_equal(first.readout, second.readout)  # deterministic under the seed
    np.testing.assert_array_equal(first.spike_counts, second.spike_counts)
    if not runs:  # no data here: the result says so, and another backend predicts it
        assert metadata["virtual"] and "runs nothing" in metadata["note"] and not first.readout.any()
        assert backend.predictor() is not None


@pytest.mark.parametrize("name, options, runs", BACKENDS)
def test_exact_agreement_where_claimed(name, options, runs, network):
    net, x, labels = network
    backend = get_backend(name, **options)
    claim = backend.exact_reference()
    if claim is None:
        pytest.skip(f"{name} with {options} claims no exact agreement with another backend")
    run = _options(record_neuron_counts=True)
    reference = get_backend(claim[0], **claim[1]).run(net, x, labels, run)
    result = backend.run(net, x, labels, run)
    np.testing.assert_array_equal(result.neuron_counts, reference.neuron_counts)
    assert (result.predictions() == reference.predictions()).all()


@pytest.mark.parametrize("name, options, runs", BACKENDS)
def test_refusals(name, options, runs, network):
    net, x, labels = network
    backend = get_backend(name, **options)
    with pytest.raises(DataError, match=r"inputs have shape \(1, 9, 9\) per item, the network expects \(1, 8, 8\)"):
        backend.run(net, torch.rand(2, 1, 9, 9), labels[:2], _options())
    with pytest.raises(ConfigError, match="T must be at least 1 step"):
        backend.run(net, x, labels, _options(T=0))
    with pytest.raises(ConfigError, match="unknown encoding"):
        backend.run(net, x, labels, _options(encoding="morse"))
    if not backend.supports_early_exit:
        with pytest.raises(BackendError, match=f"early exit .* not implemented by the {name} backend"):
            backend.run(net, x, labels, _options(exit_policy=ExitPolicy(12.0, 0.0)))


@pytest.fixture(scope="module")
def recurrent():
    """A small trained-style SNN: a leaky population with a synaptic current, hard reset to v_reset and a
    one-step recurrent projection, a leaky readout, and 4 items."""
    from neurodeploy.ir import Dense, Network, NeuronSpec, Population

    rng = np.random.default_rng(3)
    net = Network()
    net.add_population(Population("in", (5,), "input"))
    net.add_population(Population("h", (8,), "hidden", NeuronSpec(leak_tau=8.0, v_leak=0.1, tau_syn=2.0,
                                                                  reset="zero", v_reset=0.2)))
    net.add_population(Population("out", (3,), "output", NeuronSpec(leak_tau=10.0)))
    net.connect("in", "h", [Dense(rng.normal(0.3, 0.3, (8, 5)).astype(np.float32))])
    net.connect("h", "h", [Dense(rng.normal(0.0, 0.4, (8, 8)).astype(np.float32))], delay=1)
    net.connect("h", "out", [Dense(rng.normal(0.2, 0.5, (3, 8)).astype(np.float32))])
    return net.validate(), torch.rand(4, 5, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("name, options, runs", BACKENDS)
def test_trained_snn_runs_exactly_or_is_refused_in_one_line(name, options, runs, recurrent):
    """Leak, synaptic current, v_reset and recurrence (docs/semantics.md, "Trained SNNs"): a backend either
    refuses them in one line naming what it does not carry, or runs them, equal to the backend it claims."""
    net, x, labels = recurrent
    backend = get_backend(name, **options)
    run = _options(T=20, record_neuron_counts=backend.supports_neuron_counts)
    try:
        result = backend.run(net, x, labels, run)
    except BackendError as err:
        assert "\n" not in str(err) and "does not implement" in str(err)
        return
    assert result.readout.shape == (4, 20, 3)
    claim = backend.exact_reference()
    if claim is not None:
        reference = get_backend(claim[0], **claim[1]).run(net, x, labels, run)
        assert reference.spike_counts.sum() > 0
        np.testing.assert_array_equal(result.neuron_counts, reference.neuron_counts)


@pytest.mark.parametrize("name, options, runs", BACKENDS)
@pytest.mark.parametrize("feature", ["spike caps", "negative spikes"])
def test_declared_neuron_features_run_and_the_others_are_refused(name, options, runs, feature, network):
    """``Backend.neuron_features`` (what a job refuses before any work) says what the backend does at run time: a
    declared feature runs; one not declared is refused in one line."""
    import copy

    from neurodeploy.ir.population import CONVERSION_FEATURES

    assert set(backend_class(name).neuron_features) <= set(CONVERSION_FEATURES)
    net, x, labels = network
    net = copy.deepcopy(net)
    for pop in net.populations.values():
        if pop.role == "hidden":
            pop.neuron.spike_cap = 3 if feature == "spike caps" else None
            pop.neuron.negative_spikes = feature == "negative spikes"
            assert pop.neuron.conversion_features() == [feature]
    backend = get_backend(name, **options)
    if feature in backend.neuron_features:
        assert backend.run(net, x, labels, _options()).readout.shape == (6, 12, 3)
        return
    with pytest.raises(BackendError) as refusal:
        backend.run(net, x, labels, _options())
    assert "\n" not in str(refusal.value) and feature.rstrip("s") in str(refusal.value)
