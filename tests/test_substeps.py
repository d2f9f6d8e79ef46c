"""Sub-stepping on SpiNNaker (``machine_time_step`` 1/K ms, ``neurodeploy.targets.spinnaker``, "Sub-stepping"):
the gpu profile's ticks against spike counts computed by hand, the cell constants of a tick, the ring buffers'
rates per tick, the option's checks, and the board's lowering as sPyNNaker accepts it (virtual board)."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import constant_current_network, large_rare_inputs_network, simulate

from neurodeploy.backends.gpu.spinnaker_profile import compensate_hard_reset, mean_overshoot, set_reset_values
from neurodeploy.errors import BackendError, ConfigError
from neurodeploy.ir import Dense, Identity, Network, NeuronSpec, Population
from neurodeploy.passes.reset_compensation import METADATA_KEY as RESET_KEY
from neurodeploy.passes.reset_compensation import annotate_reset_compensation, v_reset
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
    with pytest.raises(ConfigError, match="--substeps 3 is not one of auto, 1, 2, 4, 8"):
        simulate(constant_current_network([0.3]), torch.tensor([[0.3]]), 2, profile="spinnaker", substeps=3)


@pytest.mark.parametrize("argv, needle", [
    (["--profile", "spinnaker", "--substeps", "3"], "invalid choice: 3 (choose from 'auto', 1, 2, 4, 8)"),
    (["--profile", "spinnaker", "--substeps", "often"], "invalid int or auto value: 'often'"),
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


@pytest.mark.parametrize("k, overshoot", [(1, 0.25), (2, 0.125), (4, 0.0625)])
def test_mean_overshoot_is_measured_in_the_ticks_of_the_run_by_hand(k, overshoot):
    """Current 0.75 per step, 0.75 / k per tick from tick 2, subtract reset, T = 97 steps (97 k - 1 input ticks):
    the membrane after n input ticks is 0.75 n / k - spikes. k = 1: spikes at n = 2, 3, 4 of every 4 leave 0.5,
    0.25, 0 (mean 0.25); k = 2: 0.375 a tick, spikes at n = 3, 6, 8 of every 8 leave 0.125, 0.25, 0 (mean 0.125);
    k = 4: 0.1875 a tick, spikes at n = 6, 11, 16 of every 16 leave 0.125, 0.0625, 0 (mean 0.0625). 72 spikes
    every time (24 whole cycles; k = 4 has 3 ticks left, 0.5625 below the threshold): the rate is the same, the
    overshoot a hard reset would discard shrinks k-fold, and that is the reset value the run's ticks need."""
    net = constant_current_network([0.75])
    x = torch.tensor([[0.75]])
    assert mean_overshoot(net, x, T=97, substeps=k) == {"hidden": pytest.approx(overshoot, abs=1e-6)}
    assert int(simulate(net, x, 97, profile="spinnaker", substeps=k, spinnaker_parts=()).spike_counts[0, :, 1].sum()
               ) == 72
    compensate_hard_reset(net, x, substeps=k)
    entry = net.populations["hidden"].metadata[RESET_KEY]
    assert entry["substeps"] == k and (f"{k} ticks" in entry["measured_on"]) == (k > 1)


@pytest.mark.parametrize("k, with_step_values, with_tick_values", [(2, 134, 122), (4, 156, 111)])
def test_reset_values_of_steps_make_a_substepped_neuron_fire_too_often(k, with_step_values, with_tick_values):
    """The subtract reset fires the target 117 times in 200 steps. In k ticks a step a spike's weight still arrives
    whole but the sources' spikes spread over the ticks, so the overshoot at a spike is smaller (0.52 at k = 2,
    0.41 at k = 4, against 0.59 in steps): resetting to the overshoot of steps overshoots the rate (134 and 156
    spikes), to the overshoot of the ticks it stays near (122, 111). Deterministic counts of the hard reset alone."""
    net, x = large_rare_inputs_network(), torch.zeros(1, 8)

    def count() -> int:
        return int(simulate(net, x, 200, profile="spinnaker", substeps=k, spinnaker_parts=("hard_reset",)
                            ).spike_counts[0, :, 2].sum())

    assert int(simulate(net, x, 200, profile="pynn").spike_counts[0, :, 2].sum()) == 117
    steps, ticks = mean_overshoot(net, x, substeps=1), mean_overshoot(net, x, substeps=k)
    assert ticks["target"] < steps["target"] == pytest.approx(0.5886, abs=1e-4)
    annotate_reset_compensation(net, steps, "steps, forced onto ticks for the comparison", substeps=k)
    assert count() == with_step_values
    compensate_hard_reset(net, x, substeps=k)
    assert net.populations["target"].metadata[RESET_KEY]["mean_overshoot"] == pytest.approx(ticks["target"])
    assert count() == with_tick_values


