"""Ops that used to be refused: spatial mean/sum, Conv1d and 1-D pooling, concatenation along channels,
clipped ReLUs, max pooling strategies, and models in other float dtypes. Each one against hand-computed
values, and the SNN at large T against its ANN (argmax agreement >= 99 %)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import simulate

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.backends.base import delayed_readout
from neurodeploy.backends.pynn.lowering import lower_network
from neurodeploy.convert import convert, replace_max_pooling
from neurodeploy.convert.readout import agreement_by_start
from neurodeploy.errors import ConfigError, UnsupportedOperationError
from neurodeploy.ir import load_network, save_network
from neurodeploy.ir.ops import AvgPool1d, AvgPool2d, ChannelSlice, Conv1d
from neurodeploy.ir.torch_ops import compile_chain
from neurodeploy.passes.synapse_matrix import synapse_matrix

T_LARGE = 500


def _hidden(net, index=0):
    return [p for p in net.populations.values() if p.role == "hidden"][index]


# --- hand-computed values ------------------------------------------------------------------------------


class _MeanHead(nn.Module):
    def __init__(self, reduce):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        self.reduce = reduce
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x):
        return self.fc(self.reduce(F.relu(self.conv(x))))


@pytest.mark.parametrize("reduce, factor", [(lambda h: h.mean((2, 3)), 1 / 6),
                                            (lambda h: torch.mean(h, [-1, -2]), 1 / 6),
                                            (lambda h: h.sum((2, 3)), 1.0),
                                            (lambda h: torch.flatten(h.mean((2, 3), keepdim=True), 1), 1 / 6)])
def test_spatial_mean_and_sum_are_one_average_pool(reduce, factor):
    """On a (2, 2, 3) population, mean over (2, 3) is AvgPool2d((2, 3)) then a flatten: each output sums
    its channel's 6 neurons times 1/6 (a sum: times 1), times the source's lambda."""
    model = _MeanHead(reduce).eval()
    x = torch.rand(16, 1, 2, 3)
    net = convert(model, x, normalization="max")
    (projection,) = net.incoming("output")
    assert isinstance(projection.ops[0], AvgPool2d) and projection.ops[0].kernel == (2, 3)
    lam = _hidden(net).metadata["lambda_mean"]
    matrix = synapse_matrix(projection, (2, 2, 3)).toarray()
    np.testing.assert_allclose(matrix, np.kron(np.eye(2), np.ones((1, 6))) * factor * lam, rtol=1e-6)


def test_partial_spatial_mean_with_keepdim():
    model = _MeanHead(lambda h: torch.flatten(h.mean(3, keepdim=True), 1)).eval()
    model.fc = nn.Linear(4, 2)
    net = convert(model, torch.rand(8, 1, 2, 3))
    (projection,) = net.incoming("output")
    assert isinstance(projection.ops[0], AvgPool2d) and projection.ops[0].kernel == (1, 3)


def test_conv1d_and_avg_pool1d_hand_values():
    """x = [1, 2, 3, 4, 5], kernel [1, 2, -1], padding 1: conv = [0, 2, 4, 6, 14] (x[-1] = x[5] = 0);
    then AvgPool1d(2) of its ReLU: [1, 5]."""
    conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 2.0, -1.0]]]))
    model = nn.Sequential(conv, nn.ReLU(), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(2, 1, bias=False)).eval()
    with torch.no_grad():
        model[4].weight.fill_(1.0)
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    net = convert(model, x, normalization="max")
    hidden = _hidden(net)
    (first,) = net.incoming(hidden.name)
    assert isinstance(first.ops[0], Conv1d)
    pre = compile_chain(first.ops)(x)[0, 0].numpy() * hidden.metadata["lambda_mean"]
    np.testing.assert_allclose(pre, [0.0, 2.0, 4.0, 6.0, 14.0], rtol=1e-6, atol=1e-6)
    (last,) = net.incoming("output")
    assert isinstance(last.ops[0], AvgPool1d)
    spikes = torch.tensor([[[0.0, 2.0, 4.0, 6.0, 14.0]]]) / hidden.metadata["lambda_mean"]  # rates x lambda
    np.testing.assert_allclose(compile_chain(last.ops)(spikes).numpy(), [[1.0 + 5.0]], rtol=1e-5)


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 3, bias=False), nn.Linear(2, 2, bias=False)
        self.fc = nn.Linear(5, 1, bias=False)

    def forward(self, x):
        h = torch.relu(torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1))
        return self.fc(torch.cat((h, ), 1))


def test_concatenation_projects_into_channel_slices():
    """relu(cat([a, b])) is a population of 5 fed by a into channels 0-2 and by b into 3-4 (each
    scaled by lambda_src / lambda_dst); a concatenation feeding a Linear folds into its weight columns."""
    torch.manual_seed(0)
    model = _Concat().eval()
    x = torch.rand(32, 2)
    net = convert(model, x, normalization="max")
    a, b, h = (net.populations[n] for n in ("a", "b", "relu_2"))  # F.relu(self.a(x)): named after its layer
    incoming = {p.source: p for p in net.incoming("relu_2")}
    for source, offset, size in ((a, 0, 3), (b, 3, 2)):
        ops = incoming[source.name].ops
        assert any(isinstance(op, ChannelSlice) and op.offset == offset and op.channels == 5 for op in ops)
        expected = np.zeros((5, size))
        expected[offset:offset + size] = np.eye(size) * source.metadata["lambda_mean"] / h.metadata["lambda_mean"]
        np.testing.assert_allclose(synapse_matrix(incoming[source.name], (size,)).toarray(), expected, rtol=1e-6)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = model.a, model.b, model.fc

        def forward(self, x):
            return self.fc(torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1))

    net = convert(Head().eval(), x, normalization="max")
    by_source = {p.source: p.ops for p in net.incoming("output")}
    weight = model.fc.weight.detach().numpy()
    for name, columns in (("a", slice(0, 3)), ("b", slice(3, 5))):
        (dense,) = by_source[name]  # the slice folded into the Dense op
        lam = net.populations[name].metadata["lambda_mean"]
        np.testing.assert_allclose(dense.weight, weight[:, columns] * lam, rtol=1e-6)


@pytest.mark.parametrize("clip", [nn.ReLU6(), nn.Hardtanh(0.0, 6.0), lambda h: h.clamp(0, 6), lambda h: F.relu6(h),
                                  lambda h: torch.clamp(h, min=0.0, max=6.0), lambda h: F.hardtanh(h, 0.0, 6.0)])
def test_clipped_relu_is_an_if_neuron_clipping_at_its_threshold(clip):
    """y = clip(x, 0, 6) for x in [-2, 10]: with max normalization lambda = 6, so the neuron fires every
    step above 6 (rate 1 -> 6), never below 0, and at rate x / 6 between."""
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.clip = clip

        def forward(self, x):
            return self.clip(x)

    x = torch.linspace(-2, 10, 25)[:, None]
    net = convert(Model().eval(), x, normalization="max")
    hidden = _hidden(net)
    assert hidden.metadata["clip"] == 6.0 and hidden.metadata["lambda_mean"] == pytest.approx(6.0)
    rates = simulate(net, x, T_LARGE).readout[:, -1, 0] / T_LARGE
    np.testing.assert_allclose(rates, x.clamp(0, 6)[:, 0].numpy(), atol=6 / T_LARGE + 1e-4)


def test_spiking_max_pool_builds_a_relu_tree():
    """A 2 x 2 window: max(a, b, c, d) = max(max(a, b), max(c, d)), three ReLU populations; the SNN's rate
    is the window's maximum."""
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()).eval()
    x = torch.tensor([[[[0.2, 0.9], [0.5, 0.1]]], [[[0.3, 0.0], [0.1, 0.7]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    net = convert(model, x, normalization="max", max_pool="spiking")
    assert sum("_max" in n for n in net.populations) == 3
    assert len(net.metadata["conversion_notes"]) == 1 and "3 ReLU populations" in net.metadata["conversion_notes"][0]
    out = simulate(net, x, T_LARGE).readout[:, -1, 0] / T_LARGE
    np.testing.assert_allclose(out, [0.9, 0.7, 0.0], atol=5e-3)


def test_max_pool_strategies_and_refusals():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, padding=1), nn.Flatten()).eval()
    with pytest.raises(UnsupportedOperationError, match="max_pool='spiking'"):
        convert(model, torch.rand(4, 1, 8, 8))
    with pytest.raises(UnsupportedOperationError, match="only for a non-negative input"):  # padding of a signed input
        convert(model, torch.rand(4, 1, 8, 8), max_pool="spiking")
    net = convert(model, torch.rand(4, 1, 8, 8), max_pool="avg")
    assert "replaced MaxPool2d" in net.metadata["conversion_notes"][0]
    with pytest.raises(ConfigError, match="max_pool"):
        convert(model, torch.rand(4, 1, 8, 8), max_pool="min")
    replaced = replace_max_pooling(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)))
    assert isinstance(replaced.get_submodule("2"), nn.AvgPool2d) and len(replaced.pooling_changes) == 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_cast_once(dtype):
    """The model is converted from a float32 copy: the same network as from model.float(), one note,
    and the caller's model keeps its dtype."""
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).eval()
    model = copy.deepcopy(reference).to(dtype).eval()
    x = torch.rand(20, 5)
    net = convert(model, x)
    notes = net.metadata["conversion_notes"]
    assert len(notes) == 1 and str(dtype).replace("torch.", "") in notes[0] and "float32" in notes[0]
    assert next(model.parameters()).dtype == dtype
    expected = convert(copy.deepcopy(model).float(), x)
    for got, want in zip(net.projections, expected.projections, strict=True):
        np.testing.assert_array_equal(got.ops[0].weight, want.ops[0].weight)


