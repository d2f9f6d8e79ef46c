"""The nest backend (NEST's iaf_psc_delta through pyNN.nest) and the gpu backend's nest profile that predicts it,
against hand-computed spikes (docs/backends.md, "nest"). The conformance suite (tests/backends/) checks that the
two agree neuron for neuron on a conv net; here the values themselves are checked."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.backends.nest import CARRIES
from neurodeploy.backends.nest.worker import NON_LEAKY_TAU_M_MS, membrane_factors
from neurodeploy.backends.pynn.lowering import lower_network
from neurodeploy.errors import BackendError, ConfigError
from neurodeploy.ir import Dense, Network, NeuronSpec, Population
from neurodeploy.passes.reset_compensation import annotate_reset_compensation

needs_nest = pytest.mark.skipif(importlib.util.find_spec("nest") is None or importlib.util.find_spec("pyNN") is None,
                                reason="the nest backend needs nest-simulator and PyNN")


def _chain(overshoot: float | None, leak_tau: float | None = None) -> Network:
    """input (1) -> h (1, threshold 1, subtract reset) -> out (1), weights 0.3 and 1; ``overshoot``: the reset
    compensation's mean overshoot of h (None: no annotation, a hard reset to 0)."""
    net = Network()
    net.add_population(Population("in", (1,), "input"))
    net.add_population(Population("h", (1,), "hidden", NeuronSpec(leak_tau=leak_tau)))
    net.add_population(Population("out", (1,), "output", NeuronSpec()))
    net.connect("in", "h", [Dense(np.array([[0.3]], np.float32))])
    net.connect("h", "out", [Dense(np.array([[1.0]], np.float32))])
    net.validate()
    if overshoot is not None:
        annotate_reset_compensation(net, {"h": overshoot}, "test")
    return net


#: h's input is 0.3 per step from step 2 on (the input projection's one-step delay): v = 0.3, 0.6, 0.9, 1.2 at
#: steps 2..5, a spike at step 5; a hard reset to 0 then takes 4 more steps (spikes 5, 9, 13), a reset to 0.25
#: 3 (0.55, 0.85, 1.15: spikes 5, 8, 11, 14)
HAND = {None: [5, 9, 13], 0.25: [5, 8, 11, 14]}
T = 14


def _spike_steps(result) -> list[int]:
    return [int(k) + 1 for k in np.nonzero(result.spike_counts[0, :, 1])[0]]


def _run(backend, net):
    return backend.run(net, torch.ones(1, 1), torch.zeros(1, dtype=torch.long),
                       RunOptions(T=T, batch_size=1, progress=False, record_neuron_counts=True))


def test_membrane_factors_make_nest_input_gain_one():
    """NEST's iaf_psc_delta adds tau_m (1 - exp(-h / tau_m)) / C_m times I_e per step (h = 1 ms): C_m makes it 1;
    tau_m gives the IR's decay beta = exp(-1 / tau_m); a non-leaky population decays by about 1e-12 per step."""
    pop = lower_network(_chain(None, leak_tau=4.0), "analog", carries=CARRIES).populations[0]
    tau_m, c_m = membrane_factors(pop)
    assert tau_m[0] == pytest.approx(4.0, rel=1e-12)
    assert tau_m[0] * (1.0 - math.exp(-1.0 / tau_m[0])) / c_m[0] == pytest.approx(1.0, rel=1e-15)
    pop = lower_network(_chain(None), "analog", carries=CARRIES).populations[0]
    tau_m, c_m = membrane_factors(pop)
    assert tau_m[0] == NON_LEAKY_TAU_M_MS and 1.0 - math.exp(-1.0 / tau_m[0]) < 2e-12
    assert tau_m[0] * (1.0 - math.exp(-1.0 / tau_m[0])) / c_m[0] == pytest.approx(1.0, rel=1e-15)


@pytest.mark.parametrize("overshoot", [None, 0.25])
def test_gpu_nest_profile_resets_hard_to_the_compensation(overshoot):
    result = _run(get_backend("gpu", profile="nest", device="cpu"), _chain(overshoot))
    assert _spike_steps(result) == HAND[overshoot]


def test_refusals_in_one_line():
    with pytest.raises(ConfigError, match="--v-reset refined simulates SpiNNaker's arithmetic"):
        get_backend("gpu", profile="nest", v_reset="refined")
    with pytest.raises(ConfigError, match="nest backend has no option --workers"):
        get_backend("nest", workers=2)
    backend = get_backend("nest")
    synaptic = _chain(None)
    synaptic.populations["h"].neuron.tau_syn = 2.0
    with pytest.raises(BackendError, match=r"population 'h' uses tau_syn, which NEST's iaf_psc_delta"):
        _run(backend, synaptic)
    late = _chain(None)
    late.projections[0].delay = 2
    with pytest.raises(BackendError, match="receives the analog input with a delay of more than one step"):
        _run(backend, late)


@needs_nest
@pytest.mark.slow
@pytest.mark.parametrize("overshoot, threads", [(None, 1), (0.25, 2)])
def test_nest_spikes_and_membrane_by_hand(overshoot, threads):
    """NEST itself: h spikes at the hand-computed steps and the output membrane is the count of h's spikes one
    step later (weight 1, threshold 1), with one thread or two."""
    result = _run(get_backend("nest", threads=threads), _chain(overshoot))
    steps = HAND[overshoot]
    assert _spike_steps(result) == steps
    expected = [sum(s < t for s in steps) for t in range(1, T + 1)]
    np.testing.assert_allclose(result.readout[0, :, 0], expected, atol=1e-9)


@needs_nest
@pytest.mark.slow
def test_spiking_output_and_compensated_hidden_equal_the_gpu_nest_profile():
    """A spike-count readout resets hard too (to 0: the compensation covers hidden populations only), and the
    prepared hidden population to its mean overshoot: NEST and the gpu nest profile agree neuron for neuron."""
    rng = np.random.default_rng(5)
    net = Network()
    net.add_population(Population("in", (6,), "input"))
    net.add_population(Population("h", (10,), "hidden", NeuronSpec(threshold=0.8)))
    net.add_population(Population("out", (3,), "output", NeuronSpec(readout="spikes", threshold=0.5)))
    net.connect("in", "h", [Dense(rng.normal(0.3, 0.3, (10, 6)).astype(np.float32))])
    net.connect("h", "out", [Dense(rng.normal(0.2, 0.5, (3, 10)).astype(np.float32))])
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1])
    backend = get_backend("nest")
    net = backend.prepare(net.validate(), x)
    assert net.populations["h"].metadata["reset_compensation"]["mean_overshoot"] > 0
    run = RunOptions(T=25, batch_size=5, progress=False, record_neuron_counts=True)
    result = backend.run(net, x, labels, run)
    reference = get_backend("gpu", profile="nest", device="cpu").run(net, x, labels, run)
    assert result.neuron_counts[:, -3:].sum() > 0
    np.testing.assert_array_equal(result.neuron_counts, reference.neuron_counts)
    np.testing.assert_array_equal(result.readout, reference.readout)
