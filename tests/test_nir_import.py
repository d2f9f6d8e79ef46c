"""Graphs written elsewhere, from the command line (docs/nir.md, "Import" and "Import options"): the options
are checked when the command is read and recorded in config.json, the graph's metadata wins over them, the
new neuron dynamics follow NIR's equations (hand-computed here), and graphs exported by snnTorch and sinabs
give the library's own spikes, neuron for neuron."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.cli import main
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.nir import NIRWarning, from_nir_graph, read_nir, to_nir_graph, write_nir

nir = pytest.importorskip("nir")

pytestmark = [pytest.mark.filterwarnings("ignore::neurodeploy.nir.NIRWarning"),
              pytest.mark.filterwarnings("ignore:nirtorch:DeprecationWarning")]


def _gpu(network, x, T):
    return get_backend("gpu", device="cpu").run(network, torch.as_tensor(x, dtype=torch.float32),
                                                 torch.zeros(len(x), dtype=torch.long),
                                                 RunOptions(T=T, batch_size=len(x), progress=False,
                                                            record_neuron_counts=True))


def _dataset(path, x, classes):
    labels = np.arange(len(x)) % classes
    np.savez(path, x_train=x, y_train=labels, x_test=x, y_test=labels)
    return path


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _two_layer(path=None, leaky=False):
    """Input(4) -> Linear -> IF/LIF(3) -> Linear -> IF(2) -> Output, as another library would write it."""
    rng = np.random.default_rng(0)
    ones = np.ones(3, np.float32)
    hidden = (nir.LIF(tau=ones * 2e-3, r=ones * 2.0, v_leak=ones * 0, v_threshold=ones, v_reset=ones * 0) if leaky
              else nir.IF(r=ones, v_threshold=ones, v_reset=ones * 0))
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([4])), "w1": nir.Linear(rng.random((3, 4)).astype(np.float32)), "h": hidden,
        "w2": nir.Linear(rng.random((2, 3)).astype(np.float32)),
        "o": nir.IF(r=np.ones(2, np.float32), v_threshold=np.ones(2, np.float32), v_reset=np.zeros(2, np.float32)),
        "output": nir.Output(np.array([2]))},
        edges=[("input", "w1"), ("w1", "h"), ("h", "w2"), ("w2", "o"), ("o", "output")])
    if path is not None:
        nir.write(path, graph)
    return graph


# ---- the command line


@pytest.mark.parametrize(("argv", "needle"), [
    (["run", "--nir-dt", "0.001"], "--nir-dt applies only to a NIR graph"),
    (["run", "--network", "{nir}", "--nir-dt", "-1"], "--nir-dt must lie in (0, inf)"),
    (["run", "--network", "{nir}", "--nir-dt", "nan"], "--nir-dt must be a finite number"),
    (["run", "--network", "{zip}", "--nir-reset", "subtract"], "is not one"),
    (["info", "{zip}", "--nir-from", "sinabs"], "--nir-from applies only to a NIR graph"),
    (["run", "--network", "{nir}", "--nir-reset", "half"], "invalid choice"),
])
def test_import_flags_are_checked_when_the_command_is_read(argv, needle, tmp_path, capsys):
    graph = _two_layer(tmp_path / "g.nir")
    (tmp_path / "net.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # any file that is not HDF5
    argv = [a.format(nir=tmp_path / "g.nir", zip=tmp_path / "net.zip") for a in argv]
    assert graph is not None
    try:
        code = main(argv + ["--results-dir", str(tmp_path / "res")] if argv[0] == "run" else argv)
    except SystemExit as done:  # argparse's own choice check
        code = done.code
    assert code == 2
    assert needle in _one_line(capsys)
    assert not (tmp_path / "res").exists()  # refused before any run folder


def test_options_are_recorded_and_a_leaky_graph_runs(tmp_path, capsys):
    """A leaky graph without a time step is refused in one line; with --nir-dt it runs, and config.json holds
    the flags as given and the options as resolved (the preset under the flags)."""
    path = _two_layer(tmp_path / "lif.nir", leaky=True) and tmp_path / "lif.nir"
    data = _dataset(tmp_path / "d.npz", np.random.default_rng(1).random((4, 4)).astype(np.float32), 2)
    common = ["run", "--network", str(path), "--data", str(data), "-T", "8", "--no-progress", "--results-dir",
              str(tmp_path / "res")]
    assert main(common + ["--run-id", "no-dt"]) == 2
    assert "needs the time step" in _one_line(capsys)
    assert main(common + ["--run-id", "dt", "--nir-dt", "1e-3", "--nir-from", "snntorch"]) == 0
    out = capsys.readouterr().out
    assert "NIR import: leaky nodes: decay per step 1 - dt/tau with dt = 0.001 s" in out
    config = json.loads((tmp_path / "res" / "dt" / "config.json").read_text())
    assert config["nir_import"] == {"writer": "snntorch", "dt": 1e-3, "reset": None, "leak": None}
    assert config["nir_import_resolved"]["options"] == {"writer": "snntorch", "dt": 1e-3, "reset": "subtract-next",
                                                        "leak": "euler"}
    summary = json.loads((tmp_path / "res" / "dt" / "summary.json").read_text())
    assert summary["ann_accuracy"] is None and "no ANN accuracy" in summary["ann_accuracy_absent"]
    # LIF tau = 2 ms, dt = 1 ms, Euler: beta = 1 - dt/tau = 0.5, input gain r dt / tau = 1
    hidden = read_nir(path, dt=1e-3, leak="euler").populations["h"].neuron
    assert np.exp(-1 / hidden.leak_tau) == pytest.approx(0.5)


def test_the_graph_metadata_wins_over_the_flags():
    graph = _two_layer(leaky=True)
    graph.metadata = {"dt": 2e-3, "reset": "subtract"}
    with pytest.warns(NIRWarning, match="states dt = 0.002 s, which overrides the dt = 0.001 s given"):
        network = from_nir_graph(graph, dt=1e-3, reset="zero")
    assert network.metadata["nir_import"]["options"]["dt"] == 2e-3
    assert network.populations["h"].neuron.reset == "subtract"
    assert np.exp(-1 / network.populations["h"].neuron.leak_tau) == pytest.approx(np.exp(-1.0))  # dt / tau = 1


def test_a_graph_written_here_ignores_the_flags(tmp_path):
    network = read_nir(_two_layer(tmp_path / "g.nir") and tmp_path / "g.nir", reset="subtract")
    write_nir(network, tmp_path / "own.nir")
    with pytest.warns(NIRWarning, match="written by neurodeploy"):
        again = read_nir(tmp_path / "own.nir", reset="zero", dt=5.0)
    assert again.populations["h"].neuron.reset == "subtract"


# ---- the dynamics, against NIR's equations computed by hand


def test_cuba_lif_recurrence_v_leak_and_v_reset_follow_nir_euler():
    """CubaLIF with per-neuron tau_mem, tau_syn, w_in, v_leak and v_reset (reset to v_reset), a recurrent
    Affine with bias, a CubaLI readout: forward Euler of NIR's equations with dt, the recurrent input one
    step late, simulated by hand."""
    rng = np.random.default_rng(3)
    n, m, k, dt, T = 5, 4, 3, 1e-3, 30
    tau_mem, tau_syn = rng.uniform(2e-3, 8e-3, m), rng.uniform(1.5e-3, 4e-3, m)
    r, w_in, v_leak = rng.uniform(0.5, 2, m), rng.uniform(0.5, 2, m), rng.uniform(-0.2, 0.3, m)
    theta, v_reset = rng.uniform(0.8, 1.2, m), rng.uniform(-0.3, 0.1, m)
    w, w_rec, b_rec = rng.normal(0, 1, (m, n)), rng.normal(0, 0.5, (m, m)), rng.normal(0, 0.2, m)
    w_out = rng.normal(0, 1, (k, m))
    li_tau_mem, li_tau_syn = np.full(k, 4e-3), np.full(k, 2e-3)
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([n])), "w": nir.Linear(w),
        "lif": nir.CubaLIF(tau_mem=tau_mem, tau_syn=tau_syn, r=r, v_leak=v_leak, v_threshold=theta,
                           v_reset=v_reset, w_in=w_in),
        "rec": nir.Affine(w_rec, b_rec), "out_w": nir.Linear(w_out),
        "li": nir.CubaLI(tau_mem=li_tau_mem, tau_syn=li_tau_syn, r=np.ones(k), v_leak=np.zeros(k), w_in=np.ones(k)),
        "output": nir.Output(np.array([k]))},
        edges=[("input", "w"), ("w", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out_w"), ("out_w", "li"),
               ("li", "output")])
    network = from_nir_graph(graph, dt=dt, leak="euler", reset="zero")
    assert sorted(p.delay for p in network.projections) == [0, 0, 1]
    x = rng.random((3, n))
    I, v, s = np.zeros((3, m)), np.zeros((3, m)), np.zeros((3, m))
    I2, v2, counts, readout = np.zeros((3, k)), np.zeros((3, k)), np.zeros((3, m)), []
    for _ in range(T):
        drive = x @ w.T + s @ w_rec.T + b_rec  # the recurrent spikes of the step before
        I = I + dt / tau_syn * (-I + w_in * drive)
        v = v + dt / tau_mem * (v_leak - v + r * I)
        s = (v >= theta).astype(float)
        v = np.where(s > 0, v_reset, v)
        counts += s
        I2 = I2 + dt / li_tau_syn * (-I2 + s @ w_out.T)
        v2 = v2 + dt / li_tau_mem * (-v2 + I2)
        readout.append(v2.copy())
    result = _gpu(network, x, T)
    assert 0 < counts.sum() < counts.size * T  # neither silent nor saturated
    assert np.array_equal(result.population_neuron_counts()["lif"], counts)
    np.testing.assert_allclose(result.readout, np.stack(readout, 1), rtol=1e-4, atol=1e-5)


def test_nested_graph_reads_as_its_flat_equivalent():
    """snnTorch's RLeaky written as a nested graph (input -> lif <-> w_rec, lif -> output inside) equals the
    same nodes written flat; nested graphs are not refused as recurrent when they are not."""
    rng = np.random.default_rng(4)
    n, m = 3, 4
    ones = np.ones(m)
    lif = {"tau": ones * 1e-3 / 0.2, "r": ones * 5.0, "v_leak": ones * 0, "v_threshold": ones, "v_reset": ones * 0}
    w, w_rec = rng.normal(0, 1, (m, n)), rng.normal(0, 0.5, (m, m))
    inner = nir.NIRGraph(nodes={"input": nir.Input(np.array([m])), "lif": nir.LIF(**lif), "w_rec": nir.Linear(w_rec),
                                "output": nir.Output(np.array([m]))},
                         edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    nested = nir.NIRGraph(nodes={"input": nir.Input(np.array([n])), "w": nir.Linear(w), "r": inner,
                                 "output": nir.Output(np.array([m]))},
                          edges=[("input", "w"), ("w", "r"), ("r", "output")])
    flat = nir.NIRGraph(nodes={"input": nir.Input(np.array([n])), "w": nir.Linear(w), "lif": nir.LIF(**lif),
                               "w_rec": nir.Linear(w_rec), "output": nir.Output(np.array([m]))},
                        edges=[("input", "w"), ("w", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    x = rng.random((4, n))
    a = _gpu(from_nir_graph(nested, writer="snntorch"), x, 20)
    b = _gpu(from_nir_graph(flat, writer="snntorch"), x, 20)
    assert np.array_equal(a.readout, b.readout) and a.readout[:, -1].sum() > 0
    feed_forward = nir.NIRGraph(nodes={"input": nir.Input(np.array([n])), "g": nir.NIRGraph.from_list(
        nir.Linear(w), nir.IF(r=ones, v_threshold=ones, v_reset=ones * 0)), "output": nir.Output(np.array([m]))},
        edges=[("input", "g"), ("g", "output")])
    assert [p.delay for p in from_nir_graph(feed_forward).projections] == [0]


# ---- exported by the libraries themselves, run from the command line


def _snntorch_net(kind: str, n_in=20, n=32, n_out=5):
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(1)
    beta, alpha = torch.rand(n) * 0.2 + 0.75, torch.rand(n) * 0.3 + 0.5  # per neuron: snnTorch's export needs vectors
    cells = {"leaky": lambda: snn.Leaky(beta=beta, threshold=torch.ones(n), init_hidden=True),
             "synaptic": lambda: snn.Synaptic(alpha=alpha, beta=beta, threshold=torch.ones(n), init_hidden=True),
             "rsynaptic": lambda: snn.RSynaptic(alpha=alpha, beta=beta, linear_features=n, init_hidden=True)}
    net = torch.nn.Sequential(torch.nn.Linear(n_in, n), cells[kind](), torch.nn.Linear(n, n_out),
                              snn.Leaky(beta=torch.full((n_out,), 0.9), threshold=torch.full((n_out,), 0.5),
                                        init_hidden=True, output=True))
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    return net


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["leaky", "synaptic", "rsynaptic"])
def test_snntorch_exports_run_from_the_cli_as_snntorch_runs_them(kind, tmp_path, capsys):
    """snnTorch 1.0.0's Leaky (beta < 1), Synaptic and RSynaptic (CubaLIF + recurrent Affine), per-neuron
    beta and alpha, exported with export_to_nir and run with `--nir-from snntorch` for 100 steps: every
    hidden neuron's spike count and the output spike counts at every step equal snnTorch's."""
    import snntorch.utils
    from snntorch.export_nir import export_to_nir

    net = _snntorch_net(kind)
    path = tmp_path / f"{kind}.nir"
    nir.write(path, export_to_nir(net, torch.randn(1, 20), ignore_dims=[0]))
    B, T = 16, 100
    x = np.random.default_rng(0).random((B, 20)).astype(np.float32)
    snntorch.utils.reset(net)
    hidden, out = [], []
    net[1].register_forward_hook(lambda m, i, o: hidden.append((o[0] if isinstance(o, tuple) else o).detach().clone()))
    with torch.no_grad():
        for _ in range(T):
            out.append(net(torch.as_tensor(x))[0].clone())
    hidden_counts = torch.stack(hidden, 1).sum(1).numpy()
    output_counts = torch.stack(out, 1).cumsum(1).numpy()
    assert main(["run", "--network", str(path), "--nir-from", "snntorch", "--data",
                 str(_dataset(tmp_path / "d.npz", x, 5)), "-T", str(T), "--no-progress", "-q", "--results-dir",
                 str(tmp_path / "res"), "--run-id", kind]) == 0
    result = SimulationResult.load(tmp_path / "res" / kind / "result.npz")
    counts = result.population_neuron_counts()
    name = next(k for k, c in counts.items() if c.shape[1] == 32)
    assert hidden_counts.sum() > 1000
    assert np.array_equal(counts[name], hidden_counts)
    assert np.array_equal(result.readout, output_counts)


@pytest.mark.slow
def test_sinabs_nmnist_cnn_runs_from_the_cli_as_sinabs_runs_it(tmp_path, capsys):
    """The NIR paper's N-MNIST CNN (2x34x34 -> Conv 16 s2 -> Conv 16 -> SumPool -> Conv 8 -> SumPool -> 128
    -> 256 -> 10, subtractive IAF), built with sinabs 2.0.3 (SingleSpike, no membrane floor) and written by
    sinabs.to_nir: with `--nir-from sinabs` no neuron of any layer differs and the output counts equal
    sinabs' at every step; read as NIR says (reset to 0) they do not."""
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers as sl
    from sinabs.activation import SingleSpike

    B, T = 8, 20
    torch.manual_seed(0)

    def iaf():
        return sl.IAFSqueeze(batch_size=B, spike_fn=SingleSpike, min_v_mem=None)

    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 16, 5, stride=2, padding=1, bias=False), iaf(),
        torch.nn.Conv2d(16, 16, 3, padding=1, bias=False), iaf(), sl.SumPool2d(2),
        torch.nn.Conv2d(16, 8, 3, padding=1, bias=False), iaf(), sl.SumPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(128, 256, bias=False), iaf(), torch.nn.Linear(256, 10, bias=False), iaf())
    with torch.no_grad():
        for layer in model:
            if hasattr(layer, "weight"):
                layer.weight.mul_(2.5)
    rng = np.random.default_rng(0)
    x = ((rng.random((B, 2, 34, 34)) < 0.3) * rng.integers(1, 4, (B, 2, 34, 34))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = sinabs.to_nir(model, torch.as_tensor(x))
    graph.infer_types()  # sinabs leaves Conv2d.input_shape unset, which nir.write cannot store
    nir.write(tmp_path / "cnn.nir", graph)
    spikes = {}
    for i, layer in enumerate(model):
        if isinstance(layer, sl.IAFSqueeze):
            layer.reset_states()
            layer.register_forward_hook(lambda m, a, o, i=i: spikes.__setitem__(i, o.detach().reshape(B, T, -1)))
    with torch.no_grad():
        model(torch.as_tensor(x)[:, None].expand(B, T, 2, 34, 34).reshape(B * T, 2, 34, 34))
    data = _dataset(tmp_path / "nmnist.npz", x, 10)
    for writer in ("sinabs", "nir"):
        assert main(["run", "--network", str(tmp_path / "cnn.nir"), "--nir-from", writer, "--data", str(data), "-T",
                     str(T), "--no-progress", "-q", "--results-dir", str(tmp_path / "res"), "--run-id", writer]) == 0
    ours = SimulationResult.load(tmp_path / "res" / "sinabs" / "result.npz")
    as_nir = SimulationResult.load(tmp_path / "res" / "nir" / "result.npz")
    names = [k for k in ours.population_neuron_counts() if k != "input"]
    assert len(names) == len(spikes) == 5
    for name, i in zip(names, sorted(spikes), strict=True):
        expected = spikes[i].sum(1).numpy()
        assert np.array_equal(ours.population_neuron_counts()[name], expected), name
    assert np.array_equal(ours.readout, spikes[max(spikes)].cumsum(1).numpy())
    first = names[0]
    assert np.sum(as_nir.population_neuron_counts()[first] != spikes[min(spikes)].sum(1).numpy()) > 0


def _trained_snn_network():
    """An IR with every trained-SNN field: per-neuron leak_tau, v_leak, v_reset and thresholds, a synaptic
    current, snnTorch's next-step reset, a recurrent projection (delay 1), a delay of 3 steps, a CubaLI readout."""
    from neurodeploy.ir import Dense, Network, NeuronSpec, Population

    rng = np.random.default_rng(5)
    network = Network()
    network.add_population(Population("input", (5,), "input"))
    network.add_population(Population("h", (4,), "hidden", NeuronSpec(
        threshold=rng.uniform(0.8, 1.2, 4).astype(np.float32), reset="zero", v_reset=rng.uniform(-0.2, 0, 4),
        leak_tau=rng.uniform(3, 8, 4), v_leak=rng.uniform(0, 0.2, 4), tau_syn=2.0)))
    network.add_population(Population("g", (4,), "hidden", NeuronSpec(reset="subtract", reset_timing="next_step",
                                                                      leak_tau=5.0)))
    network.add_population(Population("o", (3,), "output", NeuronSpec(readout="membrane", leak_tau=4.0,
                                                                      tau_syn=2.0)))
    network.connect("input", "h", [Dense(rng.normal(0, 1, (4, 5)).astype(np.float32))])
    network.connect("h", "h", [Dense(rng.normal(0, 0.5, (4, 4)).astype(np.float32))], delay=1)
    network.connect("h", "g", [Dense(rng.normal(0, 1.5, (4, 4)).astype(np.float32))], delay=3)
    network.connect("g", "o", [Dense(rng.normal(0, 1, (3, 4)).astype(np.float32))])
    return network.validate()


def test_trained_snn_fields_round_trip_and_read_as_nir_means_them(tmp_path):
    """Written here: back bit-identical (IR files byte for byte); with the metadata stripped, read with NIR's
    own equations (exp leak, dt = 1 ms, reset per node) the same spikes and readout."""
    from neurodeploy.ir import save_network

    network = _trained_snn_network()
    write_nir(network, tmp_path / "t.nir")
    back = read_nir(tmp_path / "t.nir")
    save_network(network, tmp_path / "a.zip")
    save_network(back, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    graph = nir.read(tmp_path / "t.nir", type_check=False)
    assert {type(n).__name__ for n in graph.nodes.values()} >= {"CubaLIF", "LIF", "CubaLI", "Delay"}
    # one reset for the whole graph when its metadata is stripped: g resets to zero here too
    network.populations["g"].neuron.reset, network.populations["g"].neuron.reset_timing = "zero", "immediate"
    graph = to_nir_graph(network)
    for node in graph.nodes.values():
        node.metadata = {}
    graph.metadata = {}
    as_nir = from_nir_graph(graph, dt=1e-3, reset="zero", leak="exp")
    x = np.random.default_rng(6).random((4, 5))
    ours, theirs = _gpu(network, x, 40), _gpu(as_nir, x, 40)
    for name in ("h", "g"):
        assert ours.population_neuron_counts()[name].sum() > 0
        assert np.array_equal(theirs.population_neuron_counts()[name], ours.population_neuron_counts()[name]), name
    np.testing.assert_allclose(theirs.readout, ours.readout, rtol=1e-5, atol=1e-5)


def _braille_like(path, n_in=12, n=16, n_out=7):
    """The NIR paper's braille RNN as snnTorch writes it (CubaLIF + a recurrent Affine in a nested graph,
    tau = dt / (1 - beta), r = tau / dt, w_in = tau_syn / dt, dt = 1e-4), with random weights."""
    rng = np.random.default_rng(7)
    dt = 1e-4

    def cuba(size):
        beta, alpha = rng.uniform(0.8, 0.95, size), rng.uniform(0.5, 0.8, size)
        tau_mem, tau_syn = dt / (1 - beta), dt / (1 - alpha)
        return nir.CubaLIF(tau_mem=tau_mem, tau_syn=tau_syn, r=tau_mem / dt, v_leak=np.zeros(size),
                           v_threshold=np.ones(size), v_reset=np.zeros(size), w_in=tau_syn / dt)

    rnn = nir.NIRGraph(nodes={"input": nir.Input(np.array([n])), "lif": cuba(n),
                              "w_rec": nir.Affine(rng.normal(0, 0.4, (n, n)), rng.normal(0, 0.05, n)),
                              "output": nir.Output(np.array([n]))},
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([n_in])), "fc1": nir.Linear(rng.normal(0, 1.5, (n, n_in))),
                                "lif1": rnn, "fc2": nir.Linear(rng.normal(0, 1.0, (n_out, n))), "lif2": cuba(n_out),
                                "output": nir.Output(np.array([n_out]))},
                         edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"),
                                ("lif2", "output")])
    nir.write(path, graph)
    return path