@pytest.mark.parametrize("connectors", ["fromlist", "local"])
def test_reset_values_of_other_ticks_are_refused_by_the_profile_and_the_lowering(connectors):
    """Values measured for K = 2 never reach a run of K = 4 (board or prediction); those measured in steps (K = 1,
    ``--v-reset calibrated``) and those of K = 4 reach a run of K = 4 as the same per-neuron numbers."""
    from neurodeploy.backends import get_backend

    net, x = constant_current_network([0.75]), torch.tensor([[0.75]])
    compensate_hard_reset(net, x, substeps=2)
    board = get_backend("spinnaker", connectors=connectors, substeps=4)
    with pytest.raises(BackendError, match="measured with 2 ticks per step, the run has 4"):
        board.check(net)
    with pytest.raises(BackendError, match="measured with 2 ticks per step, the run has 4"):
        simulate(net, x, 5, profile="spinnaker_exp" if connectors == "local" else "spinnaker", substeps=4)
    for measured, mode in ((1, "calibrated"), (4, "calibrated_ticks")):
        set_reset_values(net, x, "analog", mode, substeps=4)
        lowered = {p.name: p for p in board.check(net).populations}
        np.testing.assert_array_equal(lowered["hidden"].v_reset, v_reset(net, "hidden"))
        np.testing.assert_allclose(v_reset(net, "hidden"), [mean_overshoot(net, x, substeps=measured)["hidden"]])
        result = simulate(net, x, 5, profile="spinnaker", substeps=4, spinnaker_parts=("hard_reset",))
        assert result.metadata["spinnaker_arithmetic"]["populations"]["hidden"]["reset_compensation"][
            "substeps"] == measured


def _two_class_network() -> Network:
    """Analog input (2,) -> hidden (2,) by identity -> output (2,) by identity weights: class j's readout counts the
    spikes of hidden neuron j, which gets the constant current x_j per step."""
    net = Network()
    net.add_population(Population("input", (2,), "input"))
    net.add_population(Population("hidden", (2,), "hidden", NeuronSpec()))
    net.add_population(Population("output", (2,), "output", NeuronSpec()))
    net.connect("input", "hidden", [Identity()])
    net.connect("hidden", "output", [Dense(np.eye(2, dtype=np.float32))])
    return net.validate()


@pytest.mark.parametrize("items, labels, chosen, accuracy", [
    ([[0.55, 0.7], [0.7, 0.55]], [1, 0], 2, {"1 zero": 0.5, "2 zero": 1.0}),
    ([[0.3, 0.9], [0.9, 0.3]], [1, 0], 1, {"1 zero": 1.0}),
])
def test_substeps_auto_takes_the_cheapest_k_within_a_point_by_hand(items, labels, chosen, accuracy):
    """Hard reset to 0 (``v_reset`` zero), threshold 1. Currents 0.55 and 0.7 both need 2 steps to the threshold
    at K = 1, so both classes fire at the same steps and the readouts tie (argmax: class 0): the item of label 1 is
    lost (accuracy 0.5 against pynn's 1.0, whose subtract reset fires 0.7 and 0.55 per step). At K = 2 they are 0.275
    and 0.35 a tick: 4 and 3 ticks to the threshold, the larger current wins, 1.0: K = 2 is chosen and K = 4 not
    tried. Currents 0.3 and 0.9 (4 and 2 steps) keep their order at K = 1: K = 1 is chosen."""
    from neurodeploy.backends import RunOptions, get_backend
    from neurodeploy.backends.gpu.spinnaker_profile import choose_substeps

    x, y = torch.tensor(items), torch.tensor(labels)
    net = _two_class_network()
    choice = choose_substeps(net, x, y, "analog", "zero")
    assert choice["substeps"] == chosen and choice["reference_accuracy"] == 1.0 and choice["accuracy"] == accuracy
    assert choice["within_limit"] and choice["time_scale_factor"] == chosen and choice["T"] == 100
    assert net.populations["output"].metadata[METADATA_KEY] == [1.0, 0.0]  # ring buffers sized for the chosen K
    backend = get_backend("gpu", profile="spinnaker", device="cpu", substeps="auto", v_reset="zero")
    prepared = backend.prepare(_two_class_network(), x, "analog", y)
    assert backend.substeps == chosen and prepared.metadata["substeps_choice"]["substeps"] == chosen
    result = backend.run(prepared, x, y, RunOptions(T=100, progress=False))
    assert float(result.accuracy_curve()[-1]) == 1.0 and result.metadata["substeps"] == chosen


