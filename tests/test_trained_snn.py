"""Trained-SNN dynamics of the IR (docs/semantics.md, "Neuron model" and "The IR"): leak towards v_leak,
hard reset to v_reset, per-neuron time constants, synaptic current (tau_syn), the delayed reset, projection
delays and recurrence, checked against hand-computed traces on the gpu backend, the IR file format, the
refusals of backends that do not carry them, and (slow) the neuron backend spike for spike."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import simulate

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.backends.pynn.lowering import lower_network
from neurodeploy.errors import BackendError, IRFormatError, IRValidationError
from neurodeploy.ir import Dense, Identity, Network, NeuronSpec, Population, load_network, save_network

#: leak_tau / tau_syn (steps) whose per-step factor exp(-1 / tau) is 0.5 and 0.75
HALF = 1.0 / math.log(2.0)
THREE_QUARTERS = -1.0 / math.log(0.75)


def chain(hidden: NeuronSpec | None, output: NeuronSpec, n: int = 1, delay: int = 0, bias=None) -> Network:
    """input (n) -> [hidden (n) ->] output (n), identity projections; ``delay`` on the last projection."""
    net = Network()
    net.add_population(Population("in", (n,), "input"))
    last = "in"
    if hidden is not None:
        net.add_population(Population("h", (n,), "hidden", hidden, bias=bias))
        net.connect("in", "h", [Identity()])
        last = "h"
    net.add_population(Population("out", (n,), "output", output, bias=None if hidden is not None else bias))
    net.connect(last, "out", [Dense(np.eye(n, dtype=np.float32))], delay=delay)
    return net.validate()


def readout(net: Network, x, T: int, **kw) -> np.ndarray:
    return simulate(net, torch.tensor([x], dtype=torch.float32), T, **kw).readout[0]


def test_leaky_readout_decays_towards_v_leak():
    # v(t) = 0.5 v(t-1) + 0.5 * 1.0 + 0.4: 0.9, 1.35, 1.575, 1.6875 (zero delay)
    net = chain(None, NeuronSpec(leak_tau=HALF, v_leak=1.0))
    np.testing.assert_allclose(readout(net, [0.4], 4)[:, 0], [0.9, 1.35, 1.575, 1.6875], atol=1e-6)
    # pynn profile: the input arrives from step 2, the leak drive from step 1: 0.5, 1.15, 1.475
    np.testing.assert_allclose(readout(net, [0.4], 3, profile="pynn")[:, 0], [0.5, 1.15, 1.475], atol=1e-6)


def test_per_neuron_time_constants():
    # neuron 0: beta 0.5 -> 0.4, 0.6, 0.7, 0.75; neuron 1: beta 0.75 -> 0.4, 0.7, 0.925, 1.09375
    net = chain(None, NeuronSpec(leak_tau=np.array([HALF, THREE_QUARTERS])), n=2)
    np.testing.assert_allclose(readout(net, [0.4, 0.4], 4),
                               [[0.4, 0.4], [0.6, 0.7], [0.7, 0.925], [0.75, 1.09375]], atol=1e-6)


@pytest.mark.parametrize("v_reset, spikes", [(0.0, [0, 1, 1, 2, 2, 3]), (0.7, [0, 1, 2, 3, 4, 5])])
def test_hard_reset_to_v_reset(v_reset, spikes):
    # beta 0.5, input 0.7: v = 0.7, 1.05 (spike) -> v_reset; from 0: 0.7, 1.05, ... every second step;
    # from 0.7: 0.35 + 0.7 = 1.05 every step after the first spike
    net = chain(NeuronSpec(leak_tau=HALF, reset="zero", v_reset=v_reset), NeuronSpec())
    np.testing.assert_array_equal(readout(net, [0.7], 6)[:, 0], spikes)


def test_synaptic_current_trace():
    # i = 0.5 i + 1: 1, 1.5, 1.75, 1.875; v = 0.5 v + i: 1, 2, 2.75, 3.25
    net = chain(None, NeuronSpec(leak_tau=HALF, tau_syn=HALF))
    np.testing.assert_allclose(readout(net, [1.0], 4)[:, 0], [1.0, 2.0, 2.75, 3.25], atol=1e-6)
    # the bias enters the synaptic current too: input 0.5 plus bias 0.5 gives the same trace
    biased = chain(None, NeuronSpec(leak_tau=HALF, tau_syn=HALF), bias=np.array([0.5], np.float32))
    np.testing.assert_allclose(readout(biased, [0.5], 4)[:, 0], [1.0, 2.0, 2.75, 3.25], atol=1e-6)


def test_delayed_reset_is_snntorchs_leaky_and_synaptic():
    snn = pytest.importorskip("snntorch")
    # Leaky, beta 0.5, input 0.7, threshold 1: m = 0.7, 1.05 (spike), 0.525 + 0.7 - 1 = 0.225, 0.8125,
    # 1.10625 (spike), 0.253125, 0.8265625, 1.11328125 (spike): spikes at steps 2, 5, 8 (immediate: 2, 4, 6, 8)
    delayed = chain(NeuronSpec(leak_tau=HALF, reset_timing="next_step"), NeuronSpec())
    counts = readout(delayed, [0.7], 8)[:, 0]
    np.testing.assert_array_equal(counts, [0, 1, 1, 1, 2, 2, 2, 3])
    immediate = readout(chain(NeuronSpec(leak_tau=HALF), NeuronSpec()), [0.7], 8)[:, 0]
    np.testing.assert_array_equal(immediate, [0, 1, 1, 2, 2, 3, 3, 4])
    leaky = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="subtract")
    mem = leaky.init_leaky()
    library = []
    for _ in range(8):
        spike, mem = leaky(torch.tensor([0.7]), mem)
        library.append(float(spike))
    np.testing.assert_array_equal(counts, np.cumsum(library))
    # Synaptic (alpha 0.5, beta 0.5), input 0.4: the IR's tau_syn with the delayed reset
    synaptic = snn.Synaptic(alpha=0.5, beta=0.5, threshold=1.0)
    syn, mem = synaptic.init_synaptic()
    library = []
    for _ in range(20):
        spike, syn, mem = synaptic(torch.tensor([0.4]), syn, mem)
        library.append(float(spike))
    net = chain(NeuronSpec(leak_tau=HALF, tau_syn=HALF, reset_timing="next_step"), NeuronSpec())
    np.testing.assert_array_equal(readout(net, [0.4], 20)[:, 0], np.cumsum(library))
    assert library[:8] == [0, 0, 1, 0, 0, 1, 0, 1]  # hand-computed: v = 0.4, 0.8, 1.1, 0.3, 0.925, 1.25, ...


@pytest.mark.parametrize("profile, delay, first", [("ideal", 0, 1), ("ideal", 3, 4), ("pynn", 0, 3),
                                                    ("pynn", 3, 5)])
def test_projection_delay(profile, delay, first):
    # h fires every step from step 1 (ideal) or 2 (pynn: the input arrives one step late); the output counts
    # the spikes that arrived: from step 1 + delay, where PyNN machines delay at least one step
    net = chain(NeuronSpec(), NeuronSpec(), delay=delay)
    T = 8
    expected = np.maximum(np.arange(1, T + 1) - first + 1, 0)
    for chunk in (1, 3, None):
        np.testing.assert_array_equal(readout(net, [1.0], T, profile=profile, chunk=chunk)[:, 0], expected)


def two_neuron_loop(ab: int = 0, ba: int = 2) -> Network:
    """a (starts at threshold) -> b (delay ``ab``) -> a (delay ``ba``); the output counts b's spikes."""
    net = Network()
    net.add_population(Population("in", (1,), "input"))
    net.add_population(Population("a", (1,), "hidden", NeuronSpec(v_init=1.0)))
    net.add_population(Population("b", (1,), "hidden", NeuronSpec()))
    net.add_population(Population("out", (1,), "output", NeuronSpec()))
    net.connect("in", "a", [Dense(np.zeros((1, 1), np.float32))])
    net.connect("a", "b", [Identity()], delay=ab)
    net.connect("b", "a", [Identity()], delay=ba)
    net.connect("b", "out", [Identity()])
    return net.validate()