def test_delayed_readout_hand_values():
    readout = np.array([[[1.0, 0.0], [1.0, 3.0], [4.0, 3.0], [4.0, 4.0]]])  # O(1) .. O(4)
    np.testing.assert_array_equal(delayed_readout(readout, 2), [[[1, 0], [1, 3], [3, 0], [3, 1]]])
    np.testing.assert_array_equal(delayed_readout(readout, 0), readout)
    # argmax(O(4) - O(k)) for k = 0..3: [4, 4] (tie: class 0), [3, 4], [3, 1], [0, 1]
    np.testing.assert_array_equal(agreement_by_start(readout, np.array([1])), [0.0, 1.0, 0.0, 1.0])


def test_delayed_readout_in_the_network_and_the_backend():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(64, 4)
    plain = convert(model, x)
    delayed = convert(model, x, readout_start=5)
    assert delayed.metadata["readout_start"] == 5 and plain.metadata["readout_start"] == 0
    a, b = simulate(plain, x, 20), simulate(delayed, x, 20)
    np.testing.assert_allclose(b.readout, delayed_readout(a.readout, 5), atol=1e-5)
    assert b.metadata["readout_start"] == 5
    with pytest.raises(ConfigError, match="needs T"):
        convert(model, x, readout_start="auto")
    auto = convert(model, x, readout_start="auto", T=16, choice_items=40)
    choice = auto.metadata["readout_start_choice"]
    assert choice["items"] == 40 and 0 <= auto.metadata["readout_start"] < 16
    assert choice["agreement"] >= choice["agreement_without"]
    from neurodeploy.backends import ExitPolicy

    with pytest.raises(Exception, match="delayed readout"):
        get_backend("gpu", device="cpu").run(delayed, x, torch.zeros(64, dtype=torch.long),
                                             RunOptions(T=8, progress=False, exit_policy=ExitPolicy(8.0, 0.0)))


