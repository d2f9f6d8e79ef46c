"""NIR interchange (docs/nir.md): bit-identical round trips, reference traces, and the real sinabs and
snnTorch packages on both sides of the file."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.convert import convert
from neurodeploy.errors import NeurodeployError
from neurodeploy.ir import (
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    Identity,
    Network,
    NeuronSpec,
    Population,
    Scale,
    load_network,
    save_network,
)
from neurodeploy.ir.nir import (
    NIRError,
    NIRNotInstalledError,
    NIRUnsupportedError,
    NIRWarning,
    check_reference,
    from_nir_graph,
    nir_info,
    read_nir,
    to_nir_graph,
    write_nir,
)
from neurodeploy.train.zoo import ARCHITECTURES, build, conv_mnist, dense_mnist

nir = pytest.importorskip("nir")

# the assumptions stated while reading foreign graphs, and nirtorch's notice about its old API (used by
# sinabs 2.0.3 and snnTorch 1.0.0), are expected here; tests that care catch them with pytest.warns
pytestmark = [pytest.mark.filterwarnings("ignore::neurodeploy.ir.nir.NIRWarning"),
              pytest.mark.filterwarnings("ignore:nirtorch:DeprecationWarning")]

#: small inputs keep the zoo's layer structure and make conversion take well under a second
ZOO_SHAPES = {"conv_cifar": (3, 16, 16)}
MNIST_SHAPE = (1, 12, 12)


def ir_parts(network: Network, folder: Path) -> tuple[str, dict[str, np.ndarray]]:
    """The IR file's JSON text and arrays: equal parts mean a bit-identical network."""
    save_network(network, folder)
    with np.load(folder / "arrays.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    return (folder / "network.json").read_text(), arrays


def assert_bit_identical(a: Network, b: Network, tmp_path: Path) -> None:
    text_a, arrays_a = ir_parts(a, tmp_path / "a")
    text_b, arrays_b = ir_parts(b, tmp_path / "b")
    assert text_a == text_b
    assert arrays_a.keys() == arrays_b.keys()
    for key, array in arrays_a.items():
        assert array.dtype == arrays_b[key].dtype and array.shape == arrays_b[key].shape, key
        assert array.tobytes() == arrays_b[key].tobytes(), key


def run(network: Network, x: torch.Tensor, T: int, profile: str = "ideal"):
    options = RunOptions(T=T, batch_size=len(x), progress=False, record_neuron_counts=True)
    return get_backend("gpu", device="cpu", profile=profile).run(network, x, torch.zeros(len(x), dtype=torch.long),
                                                                  options)


def randomize_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial batch-norm statistics, so the converted populations have biases."""
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


def feature_network(readout: str = "spikes") -> Network:
    """Every IR feature NIR cannot say: per-channel and per-neuron thresholds, seeded and absolute
    initial membranes, reset to zero, a leak, QFFS, identity and scale ops, parallel projections,
    biases with and without a weighted op to carry them, metadata."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    net = Network(metadata={"converter": "hand", "x": 1.5, "nested": {"a": [1, 2]}})
    net.add_population(Population("input", (1, 8, 8), "input"))
    net.add_population(Population("conv", (4, 8, 8), "hidden", NeuronSpec(
        threshold=rng.uniform(0.5, 1.5, 4).astype(f32), v_init="uniform", v_init_seed=7),
        bias=rng.normal(0, 0.1, 4).astype(f32), metadata={"lambda": [1.0, 2.0]}))
    net.add_population(Population("pool", (4, 4, 4), "hidden", NeuronSpec(
        threshold=0.75, reset="zero", v_init=rng.uniform(0, 0.5, 4).astype(f32), leak_tau=20.0),
        bias=rng.normal(0, 0.1, 4).astype(f32)))
    net.add_population(Population("dense", (12,), "hidden", NeuronSpec(
        threshold=rng.uniform(0.5, 1.5, 12).astype(f32), v_init="half", spike_cap=3, negative_spikes=True),
        bias=rng.normal(0, 0.1, 12).astype(f32)))
    net.add_population(Population("dense2", (12,), "hidden", NeuronSpec(v_init=0.25),
                                  bias=rng.normal(0, 0.1, 12).astype(f32)))
    leak = 10.0 if readout == "membrane" else None
    net.add_population(Population("output", (5,), "output", NeuronSpec(threshold=2.0, readout=readout,
                                                                        leak_tau=leak)))
    net.connect("input", "conv", [Conv2d(rng.normal(0, 0.5, (4, 1, 3, 3)).astype(f32), padding=1)])
    net.connect("conv", "pool", [AvgPool2d(2, 2)])
    net.connect("pool", "dense", [Flatten(), Dense(rng.normal(0, 0.5, (12, 64)).astype(f32))])
    net.connect("dense", "dense2", [Identity()])
    net.connect("dense", "dense2", [Scale(np.asarray(0.5, f32))])
    net.connect("dense2", "output", [Dense(rng.normal(0, 0.5, (5, 12)).astype(f32))])
    net.connect("conv", "output", [AvgPool2d(2, 2), Scale(rng.uniform(0.5, 1, 4).astype(f32)), Flatten(),
                                   Dense(rng.normal(0, 0.2, (5, 64)).astype(f32))])
    return net.validate()


# ---- the optional dependency


def test_missing_nir_package_is_a_clear_neurodeploy_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nir", None)  # makes `import nir` raise ImportError
    with pytest.raises(NIRNotInstalledError, match="pip install 'nir==1.0.8'") as err:
        write_nir(feature_network(), tmp_path / "x.nir")
    assert isinstance(err.value, NeurodeployError)


# ---- round trips written and read here


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_zoo_round_trip_is_bit_identical_with_the_same_spikes(arch, tmp_path):
    shape = ZOO_SHAPES.get(arch, MNIST_SHAPE)
    torch.manual_seed(0)
    model = randomize_batch_norm(build(arch, shape, 10, seed=0))
    network = convert(model, torch.rand(4, *shape))
    path = write_nir(network, tmp_path / f"{arch}.nir", reference=torch.rand(2, *shape), T=4)
    back = read_nir(path)
    assert_bit_identical(network, back, tmp_path)
    report = check_reference(path)
    assert report["ok"], report
    assert report["items"] == 2 and report["T"] == 4


@pytest.mark.parametrize("readout", ["spikes", "membrane"])
@pytest.mark.parametrize("delays", [False, True])
def test_every_ir_feature_round_trips(readout, delays, tmp_path):
    network = feature_network(readout)
    path = write_nir(network, tmp_path / "f.nir", delays=delays, reference=torch.rand(3, 1, 8, 8), T=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = read_nir(path)
    assert_bit_identical(network, back, tmp_path)
    assert any("profile 'pynn'" in str(w.message) for w in caught) == delays
    assert check_reference(path, back)["ok"]
    info = nir_info(path)
    assert info["delay_steps"] == int(delays) and info["T"] == 6 and info["dt"] == 1e-3
    graph = nir.read(path)  # what a foreign reader sees: NIR's own type check passes
    kinds = {type(node).__name__ for node in graph.nodes.values()}
    assert ("Delay" in kinds) == delays
    assert {"IF", "Conv2d", "AvgPool2d", "Affine", "Scale", "Flatten"} <= kinds
    assert ("LIF" in kinds) and (("LI" in kinds) == (readout == "membrane"))
    conv = next(node for node in graph.nodes.values() if node.metadata.get("population") == "conv")
    assert conv.metadata["reset"] == "subtract" and conv.metadata["v_init"] == "uniform"
    assert conv.metadata["v_init_values"].shape == (4, 8, 8)  # the seeded draws, for any receiver


def test_delay_profile_gives_the_pynn_spikes(tmp_path):
    network = feature_network()
    x = torch.rand(2, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRWarning)
        back = read_nir(write_nir(network, tmp_path / "d.nir", delays=True))
    assert np.array_equal(run(back, x, 8, "pynn").neuron_counts, run(network, x, 8, "pynn").neuron_counts)


def test_reference_check_catches_a_changed_network(tmp_path):
    network = feature_network()
    path = write_nir(network, tmp_path / "r.nir", reference=torch.rand(2, 1, 8, 8), T=10)
    changed = read_nir(path)
    changed.projections[0].ops[0].weight = changed.projections[0].ops[0].weight * 1.5
    report = check_reference(path, changed)
    assert not report["ok"] and sum(report["spike_mismatches"].values()) > 0


def test_load_network_reads_nir_files(tmp_path):
    network = feature_network()
    back = load_network(write_nir(network, tmp_path / "n.nir"))
    assert_bit_identical(network, back, tmp_path)


def test_folded_thresholds_are_one_everywhere_with_the_same_spikes(tmp_path):
    torch.manual_seed(0)
    model = randomize_batch_norm(conv_mnist(MNIST_SHAPE, channels=(4, 8), hidden=16))
    network = convert(model, torch.rand(8, *MNIST_SHAPE))
    rng = np.random.default_rng(1)
    for pop in network.populations.values():
        if pop.role == "hidden":
            pop.neuron.threshold = rng.uniform(0.5, 2.0, pop.shape[0]).astype(np.float32)
    path = write_nir(network, tmp_path / "f.nir", fold_thresholds=True)
    graph = nir.read(path)
    assert all(np.all(node.v_threshold == 1) for node in graph.nodes.values() if isinstance(node, nir.IF))
    assert not any(isinstance(node, nir.Scale) for node in graph.nodes.values())
    x = torch.rand(6, *MNIST_SHAPE)
    a, b = run(network, x, 30), run(read_nir(path), x, 30)
    assert np.array_equal(a.neuron_counts, b.neuron_counts)
    np.testing.assert_allclose(a.readout, b.readout, atol=1e-4)


# ---- graphs without our metadata


def test_own_graph_without_metadata_reads_with_nir_semantics(tmp_path):
    torch.manual_seed(0)
    model = randomize_batch_norm(conv_mnist(MNIST_SHAPE, channels=(4, 8), hidden=16))
    network = convert(model, torch.rand(8, *MNIST_SHAPE))
    rng = np.random.default_rng(2)
    for pop in network.populations.values():
        if pop.role == "hidden":  # spikes of amplitude theta: Scale nodes in the graph
            pop.neuron.threshold = rng.uniform(0.5, 2.0, pop.shape[0]).astype(np.float32)
    graph = to_nir_graph(network)
    for node in graph.nodes.values():
        node.metadata = {}
    graph.metadata = {}
    with pytest.warns(NIRWarning, match="reset to v_reset"):
        as_nir = from_nir_graph(graph)
    assert {pop.neuron.reset for pop in as_nir.populations.values() if pop.role == "hidden"} == {"zero"}
    subtractive = from_nir_graph(graph, reset="subtract")
    x = torch.rand(6, *MNIST_SHAPE)
    a, b = run(network, x, 30), run(subtractive, x, 30)
    assert np.array_equal(a.neuron_counts, b.neuron_counts)
    np.testing.assert_allclose(a.readout, b.readout, atol=1e-4)


def _lif_graph(tau, r, extra_edges=(), cuba=False):
    n = 3
    ones = np.ones(n, np.float32)
    neuron = (nir.CubaLIF(tau_syn=ones, tau_mem=ones * tau, r=ones * r, v_leak=ones * 0, v_threshold=ones)
              if cuba else nir.LIF(tau=ones * tau, r=ones * r, v_leak=ones * 0, v_threshold=ones))
    nodes = {"input": nir.Input(np.array([n])), "w": nir.Linear(np.eye(n, dtype=np.float32)), "lif": neuron,
             "w_back": nir.Linear(np.eye(n, dtype=np.float32)), "output": nir.Output(np.array([n]))}
    edges = [("input", "w"), ("w", "lif"), ("lif", "output"), *extra_edges]
    if not extra_edges:
        del nodes["w_back"]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_outside_the_ir_is_refused_by_node_name():
    with pytest.raises(NIRUnsupportedError, match="cycle through no neuron node"):
        from_nir_graph(_lif_graph(np.inf, np.inf, [("w", "w_back"), ("w_back", "w")]))
    with pytest.raises(NIRError, match="needs the time step.*--nir-dt"):
        from_nir_graph(_lif_graph(1e-3, 10.0))


def test_threshold_node_spikes_whenever_the_step_input_reaches_it():
    """NIR's stateless Threshold: a spike in every step whose input reaches it, nothing kept between steps."""
    graph = _lif_graph(np.inf, np.inf)
    graph.nodes["lif"] = nir.Threshold(np.array([0.3, 0.5, 0.9], np.float32))
    network = from_nir_graph(graph)
    x = torch.tensor([[0.4, 0.4, 0.4], [0.2, 0.6, 1.0]])
    result = run(network, x, 10)
    expected = np.array([[1, 0, 0], [0, 1, 1]], float)  # an IF neuron would accumulate and spike far more
    assert np.array_equal(result.readout[:, -1], 10 * expected)


def test_leaky_nodes_follow_dt_and_the_leak_rule():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRWarning)
        exp = from_nir_graph(_lif_graph(1e-3, 10.0), dt=1e-4)
        euler = from_nir_graph(_lif_graph(1e-3, 10.0), dt=1e-4, leak="euler")
    assert exp.populations["lif"].neuron.leak_tau == pytest.approx(10.0)
    assert np.exp(-1 / euler.populations["lif"].neuron.leak_tau) == pytest.approx(0.9)  # snnTorch's beta
    assert all(not any(isinstance(op, Scale) for op in p.ops) for p in exp.projections)  # r dt / tau = 1


def test_foreign_conv1d_delays_and_integrator_readout():
    """Conv1d (run as a height-1 Conv2d), one-step Delay nodes on every path (profile "pynn"), an IF
    with threshold 0.5 (unit spikes), a conv bias and an I readout with r = 2, against a hand-written
    simulation of NIR's meaning."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (3, 2, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, 3).astype(np.float32)
    w2 = rng.normal(0, 0.5, (4, 30)).astype(np.float32)
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([2, 10])),
        "d0": nir.Delay(delay=np.full((2, 10), 1e-3, np.float32)),
        "c": nir.Conv1d(input_shape=10, weight=w, stride=1, padding=1, dilation=1, groups=1, bias=b),
        "if": nir.IF(r=np.ones((3, 10), np.float32), v_threshold=np.full((3, 10), 0.5, np.float32)),
        "d1": nir.Delay(delay=np.full((3, 10), 1e-3, np.float32)),
        "f": nir.Flatten(input_type={"input": np.array([3, 10])}, start_dim=0, end_dim=-1),
        "a": nir.Linear(w2),
        "i": nir.I(r=np.full(4, 2.0, np.float32)),
        "output": nir.Output(np.array([4]))},
        edges=[("input", "d0"), ("d0", "c"), ("c", "if"), ("if", "d1"), ("d1", "f"), ("f", "a"), ("a", "i"),
               ("i", "output")])
    with pytest.warns(NIRWarning, match="synaptic delays of \\[1\\] steps"):
        network = from_nir_graph(graph, reset="subtract", dt=1e-3)
    assert [p.delay for p in network.projections] == [1, 1]
    assert network.input.shape == (2, 1, 10) and network.output.neuron.readout == "membrane"
    x, T = torch.as_tensor(rng.random((3, 2, 10)), dtype=torch.float32), 12
    current = torch.nn.functional.conv1d(x, torch.as_tensor(w), None, padding=1)
    v, last, membrane, expected = torch.zeros_like(current), torch.zeros_like(current), torch.zeros(3, 4), []
    for t in range(T):
        v += torch.as_tensor(b)[:, None] + (current if t >= 1 else 0)  # the input arrives one step late
        spikes = (v >= 0.5).float()
        v -= 0.5 * spikes
        membrane += 2.0 * (last.flatten(1) @ torch.as_tensor(w2).T)  # unit spikes, one step late
        expected.append(membrane.clone())
        last = spikes
    for profile in ("ideal", "pynn"):  # each projection's own delay of one step: the same on both
        result = run(network, x.reshape(3, 2, 1, 10), T, profile)
        np.testing.assert_allclose(result.readout, torch.stack(expected, 1).numpy(), atol=1e-5)


# ---- sinabs and snnTorch


def _sinabs_spikes(sinabs, graph, x, T, align):
    """Simulates ``graph`` imported by sinabs: hidden spike counts per population and the output
    current summed over the steps (the membrane readout, integrated here)."""
    from sinabs.activation import SingleSpike

    model = sinabs.from_nir(graph, batch_size=len(x))
    counts = {}
    for name, module in model.named_modules():
        if isinstance(module, sinabs.layers.IAFSqueeze):
            if align:  # the IR's neuron: one spike per step, no floor under the membrane
                module.spike_fn, module.min_v_mem = SingleSpike, None
            module.register_forward_hook(lambda m, i, o, n=name: counts.__setitem__(n, o.detach()))
    steps = x[:, None].expand(len(x), T, *x.shape[1:]).reshape(len(x) * T, *x.shape[1:])
    with torch.no_grad():
        current, _ = model(steps)
    counts = {name: c.reshape(len(x), T, -1).sum(1).numpy() for name, c in counts.items()}
    return counts, current.reshape(len(x), T, -1).cumsum(1).numpy()


@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_sinabs_simulates_our_export_spike_for_spike(arch, mnist):
    sinabs = pytest.importorskip("sinabs")
    torch.manual_seed(0)
    model = dense_mnist(hidden=32) if arch == "dense" else conv_mnist(channels=(4, 8), hidden=16)
    network = convert(randomize_batch_norm(model), torch.as_tensor(mnist.train.images[:64]).float())
    x, T = torch.as_tensor(mnist.test.images[:8]).float(), 30
    ours = run(network, x, T)
    expected = ours.population_neuron_counts()
    graph = to_nir_graph(network, dialect="sinabs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sinabs 2.0.3 calls nirtorch.load
        counts, membrane = _sinabs_spikes(sinabs, graph, x, T, align=True)
        raw, _ = _sinabs_spikes(sinabs, graph, x, T, align=False)
    hidden = [name for name, pop in network.populations.items() if pop.role == "hidden"]
    assert sorted(counts) == sorted(hidden)
    for name in hidden:
        assert np.array_equal(counts[name], expected[name]), name
    assert np.array_equal(membrane, ours.readout)  # float for float, same summation order
    # sinabs' own IAF (MultiSpike: floor(v / theta) spikes a step; membrane floor -theta) can only add
    # spikes where the input is the same (the first hidden population)
    first = network.projections[0].target
    assert np.all(raw[first] >= expected[first])


def test_sinabs_export_refuses_what_sinabs_cannot_import():
    pytest.importorskip("sinabs")
    torch.manual_seed(0)
    network = convert(build("resnet_small", MNIST_SHAPE, 10, seed=0), torch.rand(4, *MNIST_SHAPE))
    with pytest.raises(NIRError, match="sinabs imports no Scale node"):
        to_nir_graph(network, dialect="sinabs")


def test_graph_written_by_sinabs_imports_here(tmp_path):
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers as sl
    from sinabs.activation import SingleSpike

    torch.manual_seed(0)
    B, T = 4, 20
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), sl.IAFSqueeze(batch_size=B, spike_fn=SingleSpike, spike_threshold=0.5),
        sl.SumPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 10),
        sl.IAFSqueeze(batch_size=B, spike_fn=SingleSpike, spike_threshold=0.5))
    x = torch.rand(B, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = sinabs.to_nir(model, x)
    graph.infer_types()  # sinabs leaves Conv2d.input_shape None, which nir.write cannot store
    nir.write(tmp_path / "s.nir", graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRWarning)
        network = read_nir(tmp_path / "s.nir", reset="subtract")
    for layer in (model[1], model[5]):
        layer.reset_states()  # to_nir ran the model on x
    spikes = []
    model[1].register_forward_hook(lambda m, i, o: spikes.append(o))
    with torch.no_grad():
        out = model(x[:, None].expand(B, T, 1, 8, 8).reshape(B * T, 1, 8, 8))
    result = run(network, x, T)
    hidden = next(name for name, pop in network.populations.items() if pop.role == "hidden")
    assert np.array_equal(result.population_neuron_counts()[hidden], spikes[0].reshape(B, T, -1).sum(1).numpy())
    assert np.array_equal(result.readout, out.reshape(B, T, -1).cumsum(1).numpy())


def _snntorch_net(n_in=20, n_hidden=32, n_out=5):
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    # vector beta and threshold: snnTorch 1.0.0 writes scalar ones with shape (), which NIR 1.0.8's
    # type check refuses (type mismatch [8] -> [])
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, n_hidden),
        snn.Leaky(beta=torch.ones(n_hidden), threshold=torch.ones(n_hidden), init_hidden=True,
                  reset_mechanism="subtract"),
        torch.nn.Linear(n_hidden, n_out),
        snn.Leaky(beta=torch.ones(n_out), threshold=torch.full((n_out,), 0.5), init_hidden=True, output=True,
                  reset_mechanism="subtract"))


def test_snntorch_export_imported_here_matches_snntorch(tmp_path):
    net = _snntorch_net()
    import snntorch.utils
    from snntorch.export_nir import export_to_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # snnTorch's dt / (1 - beta) with beta = 1
        nir.write(tmp_path / "s.nir", export_to_nir(net, torch.randn(1, 20), ignore_dims=[0]))
    B, T = 16, 40
    x = torch.rand(B, 20) * 0.5
    snntorch.utils.reset(net)
    hidden, out = [], []
    net[1].register_forward_hook(lambda m, i, o: hidden.append(o.detach().clone()))
    with torch.no_grad():
        for _ in range(T):
            out.append(net(x)[0].clone())
    hidden_counts = torch.stack(hidden, 1).sum(1).numpy()
    out_counts = torch.stack(out, 1).cumsum(1).numpy()
    with pytest.warns(NIRWarning, match="beta = 1"):
        network = read_nir(tmp_path / "s.nir", reset="subtract")
    result = run(network, x, T)
    name = next(n for n, pop in network.populations.items() if pop.role == "hidden")
    assert network.output.neuron.readout == "spikes"
    assert np.array_equal(result.population_neuron_counts()[name], hidden_counts)
    assert np.array_equal(result.readout, out_counts)
    # NIR's own semantics (snnTorch writes v_reset = 0, not its subtraction) give other spikes
    with pytest.warns(NIRWarning, match="reset to v_reset"):
        as_written = read_nir(tmp_path / "s.nir")
    assert np.abs(run(as_written, x, T).population_neuron_counts()[name] - hidden_counts).sum() > 0


def test_cli_export_writes_a_checkable_file_that_info_reads(tmp_path, capsys):
    from neurodeploy.cli import main

    model = tmp_path / "model.pt"
    assert main(["train", "--epochs", "1", "--out", str(model), "--no-progress"]) == 0
    assert main(["convert", str(model), "--out", str(tmp_path / "net.zip"), "--calibration-samples", "200"]) == 0
    out = tmp_path / "net.nir"
    assert main(["export", str(tmp_path / "net.zip"), str(out), "--reference", "3", "-T", "15"]) == 0
    report = check_reference(out)
    assert report["ok"] and report["readout_max_abs_diff"] == 0.0
    assert main(["info", str(out)]) == 0
    assert "reference trace of 3 items x 15 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="2"):
        main(["export", str(tmp_path / "net.zip"), str(out), "--to", "onnx"])
