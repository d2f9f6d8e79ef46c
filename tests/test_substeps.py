"""Sub-stepping on SpiNNaker (``machine_time_step`` 1/K ms, ``neurodeploy.targets.spinnaker``, "Sub-stepping"):
the gpu profile's ticks against spike counts computed by hand, the cell constants of a tick, the ring buffers'
rates per tick, the option's checks, and the board's lowering as sPyNNaker accepts it (virtual board)."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import constant_current_network, simulate

from neurodeploy.errors import BackendError, ConfigError
from neurodeploy.ir import Dense, Identity, Network, NeuronSpec, Population
from neurodeploy.passes.ring_buffers import METADATA_KEY, firing_rates
from neurodeploy.targets.spinnaker import DeltaCell, ExpCell, machine_time_step_us, round_s1615

Q = 2.0**-15


@pytest.mark.parametrize("k, expected", [(1, 10), (2, 10), (4, 11), (8, 11)])
def test_constant_input_spike_counts_by_hand(k, expected):
    """Hard reset alone (no leak, exact arithmetic): x = 0.375 per step is 0.375 / k per tick, arriving from tick 2
    (one tick of delay); the neuron fires every c = ceil(k / 0.375) ticks (c = 3, 6, 11, 22 for k = 1, 2, 4, 8), at
    ticks 1 + n c <= 33 k in T = 33 steps: n = floor((33 k - 1) / c) = 10, 10, 11, 11. The subtract reset (pynn)
    fires floor(0.375 * 32) = 12 times."""
    net = constant_current_network([0.375])
    x = torch.tensor([[0.375]])
    result = simulate(net, x, 33, profile="spinnaker", spinnaker_parts=("hard_reset",), v_reset="zero", substeps=k)
    assert int(result.spike_counts[0, :, 1].sum()) == expected
    assert int(simulate(net, x, 33, profile="pynn").spike_counts[0, :, 1].sum()) == 12


def test_more_than_one_spike_per_step_and_the_readout_after_the_last_tick():
    """x = 1.5 per step, k = 4: 0.375 per tick from tick 2, a spike every 3 ticks: ticks 4, 7, 10, 13, 16, i.e.
    steps 1, 2, 3, 4, 4 (two in step 4). The output (weight 1, one tick later) has after ticks 4, 8, 12, 16 the
    spikes of ticks up to 3, 7, 11, 15: 0, 2, 3, 4."""
    net = constant_current_network([1.5])
    result = simulate(net, torch.tensor([[1.5]]), 4, profile="spinnaker", spinnaker_parts=("hard_reset",),
                      v_reset="zero", substeps=4)
    np.testing.assert_array_equal(result.spike_counts[0, :, 1], [1, 1, 1, 2])
    np.testing.assert_allclose(result.readout[0, :, 0], [0, 2, 3, 4])
    one_tick = simulate(net, torch.tensor([[1.5]]), 4, profile="spinnaker", spinnaker_parts=("hard_reset",),
                        v_reset="zero")
    np.testing.assert_array_equal(one_tick.spike_counts[0, :, 1], [0, 1, 1, 1])  # at most one spike per step


def test_every_part_per_tick_by_hand():
    """All parts, k = 2: v <- round(e2 v + round(0.3 / 2)) per tick with e2 = round(exp(-0.5 / 1000)), input from
    tick 2; the output leaks per tick and gets each spike one tick later as a ring-buffer weight of shift 1."""
    current, k, T = 0.3, 2, 12
    net = constant_current_network([current])
    net.populations["output"].metadata[METADATA_KEY] = [1.0, 0.0]
    result = simulate(net, torch.tensor([[current]]), T, profile="spinnaker", v_reset="zero", substeps=k)
    decay = float(round_s1615(math.exp(-0.5 / 1000.0)))
    assert DeltaCell.for_tau(1000.0, 0.5).decay == decay
    v, out, spikes, readout = 0.0, 0.0, [], []
    for tick in range(T * k):
        out = float(round_s1615(decay * out + (spikes[-1] if spikes else 0.0)))
        v = float(round_s1615(decay * v + (float(round_s1615(current / k)) if tick >= 1 else 0.0)))
        spikes.append(1.0 if v >= 1.0 else 0.0)
        v = 0.0 if v >= 1.0 else v
        if tick % k == k - 1:
            readout.append(out)
    np.testing.assert_allclose(result.readout[0, :, 0], readout, atol=1e-6)
    assert int(result.spike_counts[0, :, 1].sum()) == sum(spikes) == 3  # 7 ticks to threshold: ticks 7, 14, 21


def test_cell_constants_of_a_tick():
    cell = DeltaCell.for_tau(1000.0, 0.25)
    assert cell.decay == round(math.exp(-0.25e-3) / Q) * Q and cell.gain == pytest.approx(1.0, abs=1e-5)
    assert cell.offset_for(0.5) == 0.125
    with pytest.raises(BackendError, match="tau_m = 1000.0 ms is outside"):  # R = tau_m / cm ~ 128000
        ExpCell.for_tau(1000.0, dt=0.25)
    exp1, exp4 = ExpCell.for_tick(1000.0), ExpCell.for_tick(1000.0, dt=0.25)
    assert exp1 == ExpCell.for_tau(1000.0) and exp4.tau_m == 475.0  # tau_m capped at 1900 dt
    # tau_syn = dt / 32 keeps exp(-dt / tau_syn) = exp(-32) at 0 in u0.32 and init = (1/32) (2^32 - 1) >> 15 ...
    assert exp4.tau_syn == 1 / 128 and exp4.syn_decay_bits == 0 and exp4.init_bits == exp1.init_bits
    assert exp4.decay == round(math.exp(-0.25 / 475) / Q) * Q and exp4.gain == pytest.approx(1.0, abs=2e-3)
    # ... and a bias per step is a quarter of it per tick, in units of R (1 - e)
    assert exp4.offset_for(0.5) == float(round_s1615(0.125 / exp4.bias_gain))
    assert [machine_time_step_us(k) for k in (1, 2, 4, 8)] == [1000, 500, 250, 125]
    with pytest.raises(BackendError, match="substeps = 3: choose one of 1, 2, 4, 8"):
        machine_time_step_us(3)


def test_ring_buffer_rates_are_per_tick():
    """A hidden neuron driven at 1.5 theta fires once per step with one tick (clipped) and 1.5 / 4 per tick with
    four; an input of 0.5 (IF) fires 0.5 per step, 0.25 per tick of two."""
    net = Network()
    net.add_population(Population("input", (1,), "input"))
    net.add_population(Population("hidden", (1,), "hidden", NeuronSpec(threshold=1.0)))
    net.add_population(Population("output", (1,), "output", NeuronSpec()))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "output", [Dense(np.ones((1, 1), np.float32))])
    net.validate()
    x = np.array([[1.5]])
    assert firing_rates(net, x)["hidden"][0, 0] == 1.0
    assert firing_rates(net, x, substeps=4)["hidden"][0, 0] == 0.375
    assert firing_rates(net, np.array([[0.5]]), "if", substeps=2)["input"][0, 0] == 0.25


def test_substeps_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="--substeps 2 applies to the spinnaker profiles"):
        simulate(constant_current_network([0.3]), torch.tensor([[0.3]]), 2, profile="pynn", substeps=2)
    with pytest.raises(ConfigError, match="--substeps 3 is not one of 1, 2, 4, 8"):
        simulate(constant_current_network([0.3]), torch.tensor([[0.3]]), 2, profile="spinnaker", substeps=3)


@pytest.mark.parametrize("argv, needle", [
    (["--profile", "spinnaker", "--substeps", "3"], "invalid choice: 3 (choose from 1, 2, 4, 8)"),
    (["--profile", "pynn", "--substeps", "2"], "--substeps 2 applies to the spinnaker profiles"),
])
def test_cli_refuses_bad_substeps_in_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    from neurodeploy.cli import main

    monkeypatch.chdir(tmp_path)
    try:
        code = main(["run", "--backend", "gpu", *argv, "--no-progress"])
    except SystemExit as done:  # usage errors from the parser
        code = done.code
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "results" / "models").exists()  # nothing trained


@pytest.mark.slow
@pytest.mark.parametrize("connectors", ["fromlist", "local"])
def test_a_substepped_network_maps_on_a_virtual_board(tmp_path, connectors):
    """sPyNNaker (virtual board) takes the sub-stepped lowering: machine_time_step 250 us, time_scale_factor 4,
    one-tick delays, and the ring-buffer shifts it computes are those of the per-tick summed weights."""
    pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is not installed")
    from neurodeploy.backends import get_backend
    from neurodeploy.convert import convert
    from neurodeploy.targets.spinnaker import ring_buffer_shift

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 5)).eval()
    x = torch.rand(16, 1, 8, 8)
    network = convert(model, x)
    backend = get_backend("spinnaker", connectors=connectors, substeps=4)
    backend.prepare(network, x)
    per_step = get_backend("spinnaker", connectors=connectors, substeps=1).prepare(convert(model, x), x)
    # a tick's expected summed weight is at most a step's (rates per tick are a quarter, the sd half; both capped
    # at the sum of the weights), and below it where that cap does not hold
    ticks, steps = ([p.metadata[METADATA_KEY][0] for p in net.populations.values() if p.role != "input"]
                    for net in (network, per_step))
    pairs = list(zip(ticks, steps, strict=True))
    assert all(a <= b for a, b in pairs) and any(a < b for a, b in pairs)
    report = backend.map(network, tmp_path / "run", T=3)
    assert report["machine_time_step_us"] == 250 and report["time_scale_factor"] == 4
    for name, shifts in report["ring_buffer_shifts"].items():
        assert shifts == [ring_buffer_shift(w) for w in report["max_expected_summed_weight"][name]], name
    assert backend.predictor()[1]["substeps"] == 4
    if connectors == "fromlist":  # the item loop too: spikes set in ticks, runs of K T + 1 ticks, reset
        from neurodeploy.backends import RunOptions
        from neurodeploy.backends.pynn.runner import if_spike_steps

        result = backend.run(network, x[:2], torch.zeros(2, dtype=torch.long), RunOptions(T=3, progress=False))
        assert result.metadata["virtual"] and result.metadata["substeps"] == 4
        for item in range(2):
            _, tick = if_spike_steps(x[item].numpy(), 3, 4)
            np.testing.assert_array_equal(result.spike_counts[item, :, 0], np.bincount((tick - 1) // 4, minlength=3))


def test_the_board_input_and_the_profile_input_are_the_same_ticks():
    """The PyNN runner's IF spike source (``if_spike_steps`` with K ticks) plays exactly the input spikes the gpu
    profile simulates in its ticks, counted per IR step."""
    from neurodeploy.backends.pynn.runner import if_spike_steps

    x = torch.tensor([[0.375, 0.75, 1.0, 0.0625]])  # exact in binary: per tick of 4, 40 ticks: 3, 7, 10, 0 spikes
    net = Network()
    net.add_population(Population("input", (4,), "input"))
    net.add_population(Population("hidden", (4,), "hidden", NeuronSpec()))
    net.add_population(Population("output", (4,), "output", NeuronSpec()))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "output", [Dense(np.eye(4, dtype=np.float32))])
    net.validate()
    for k in (1, 4):
        _, tick = if_spike_steps(x[0].numpy(), 10, k)
        profile = simulate(net, x, 10, profile="spinnaker", encoding="if", substeps=k, v_reset="zero")
        np.testing.assert_array_equal(np.bincount((tick - 1) // k, minlength=10), profile.spike_counts[0, :, 0])
    np.testing.assert_array_equal(np.bincount(if_spike_steps(x[0].numpy(), 10, 4)[0], minlength=4), [3, 7, 10, 0])


@pytest.mark.parametrize("connectors, cell", [("fromlist", "delta"), ("local", "exp")])
def test_the_board_and_the_profile_take_the_same_tick_constants(connectors, cell):
    from neurodeploy.backends import get_backend
    from neurodeploy.backends.gpu.compiled import compile_network
    from neurodeploy.backends.gpu.spinnaker_profile import apply_spinnaker_arithmetic

    board = get_backend("spinnaker", connectors=connectors, substeps=4)
    net = constant_current_network([0.3])
    report = apply_spinnaker_arithmetic(compile_network(net, torch.device("cpu"), torch.float32, delay=1), net,
                                        "analog", torch.device("cpu"), cell=cell, substeps=4)
    assert board.cell.dt == report["cell"]["machine_time_step_ms"] == 0.25
    assert (board.cell.tau_m, board.cell.cm, board.cell.decay) == tuple(report["cell"][key]
                                                                         for key in ("tau_m", "cm", "decay"))


def test_substeps_stay_opt_in_and_the_mapping_line_states_their_board_time():
    from neurodeploy.backends import get_backend
    from neurodeploy.cli.render import mapping_line

    assert get_backend("gpu", profile="spinnaker", device="cpu").substeps == 1
    assert get_backend("gpu", profile="spinnaker_exp", device="cpu", substeps=2).substeps == 2
    report = {"target": "virtual SpiNN-5 board", "neuron_cores": 3, "system_cores": 1, "chips": 1, "n_synapses": 10}
    assert "board time" not in mapping_line({**report, "machine_time_step_us": 1000, "time_scale_factor": 1})
    assert "500 us ticks, time_scale_factor 2: 2 T ms of board time per item" in mapping_line(
        {**report, "machine_time_step_us": 500, "time_scale_factor": 2})