def test_new_op_kinds_round_trip_and_lower_to_synapses(tmp_path):
    """Conv1d, AvgPool1d and ChannelSlice projections survive save/load and the PyNN lowering's explicit
    synapse lists compute the same currents as the op chains."""
    torch.manual_seed(0)
    model = _Audio().eval()
    x = torch.rand(16, 2, 12)
    net = convert(model, x)
    kinds = {op.kind for p in net.projections for op in p.ops}
    assert {"conv1d", "avgpool1d", "channel_slice"} <= kinds
    loaded = load_network(save_network(net, tmp_path / "net.zip"))
    for got, want in zip(loaded.projections, net.projections, strict=True):
        assert [op.params() for op in got.ops] == [op.params() for op in want.ops]
    lowered = lower_network(loaded)
    lowered_projections = [p for p in loaded.projections if loaded.populations[p.source].role != "input"]
    for projection, synapses in zip(lowered_projections, lowered.synapses, strict=True):
        source = loaded.populations[projection.source]
        spikes = torch.rand(1, *source.shape, dtype=torch.float64)
        amplitude = np.full(source.size, float(source.neuron.threshold))
        current = np.zeros(int(np.prod(compile_chain(projection.ops)(spikes.float()).shape[1:])))
        np.add.at(current, synapses.post, synapses.weight * spikes.reshape(-1).numpy()[synapses.pre])
        expected = compile_chain(projection.ops, dtype=torch.float64)(spikes * torch.as_tensor(amplitude).reshape(
            spikes.shape)).reshape(-1).numpy()
        np.testing.assert_allclose(current, expected, rtol=1e-5, atol=1e-6)