def test_substeps_auto_chooses_at_the_runs_steps_by_hand():
    """The items of the first case above (currents 0.55 and 0.7, labels 1 and 0, reset to 0): at T = 1 no spike has
    reached the output in any profile (one-step delays; the first spike fires at step 2), every readout ties at 0 and
    argmax answers class 0, so pynn and K = 1 both score 0.5 and K = 1 is within the point: a job running 1 step gets
    K = 1 where at T = 100 (the default without a T) K = 2 is needed. The backends choose at the T the job gives
    their ``prepare`` (the board's on its IF spike input, whose spikes of weight 1 overshoot nothing: K = 1 at both),
    and the board's cell gets the K chosen."""
    from neurodeploy.backends import get_backend

    x, y = torch.tensor([[0.55, 0.7], [0.7, 0.55]]), torch.tensor([1, 0])
    for T, chosen in ((1, 1), (None, 2)):
        gpu = get_backend("gpu", profile="spinnaker", device="cpu", substeps="auto", v_reset="zero")
        prepared = gpu.prepare(_two_class_network(), x, "analog", y, T)
        choice = prepared.metadata["substeps_choice"]
        assert gpu.substeps == chosen and choice["T"] == (T or 100) and choice["reference_accuracy"] == (
            0.5 if T == 1 else 1.0)
        assert choice["accuracy"]["1 zero"] == 0.5 and gpu.substeps_asked == "auto"
        board = get_backend("spinnaker", connectors="fromlist", substeps="auto", v_reset="zero")
        prepared = board.prepare(_two_class_network(), x, "analog", y, T)
        assert prepared.metadata["substeps_choice"]["T"] == (T or 100)
        assert board.substeps == 1 and board.cell.dt == 1.0


def test_substeps_auto_needs_labels_and_a_prepared_network():
    from neurodeploy.backends import RunOptions, get_backend
    from neurodeploy.backends.gpu.spinnaker_profile import choose_substeps

    x = torch.tensor([[0.5, 0.7]])
    with pytest.raises(BackendError, match="labelled calibration items"):
        choose_substeps(_two_class_network(), x, None, "analog", "zero")
    backend = get_backend("gpu", profile="spinnaker", device="cpu", substeps="auto")
    with pytest.raises(BackendError, match="chooses K when the network is prepared"):
        backend.run(_two_class_network(), x, torch.zeros(1, dtype=torch.long), RunOptions(T=3, progress=False))
    with pytest.raises(BackendError, match="spinnaker backend: --substeps auto chooses K when the network is prepared"):
        get_backend("spinnaker", connectors="fromlist", substeps="auto").check(_two_class_network())
    with pytest.raises(ConfigError, match="--substeps auto applies to the spinnaker profiles"):
        get_backend("gpu", profile="pynn", substeps="auto")
    with pytest.raises(ConfigError, match="--substeps must be a int or auto, got 'often'"):
        get_backend("gpu", profile="spinnaker", substeps="often")
    with pytest.raises(ConfigError, match="--substeps 3 is not one of auto, 1, 2, 4, 8"):
        get_backend("gpu", profile="spinnaker", substeps=3)


def test_the_job_announces_the_choice_and_its_board_time():
    """``jobs.prepare.announce_choices``: the stage line of a ``--substeps auto`` choice (a report of
    ``choose_substeps`` on the two-class network above), nothing without one."""
    from neurodeploy.backends.gpu.spinnaker_profile import choose_substeps
    from neurodeploy.jobs.prepare import announce_choices

    net = _two_class_network()
    net.metadata["substeps_choice"] = choose_substeps(net, torch.tensor([[0.55, 0.7], [0.7, 0.55]]),
                                                      torch.tensor([1, 0]), "analog", "zero")
    events = []
    announce_choices(net, events.append)
    assert len(events) == 1 and events[0].kind == "stage"
    assert events[0].message.startswith("--substeps auto chose K = 2 (cheapest of [1, 2, 4] within 1 pp of the "
                                        "pynn profile on 2 calibration items (training split), T = 100; pynn 1.0000, "
                                        "K = 1, v_reset zero: 0.5000; K = 2, v_reset zero: 1.0000): board time 2 T "
                                        "ms per item")
    events.clear()
    announce_choices(_two_class_network(), events.append)
    assert not events


def test_a_choice_is_announced_by_the_prepare_that_made_it_only():
    """``jobs.prepare.prepare_for_backends``: a choice already recorded in the network (a network file of an earlier
    ``--substeps auto`` run) is not announced again by a backend that chooses nothing."""
    from types import SimpleNamespace

    from neurodeploy.backends import get_backend
    from neurodeploy.backends.gpu.spinnaker_profile import choose_substeps
    from neurodeploy.jobs.prepare import prepare_for_backends

    net = _two_class_network()
    net.metadata["substeps_choice"] = choose_substeps(net, torch.tensor([[0.55, 0.7], [0.7, 0.55]]),
                                                      torch.tensor([1, 0]), "analog", "zero")
    items = SimpleNamespace(train=SimpleNamespace(images=torch.tensor([[0.55, 0.7], [0.7, 0.55]]),
                                                  labels=torch.tensor([1, 0])))
    events = []
    prepare_for_backends(net, [get_backend("gpu", device="cpu")], items, lambda x: x, "analog", events.append)
    assert not events