@pytest.mark.slow
def test_recurrent_graph_is_equal_spike_for_spike_on_gpu_and_neuron(tmp_path, capsys):
    """`compare --network` with a braille-like recurrent CubaLIF graph: NEURON's exact cell and the gpu
    backend's pynn profile (one step of delay per projection on both) give every neuron the same count."""
    pytest.importorskip("pyNN")
    path = _braille_like(tmp_path / "rnn.nir")
    x = (np.random.default_rng(8).random((4, 12)) < 0.5).astype(np.float32)
    assert main(["compare", "--network", str(path), "--nir-from", "snntorch", "--data",
                 str(_dataset(tmp_path / "d.npz", x, 7)), "--backends", "gpu:pynn,neuron", "-T", "30", "--samples",
                 "4", "--workers", "1", "--no-progress", "-q", "--results-dir", str(tmp_path), "--run-id", "c"]) == 0
    report = json.loads((tmp_path / "c" / "compare.json").read_text())["backends"]["neuron"]
    agreement = report["agreement_with_reference"]
    assert agreement["neuron_counts"]["all"] == {"equal_fraction": 1.0, "max_difference": 0.0}
    assert agreement["max_readout_difference"] == 0.0
    counts = SimulationResult.load(tmp_path / "c" / "result_neuron.npz").population_neuron_counts()
    assert all(c.sum() > 0 for name, c in counts.items() if name != "input")


def test_info_and_export_take_a_graph_written_elsewhere(tmp_path, capsys):
    """`info` and `export` read a nested, recurrent snnTorch-style graph with the import flags; the export is
    a graph of ours whose embedded reference trace checks."""
    from neurodeploy.nir import check_reference

    path = _braille_like(tmp_path / "rnn.nir")
    assert main(["info", str(path), "--nir-from", "snntorch"]) == 0
    out = capsys.readouterr().out
    assert "NIR import: nested graphs are flattened" in out and "lif1_lif" in out
    x = np.random.default_rng(9).random((3, 12)).astype(np.float32)
    assert main(["export", str(path), str(tmp_path / "ours.nir"), "--nir-from", "snntorch", "--reference", "3",
                 "--data", str(_dataset(tmp_path / "d.npz", x, 7)), "-T", "20"]) == 0
    assert check_reference(tmp_path / "ours.nir")["ok"]
    assert sorted(p.delay for p in read_nir(tmp_path / "ours.nir").projections) == [0, 0, 1]