# --- SNN at large T against its ANN --------------------------------------------------------------------


class _GlobalMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 8, 3, stride=2)
        self.fc = nn.Linear(8 + 8, 4)

    def forward(self, x):
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(torch.cat([h.mean((2, 3)), h.sum((-1, -2)) / 9], 1))


class _Audio(nn.Module):
    """Keyword-spotting style: Conv1d stem with batch norm, pooling, a strided Conv1d, two branches
    concatenated along channels, 1-D adaptive pooling and a temporal mean."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv1d(2, 6, 5, padding=2), nn.BatchNorm1d(6)
        self.pool = nn.AvgPool1d(2)
        self.left, self.right = nn.Conv1d(6, 4, 3, padding="same"), nn.Conv1d(6, 3, 1)
        self.down = nn.Conv1d(7, 8, 3, stride=2, groups=1)
        self.fc = nn.Linear(8 + 8 * 2, 4)

    def forward(self, x):
        h = self.pool(F.relu(self.bn(self.stem(x))))
        h = F.relu(torch.cat([self.left(h), self.right(h)], 1))  # one population fed into two channel slices
        h = F.relu(self.down(h))
        return self.fc(torch.cat([h.mean(-1), torch.flatten(F.adaptive_avg_pool1d(F.avg_pool1d(h, 1), 2), 1)], 1))


class _DenseBlock(nn.Module):
    """DenseNet style: every layer sees the concatenation of all earlier ones."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.l1, self.l2 = nn.Conv2d(4, 3, 3, padding=1), nn.Conv2d(7, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = torch.cat([h, F.relu(self.l1(h))], 1)
        h = torch.cat([h, F.relu(self.l2(h))], 1)
        return self.fc(F.relu(self.bn(h)).mean((2, 3)))


class _Clipped(nn.Module):
    def __init__(self):
        super().__init__()
        self.f1, self.f2, self.f3, self.f4 = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.act = nn.ReLU6()

    def forward(self, x):
        h = self.act(self.f1(x) * 8)  # a good part saturates
        h = F.hardtanh(self.f2(h), 0.0, 1.0)
        return self.f4(self.f3(h).clamp(0, 0.5))


class _MaxPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)  # ResNet-stem style, after a ReLU
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        h = self.pool(F.relu(self.conv1(x)))
        h = F.relu(F.max_pool2d(self.conv2(h), 2))  # before the ReLU: a signed input
        return self.fc(torch.flatten(nn.functional.adaptive_max_pool2d(h, 1), 1))


class _MaxPool1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.fc = nn.Linear(4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.max_pool1d(F.relu(self.conv(x)), 3, 2), 1))


AGREEMENT = {
    "global_mean_sum": (_GlobalMean, (1, 8, 8), {}),
    "conv1d_pool1d_concat": (_Audio, (2, 12), {}),
    "densenet_concat": (_DenseBlock, (1, 6, 6), {}),
    "clipped_relus": (_Clipped, (6,), {}),
    "max_pool_spiking_2d": (_MaxPools, (1, 8, 8), {"max_pool": "spiking"}),
    "max_pool_spiking_1d": (_MaxPool1d, (2, 11), {"max_pool": "spiking"}),
    "float64_model": (lambda: _GlobalMean().double(), (1, 8, 8), {}),
    "bfloat16_model": (lambda: _DenseBlock().to(torch.bfloat16), (1, 6, 6), {}),
}


@pytest.mark.parametrize("name", sorted(AGREEMENT))
def test_snn_agrees_with_its_ann_at_large_T(name):
    factory, shape, kwargs = AGREEMENT[name]
    torch.manual_seed(3)
    model = factory().eval()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    x = torch.rand(200, *shape)
    with torch.no_grad():
        ann = copy.deepcopy(model).float()(x).numpy()
    net = convert(model, x, normalization="max", **kwargs)
    snn = simulate(net, x, T_LARGE).readout[:, -1] / T_LARGE
    agreement = (snn.argmax(1) == ann.argmax(1)).mean()
    assert agreement >= 0.99, f"{name}: agreement {agreement}, max error {np.abs(snn - ann).max()}"
    assert np.abs(snn - ann).max() < 0.03 * np.abs(ann).max()