@pytest.mark.parametrize("chunk", [1, None])
def test_two_neuron_recurrent_loop(chunk):
    net = two_neuron_loop()
    assert net.feedback() == [False, False, True, False] and net.topological_order() == ["in", "a", "b", "out"]
    # ideal: a fires at 1 (v_init = theta), b at once, a again 2 steps later: b at 1, 3, 5, 7, 9
    r = simulate(net, torch.zeros(1, 1), 10, chunk=chunk)
    np.testing.assert_array_equal(r.readout[0, :, 0], [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    # pynn: a -> b takes 1 step, b -> a 2: a at 1, 4, 7; b at 2, 5, 8; the output one step later
    r = simulate(net, torch.zeros(1, 1), 10, chunk=chunk, profile="pynn")
    np.testing.assert_array_equal(r.readout[0, :, 0], [0, 0, 1, 1, 1, 2, 2, 2, 3, 3])
    assert r.metadata["pipeline_delay"] == 3  # in -> a -> b -> out, one step each


def test_self_recurrence_with_inhibition():
    # h gets 1 per step and -1 per own spike one step later: v = 1 (spike, 0), 1 - 1 = 0, 1 (spike), 0, ...
    net = chain(NeuronSpec(), NeuronSpec())
    net.connect("h", "h", [Dense(-np.ones((1, 1), np.float32))], delay=1)
    np.testing.assert_array_equal(readout(net.validate(), [1.0], 6)[:, 0], [1, 1, 2, 2, 3, 3])


@pytest.mark.parametrize("change, message", [
    (lambda n: n.connect("b", "a", [Identity()]), "cycle without delay"),
    (lambda n: n.connect("a", "a", [Identity()]), "cycle without delay"),
    (lambda n: setattr(n.projections[1], "delay", -1), "delay must be a whole number"),
    (lambda n: setattr(n.projections[1], "delay", 1.5), "delay must be a whole number"),
    (lambda n: setattr(n.populations["a"].neuron, "leak_tau", np.ones(3)), "leak_tau shape"),
    (lambda n: setattr(n.populations["a"].neuron, "tau_syn", 0.0), "tau_syn must be positive"),
    (lambda n: setattr(n.populations["a"].neuron, "v_leak", math.nan), "v_leak contains NaN"),
    (lambda n: setattr(n.populations["a"].neuron, "v_reset", 0.5), "v_reset applies to reset 'zero'"),
    (lambda n: setattr(n.populations["a"].neuron, "reset_timing", "later"), "reset_timing must be one of"),
])
def test_validation_names_the_bad_field(change, message):
    net = two_neuron_loop()
    change(net)
    with pytest.raises(IRValidationError, match=message):
        net.validate()
    hard = two_neuron_loop()
    hard.populations["a"].neuron.reset = "zero"
    hard.populations["a"].neuron.reset_timing = "next_step"
    with pytest.raises(IRValidationError, match="'next_step' applies to reset 'subtract' only"):
        hard.validate()


def trained_network() -> Network:
    """Every new field: per-neuron leak, v_leak, hard reset to v_reset, tau_syn, the delayed reset, a delayed
    projection, recurrence, a leaky readout with synaptic current."""
    rng = np.random.default_rng(0)
    net = Network()
    net.add_population(Population("in", (4,), "input"))
    net.add_population(Population("h", (6,), "hidden", NeuronSpec(
        reset="zero", v_reset=np.linspace(0.0, 0.3, 6), leak_tau=rng.uniform(3, 12, 6), v_leak=0.05, tau_syn=2.0)))
    net.add_population(Population("g", (6,), "hidden", NeuronSpec(threshold=0.8, leak_tau=6.0,
                                                                  reset_timing="next_step")))
    net.add_population(Population("out", (3,), "output", NeuronSpec(leak_tau=20.0, tau_syn=4.0)))
    net.connect("in", "h", [Dense(rng.normal(0.4, 0.3, (6, 4)).astype(np.float32))])
    net.connect("h", "h", [Dense(rng.normal(0, 0.3, (6, 6)).astype(np.float32))], delay=1)
    net.connect("h", "g", [Dense(rng.normal(0.2, 0.4, (6, 6)).astype(np.float32))])
    net.connect("g", "h", [Dense(rng.normal(0.0, 0.3, (6, 6)).astype(np.float32))], delay=2)
    net.connect("g", "out", [Dense(rng.normal(0.2, 0.5, (3, 6)).astype(np.float32))], delay=3)
    return net.validate()


def test_file_format_round_trip_and_versions(tmp_path):
    net = trained_network()
    path = save_network(net, tmp_path / "trained.zip")
    loaded = load_network(path)
    for name, pop in net.populations.items():
        if pop.neuron is None:
            continue
        for key in ("leak_tau", "v_leak", "v_reset", "tau_syn", "reset_timing", "reset"):
            np.testing.assert_array_equal(np.asarray(getattr(loaded.populations[name].neuron, key), dtype=object),
                                          np.asarray(getattr(pop.neuron, key), dtype=object))
    assert [p.delay for p in loaded.projections] == [0, 1, 0, 2, 3]
    x = torch.rand(3, 4)
    np.testing.assert_array_equal(simulate(net, x, 20, profile="pynn").readout,
                                  simulate(loaded, x, 20, profile="pynn").readout)
    folder = save_network(net, tmp_path / "trained")
    assert json.loads((folder / "network.json").read_text())["version"] == 2
    # a network without the new fields is still written as version 1, and read
    plain = chain(NeuronSpec(leak_tau=5.0), NeuronSpec())
    plain_folder = save_network(plain, tmp_path / "plain")
    structure = json.loads((plain_folder / "network.json").read_text())
    assert structure["version"] == 1 and "delay" not in structure["projections"][0]
    assert "v_leak" not in structure["populations"][1]["neuron"]
    assert load_network(plain_folder).populations["h"].neuron.leak_tau == 5.0
    # a version-1 file that holds a version-2 field is refused, naming it
    structure["projections"][0]["delay"] = 2
    (plain_folder / "network.json").write_text(json.dumps(structure))
    with pytest.raises(IRFormatError, match=r"projections\[0\]: field 'delay' needs format version 2"):
        load_network(plain_folder)
    structure["version"] = 3
    (plain_folder / "network.json").write_text(json.dumps(structure))
    with pytest.raises(IRFormatError, match="format version 3 is not supported"):
        load_network(plain_folder)


def test_backends_that_do_not_carry_them_refuse_in_one_line():
    net = trained_network()
    assert net.beyond() == [("population 'h'", ["per-neuron leak_tau", "v_leak", "v_reset", "tau_syn"]),
                            ("population 'g'", ["leak", "next-step reset"]),
                            ("population 'out'", ["leak", "tau_syn"]), ("projections", ["delays", "recurrence"])]
    x, labels = torch.rand(2, 4), torch.zeros(2, dtype=torch.long)
    options = RunOptions(T=5, batch_size=2, progress=False)
    for backend, message in ((get_backend("gpu", device="cpu", profile="spinnaker"),
                              "population 'h' uses per-neuron leak_tau, v_leak, v_reset, tau_syn, which the "
                              "SpiNNaker path"),
                             (get_backend("neuron", profile="standard"),
                              "population 'h' uses per-neuron leak_tau, v_leak, v_reset, tau_syn, which the "
                              "standard profile's IF_curr_exp cell does not implement")):
        with pytest.raises(BackendError, match=message) as caught:
            backend.run(net, x, labels, options)
        assert "\n" not in str(caught.value)
    # recurrence of one step is what the SpiNNaker path carries; delays of more steps it refuses
    loop = two_neuron_loop(ab=0, ba=1)
    assert loop.beyond(("recurrence",)) == []
    with pytest.raises(BackendError, match="projections uses delays, which the SpiNNaker path"):
        get_backend("gpu", device="cpu", profile="spinnaker").run(two_neuron_loop(), torch.zeros(1, 1),
                                                                  labels[:1], options)
    # the exact NEURON cell carries all of it (lowering only; the simulation is the slow test below)
    lowered = lower_network(net, carries=("leak", "per-neuron leak_tau", "v_leak", "v_reset", "tau_syn",
                                          "next-step reset", "delays", "recurrence"))
    h = lowered.populations[0]
    np.testing.assert_allclose(h.decay, np.exp(-1.0 / net.populations["h"].neuron.leak_tau))
    np.testing.assert_allclose(h.leak_drive, (1.0 - h.decay) * 0.05)
    np.testing.assert_allclose(h.syn_decay, math.exp(-0.5))
    np.testing.assert_allclose(h.v_reset, np.linspace(0.0, 0.3, 6))
    assert [s.delay for s in lowered.synapses] == [1, 0, 2, 3] and h.drive_delay == 1


@pytest.mark.slow
def test_neuron_exact_cell_equals_gpu_pynn_spike_for_spike():
    """A recurrent leaky network with synaptic currents, hard and delayed resets and delays: the exact NEURON
    cell against the gpu backend's pynn profile, every neuron's spike count and every step's count, with
    IF-encoded input spikes (the analog input's current: the conformance suite's recurrent network)."""
    encoding = "if"
    pytest.importorskip("pyNN")
    net = trained_network()
    x, labels = torch.rand(2, 4, generator=torch.Generator().manual_seed(1)), torch.zeros(2, dtype=torch.long)
    options = RunOptions(T=40, batch_size=2, progress=False, encoding=encoding, record_neuron_counts=True)
    reference = get_backend("gpu", device="cpu", profile="pynn").run(net, x, labels, options)
    result = get_backend("neuron", workers=1).run(net, x, labels, options)
    assert reference.spike_counts[..., 1:].sum() > 100  # the network is active
    np.testing.assert_array_equal(result.neuron_counts, reference.neuron_counts)
    np.testing.assert_array_equal(result.spike_counts, reference.spike_counts)
    np.testing.assert_allclose(result.readout, reference.readout, atol=1e-4)  # float32 against float64
    assert result.metadata["pipeline_delay"] == reference.metadata["pipeline_delay"] == 5


def test_fan_in_pass_keeps_a_projection_delay():
    from neurodeploy.ir import AvgPool2d, Flatten
    from neurodeploy.passes.fan_in import materialize_pooling

    net = Network()
    net.add_population(Population("in", (1, 4, 4), "input"))
    net.add_population(Population("h", (1, 4, 4), "hidden", NeuronSpec()))
    net.add_population(Population("out", (2,), "output", NeuronSpec()))
    net.connect("in", "h", [Identity()])
    net.connect("h", "out", [AvgPool2d(2, 2), Flatten(), Dense(np.ones((2, 4), np.float32))], delay=2)
    materialize_pooling(net.validate(), 4)
    assert [(p.label, p.delay) for p in net.projections] == [("in->h", 0), ("h->out_pool", 0),
                                                             ("out_pool->out", 2)]


@pytest.mark.parametrize("chunk", [1, 3, None])
def test_delayed_spikes_keep_their_amplitude_across_chunks(chunk):
    # h (threshold 2) gets 2 per step and fires every step from step 2 (pynn: the input arrives at step 2);
    # each spike carries 2 to the output one step later: O(t) = 2 (t - 2) for t >= 2, whatever the chunk
    net = chain(NeuronSpec(threshold=2.0), NeuronSpec())
    np.testing.assert_array_equal(readout(net, [2.0], 8, profile="pynn", chunk=chunk)[:, 0],
                                  [0, 0, 2, 4, 6, 8, 10, 12])


@pytest.mark.slow
def test_neuron_exact_cell_reads_spike_count_readouts():
    """snnTorch-style graphs end in a spiking layer read as spike counts: the exact NEURON cell reads the
    output's cumulative spike counts, equal to the gpu backend's pynn profile."""
    pytest.importorskip("pyNN")
    rng = np.random.default_rng(2)
    net = Network()
    net.add_population(Population("in", (4,), "input"))
    net.add_population(Population("h", (6,), "hidden", NeuronSpec(leak_tau=5.0, reset_timing="next_step")))
    net.add_population(Population("out", (3,), "output", NeuronSpec(leak_tau=5.0, tau_syn=2.0, readout="spikes",
                                                                    reset_timing="next_step")))
    net.connect("in", "h", [Dense(rng.uniform(0.1, 0.6, (6, 4)).astype(np.float32))])
    net.connect("h", "out", [Dense(rng.uniform(-0.2, 0.6, (3, 6)).astype(np.float32))])
    x, labels = torch.rand(2, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(2, dtype=torch.long)
    options = RunOptions(T=30, batch_size=2, progress=False, record_neuron_counts=True)
    reference = get_backend("gpu", device="cpu", profile="pynn").run(net.validate(), x, labels, options)
    result = get_backend("neuron", workers=1).run(net, x, labels, options)
    assert reference.readout[:, -1].sum() > 5  # the output spikes
    np.testing.assert_array_equal(result.readout, reference.readout)
    np.testing.assert_array_equal(result.neuron_counts, reference.neuron_counts)
