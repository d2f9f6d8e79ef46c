"""Reference simulator invariants: chunking, delays, encoders, counting, QFFS, resumable batches."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import constant_current_network, simulate

from neurodeploy.backends import ExitPolicy, RunOptions, get_backend
from neurodeploy.backends.gpu.compiled import compile_network
from neurodeploy.backends.gpu.engine import chunk_steps
from neurodeploy.convert import convert
from neurodeploy.errors import BackendError, ConfigError, DataError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.ir import Dense, Identity, Network, NeuronSpec, Population


@pytest.fixture(scope="module")
def conv_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 2 * 2, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x = torch.rand(20, 1, 8, 8)
    return convert(model, x), x


@pytest.mark.parametrize("profile", ["ideal", "pynn"])
@pytest.mark.parametrize("encoding", ["analog", "if", "poisson"])
def test_chunk_size_does_not_change_results(conv_net, profile, encoding):
    net, x = conv_net
    runs = [simulate(net, x, 23, chunk=chunk, profile=profile, encoding=encoding) for chunk in (1, 5, 23)]
    for other in runs[1:]:
        np.testing.assert_allclose(other.readout, runs[0].readout, atol=1e-5)
        np.testing.assert_array_equal(other.spike_counts, runs[0].spike_counts)
        np.testing.assert_array_equal(other.synaptic_events, runs[0].synaptic_events)


def test_pynn_profile_delays_by_one_step_per_projection():
    net = constant_current_network([0.5, 1.0])
    ideal = simulate(net, torch.tensor([[0.5, 1.0]]), 12)
    delayed = simulate(net, torch.tensor([[0.5, 1.0]]), 12, profile="pynn")
    assert delayed.metadata["pipeline_delay"] == 2 and ideal.metadata["pipeline_delay"] == 0
    np.testing.assert_array_equal(delayed.readout[0, :2], 0)
    np.testing.assert_array_equal(delayed.readout[0, 2:], ideal.readout[0, :-2])


def test_synaptic_events_are_spikes_times_fanout_without_zero_weights():
    n = 4
    net = Network()
    net.add_population(Population("input", (n,), "input"))
    net.add_population(Population("hidden", (n,), "hidden", NeuronSpec()))
    net.add_population(Population("output", (3,), "output", NeuronSpec()))
    net.connect("input", "hidden", [Identity()])
    weight = np.array([[1, 0, 2, 0], [1, 0, 0, 0], [1, 3, 0, 0]], np.float32)  # fan-out 3, 1, 1, 0
    net.connect("hidden", "output", [Dense(weight)])
    currents = torch.tensor([[1.0, 0.5, 0.25, 1.0]])
    result = simulate(net, currents, 8)
    spikes_per_step = np.floor(np.arange(1, 9)[:, None] * currents.numpy()) - np.floor(
        np.arange(0, 8)[:, None] * currents.numpy())
    np.testing.assert_array_equal(result.spike_counts[0, :, 1], spikes_per_step.sum(1))
    np.testing.assert_array_equal(result.synaptic_events[0, :, 1], spikes_per_step @ np.array([3, 1, 1, 0]))
    assert result.synaptic_events[0, :, 0].sum() == 0  # analog input is not counted
    assert result.metadata["n_synapses"] == 4 + 5


def test_if_encoder_counts_floor_tx_and_counts_input_events():
    net = constant_current_network([0.25, 0.5])
    result = simulate(net, torch.tensor([[0.25, 0.5]]), 16, encoding="if")
    t = np.arange(1, 17)
    np.testing.assert_array_equal(np.cumsum(result.spike_counts[0, :, 0]), np.floor(t * 0.25) + np.floor(t * 0.5))
    np.testing.assert_array_equal(result.synaptic_events[0, :, 0], result.spike_counts[0, :, 0])


def test_poisson_requires_unit_range():
    net = constant_current_network([0.25])
    with pytest.raises(DataError, match="poisson encoding needs inputs in"):
        simulate(net, torch.tensor([[2.0]]), 4, encoding="poisson")


def test_qffs_cap_and_negative_spike_hand_trace():
    """theta = 1, cap 2. Inputs 0.6, 0.6, 0.6, 0.6, -1.5, 0, 0:
    v: 0.6 | 1.2 -> spike (n=1) 0.2 | 0.8 | 1.4 -> spike (n=2) 0.4 | -1.1 -> negative spike (n=1) -0.1 |
    -0.1 -> negative spike (n=0) 0.9 | 0.9 (n=0, no more negatives)."""
    net = Network()
    net.add_population(Population("input", (1,), "input"))
    net.add_population(Population("h", (1,), "hidden", NeuronSpec(spike_cap=2, negative_spikes=True)))
    net.add_population(Population("output", (1,), "output", NeuronSpec()))
    net.connect("input", "h", [Identity()])
    net.connect("h", "output", [Identity()])
    compiled = compile_network(net, torch.device("cpu"))
    from neurodeploy.backends.gpu.neurons import integrate_and_fire

    layer = compiled.layers[1]
    current = torch.tensor([0.6, 0.6, 0.6, 0.6, -1.5, 0.0, 0.0]).reshape(7, 1, 1)
    v, count = torch.zeros(1, 1), torch.zeros(1, 1)
    spikes = integrate_and_fire(layer, v, current, None, 7, count)
    assert spikes.flatten().tolist() == [0, 1, 0, 1, -1, -1, 0]
    assert v.item() == pytest.approx(0.9) and count.item() == 0
    # The cap: a constant current of 1 can only produce 2 net spikes.
    spikes = integrate_and_fire(layer, torch.zeros(1, 1), torch.ones(6, 1, 1), None, 6, torch.zeros(1, 1))
    assert spikes.flatten().tolist() == [1, 1, 0, 0, 0, 0]


def test_memory_budget_sets_chunk(conv_net):
    net, _ = conv_net
    compiled = compile_network(net, torch.device("cpu"))
    neurons = sum(layer.size for layer in compiled.layers)
    assert chunk_steps(compiled, 10, 100, budget_bytes=3 * 4 * 10 * neurons * 7) == 7
    assert chunk_steps(compiled, 10, 100, budget_bytes=1) == 1
    assert chunk_steps(compiled, 10, 100, budget_bytes=1e12) == 100


def test_checkpointed_run_resumes(conv_net, tmp_path):
    from neurodeploy.backends import run_in_batches

    net, x = conv_net
    labels = torch.zeros(len(x), dtype=torch.long)
    backend = get_backend("gpu", device="cpu")
    options = RunOptions(T=10, batch_size=6, progress=False)
    full = backend.run(net, x, labels, options, checkpoint_dir=tmp_path)
    files = sorted(tmp_path.glob("batch_*.npz"))
    assert len(files) == 4
    # An interrupted run: the last batch never finished and another was cut off mid-write.
    files[-1].unlink()
    files[1].write_bytes(files[1].read_bytes()[:100])
    compiled = backend.compile(net, options).state
    simulated = []

    def simulate_batch(xb, yb, first):
        simulated.append(first)
        from neurodeploy.backends.gpu.engine import simulate_batch as engine
        from neurodeploy.evaluate.result import SimulationResult

        readout, counts, *_ = engine(compiled, xb, 10, "analog", 10, 0, 0)
        return SimulationResult(readout.numpy(), yb.numpy(), counts[..., 0].numpy(), counts[..., 1].numpy())

    resumed = run_in_batches(simulate_batch, x, labels, 6, tmp_path, progress=False)
    assert simulated == [6, 18]
    np.testing.assert_allclose(resumed.readout, full.readout, atol=1e-6)
    assert len(sorted(tmp_path.glob("batch_*.npz"))) == 4


def test_bad_inputs_and_options(conv_net):
    net, x = conv_net
    backend = get_backend("gpu", device="cpu")
    with pytest.raises(DataError, match=r"inputs have shape \(1, 9, 9\) per item, the network expects \(1, 8, 8\)"):
        backend.run(net, torch.rand(2, 1, 9, 9), torch.zeros(2, dtype=torch.long), RunOptions(T=2, progress=False))
    with pytest.raises(ConfigError, match="gpu backend: --profile 'fast' is not one of ideal, pynn, spinnaker"):
        get_backend("gpu", profile="fast")
    with pytest.raises(ConfigError, match="gpu backend has no option --workers"):
        get_backend("gpu", workers=2)
    with pytest.raises(ConfigError, match="unknown backend 'loihi'"):
        get_backend("loihi")


def test_bf16_precision_runs_close_to_fp32(conv_net):
    net, x = conv_net
    fp32 = simulate(net, x, 30)
    bf16 = simulate(net, x, 30, precision="bf16")
    agreement = (fp32.predictions()[:, -1] == bf16.predictions()[:, -1]).mean()
    assert agreement >= 0.9


@pytest.mark.parametrize("profile, steps_with_input", [("ideal", 40), ("pynn", 39)])
def test_neuron_counts_are_floor_of_steps_times_current(profile, steps_with_input, tmp_path):
    """Hidden neuron i with constant current c_i (theta 1, subtract reset, v0 0) spikes floor(n c_i) times
    in n steps with input; under the pynn profile the analog input arrives one step late."""
    currents = [0.0, 1 / 64, 0.25, 21 / 64, 0.75, 1.0]
    net = constant_current_network(currents)
    x = torch.tensor([currents, currents[::-1]])
    options = RunOptions(T=40, batch_size=1, progress=False, record_neuron_counts=True)
    result = get_backend("gpu", device="cpu", profile=profile, chunk=7).run(net, x, torch.zeros(2, dtype=torch.long),
                                                                            options)
    per_pop = result.population_neuron_counts()
    expected = np.floor(steps_with_input * x.numpy())
    np.testing.assert_array_equal(per_pop["hidden"], expected)
    assert not per_pop["input"].any() and not per_pop["output"].any()
    np.testing.assert_array_equal(per_pop["hidden"].sum(1), result.spike_counts[:, :, 1].sum(1))
    loaded = SimulationResult.load(result.save(tmp_path / "r.npz"))
    np.testing.assert_array_equal(loaded.neuron_counts, result.neuron_counts)
    np.testing.assert_array_equal(result.select(np.array([1])).neuron_counts, result.neuron_counts[1:])
    with pytest.raises(BackendError, match="full runs"):
        get_backend("gpu", device="cpu").run(net, x, torch.zeros(2, dtype=torch.long),
                                             RunOptions(T=5, progress=False, record_neuron_counts=True,
                                                        exit_policy=ExitPolicy(1.0, 0.0)))
