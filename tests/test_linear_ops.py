"""Every op that is linear in its input converts exactly: adaptive average pooling to any size, average
pooling with ceil_mode / count_include_pad / divisor_override, max pooling with ceil_mode in both
strategies, zero padding, channel shuffle and other static view / reshape / transpose / permute / flatten
/ squeeze / indexing / slicing sequences, Dropout / Identity; in torch.export programs the in-place ATen
ops mean their out-of-place ops, and the exported program gives the same IR as convert(). Each op: the
IR's linear map against the torch op (float64, to rounding), and the SNN at large T against its ANN."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import simulate

from neurodeploy.convert import convert
from neurodeploy.convert.exported import module_from_exported
from neurodeploy.convert.fx_graph import FxConverter
from neurodeploy.convert.linear_maps import adaptive_matrix, average_matrix
from neurodeploy.errors import UnsupportedOperationError
from neurodeploy.ir import load_network, save_network
from neurodeploy.ir.connectivity import projection_fan
from neurodeploy.ir.ops import Dense, Gather, SpatialLinear
from neurodeploy.ir.torch_ops import compile_chain
from neurodeploy.passes.synapse_matrix import synapse_matrix

T_LARGE = 500


class _Op(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _shuffle(x, groups=2):
    """torchvision's channel_shuffle: integer arithmetic on static sizes, view, transpose, view."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


def identity_at_inference(x, training: bool = False):
    """As torchvision's stochastic_depth: kept as one call by torch.fx, the identity unless training."""
    return x * 2 if training else x


torch.fx.wrap("identity_at_inference")


#: name -> (module, input shape): each is linear, so the output population's input is the op itself
LINEAR = {
    "adaptive_avg_3_to_7": (nn.AdaptiveAvgPool2d(7), (2, 3, 3)),
    "adaptive_avg_5x7_to_3x2": (nn.AdaptiveAvgPool2d((3, 2)), (2, 5, 7)),
    "adaptive_avg_none": (nn.AdaptiveAvgPool2d((None, 3)), (2, 4, 5)),
    "adaptive_avg_1d_7_to_4": (nn.AdaptiveAvgPool1d(4), (2, 7)),
    "avg_ceil": (nn.AvgPool2d(3, 2, ceil_mode=True), (2, 8, 8)),
    "avg_ceil_pad_not_counted": (nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 8, 9)),
    "avg_pad_not_counted": (nn.AvgPool2d(3, 1, 1, count_include_pad=False), (2, 5, 5)),
    "avg_divisor_override": (nn.AvgPool2d(2, 2, divisor_override=3), (2, 6, 6)),
    "avg_function_ceil": (_Op(lambda x: F.avg_pool2d(x, 2, ceil_mode=True)), (2, 5, 5)),
    "avg_1d_ceil": (nn.AvgPool1d(3, 2, ceil_mode=True), (2, 8)),
    "pad": (_Op(lambda x: F.pad(x, (1, 2, 0, 3))), (2, 4, 4)),
    "zero_pad_module": (nn.ZeroPad2d((1, 0, 2, 1)), (2, 4, 4)),
    "channel_shuffle": (_Op(_shuffle), (4, 3, 3)),
    "slice": (_Op(lambda x: x[:, 1:, ::2]), (3, 4, 4)),
    "index": (_Op(lambda x: x[:, 0]), (3, 4, 4)),
    "ellipsis_index": (_Op(lambda x: x[..., 1:3]), (3, 4, 4)),
    "permute_flatten": (_Op(lambda x: x.permute(0, 2, 3, 1).flatten(1)), (3, 2, 2)),
    "flatten_last_two": (_Op(lambda x: torch.flatten(x, 2)), (3, 2, 2)),
    "chunk_swap": (_Op(lambda x: torch.cat(x.chunk(2, dim=1)[::-1], 1)), (4, 2, 2)),
    "split_narrow": (_Op(lambda x: torch.split(x, [1, 3], dim=1)[1].narrow(2, 1, 2)), (4, 3, 3)),
    "unsqueeze_squeeze": (_Op(lambda x: x.unsqueeze(2).squeeze(2)), (4, 2, 2)),
    "reshape_shape": (_Op(lambda x: x.reshape(x.shape[0], x.shape[1] * 2, -1)), (4, 2, 2)),
    "ndim_and_size": (_Op(lambda x: x.flatten(x.ndim - 2).transpose(1, x.dim() - 2)[:, : x.size(-1) // 2]),
                      (4, 2, 3)),
    "dropout_identity": (nn.Sequential(nn.Dropout(0.5), nn.Identity(), nn.Dropout2d()), (2, 3, 3)),
    "identity_function": (_Op(lambda x: identity_at_inference(x, False)), (2, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_linear_op_is_its_torch_op(name):
    """The IR's map into the output population (float64) equals the torch op to rounding."""
    module, shape = LINEAR[name]
    net = FxConverter(module.eval(), shape).run()
    x = torch.randn(3, *shape, dtype=torch.float64)
    got = sum(compile_chain(p.ops, dtype=torch.float64)(x) for p in net.incoming("output"))
    want = module.double()(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_pooling_matrices_by_hand():
    """adaptive_avg_pool of 3 positions to 2 averages [0, 2) and [1, 3); avg_pool(3, 2, ceil_mode) of 4
    positions has windows [0, 3) and [2, 4) (the last one partial: divided by its 2 positions)."""
    np.testing.assert_allclose(adaptive_matrix(3, 2), [[0.5, 0.5, 0], [0, 0.5, 0.5]])
    np.testing.assert_allclose(adaptive_matrix(2, 3), [[1, 0], [0.5, 0.5], [0, 1]])
    t = 1 / 3
    np.testing.assert_allclose(average_matrix(4, 3, 2, 0, True, True), [[t, t, t, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(average_matrix(4, 3, 2, 1, False, True), [[t, t, 0, 0], [0, t, t, t]])
    np.testing.assert_allclose(average_matrix(4, 3, 2, 1, False, False), [[0.5, 0.5, 0, 0], [0, t, t, t]])


def test_rearrangements_that_mix_the_batch_axis_are_refused():
    for fn in (lambda x: x.view(2, -1), lambda x: x[0], lambda x: x.transpose(0, 1), lambda x: x.reshape(-1)):
        with pytest.raises(UnsupportedOperationError, match="after the batch axis"):
            FxConverter(_Op(fn), (4, 2, 2)).run()
    with pytest.raises(UnsupportedOperationError, match="zero padding"):
        FxConverter(_Op(lambda x: F.pad(x, (1, 1), mode="replicate")), (4, 2, 2)).run()


def test_new_ops_round_trip_and_count_synapses(tmp_path):
    """SpatialLinear and Gather ops are saved and loaded exactly; their synapse matrices and fan maps are
    the non-zeros of the composed map."""
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True), _Op(_shuffle),
                          _Op(lambda x: F.pad(x, (1, 0, 0, 1))), nn.Conv2d(4, 3, 1)).eval()
    x = torch.rand(20, 2, 7, 7)
    net = convert(model, x, normalization="max")
    (projection,) = net.incoming("output")
    assert {type(op) for op in projection.ops} >= {SpatialLinear, Gather}
    save_network(net, tmp_path / "net.zip")
    loaded = load_network(tmp_path / "net.zip")
    for a, b in zip(loaded.incoming("output")[0].ops, projection.ops, strict=True):
        assert type(a) is type(b) and all(np.array_equal(v, b.arrays()[k]) for k, v in a.arrays().items())
    source = net.populations[projection.source].shape
    matrix = synapse_matrix(projection, source).toarray()
    n = int(np.prod(source))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *source)
    dense = compile_chain(projection.ops, dtype=torch.float64)(basis).reshape(n, -1).T.numpy()
    np.testing.assert_allclose(matrix, dense, atol=1e-6)
    fan_out, fan_in = projection_fan(projection, source)
    np.testing.assert_array_equal(fan_out.reshape(-1), (dense != 0).sum(0))
    np.testing.assert_array_equal(fan_in.reshape(-1), (dense != 0).sum(1))


class _ShuffleNetLike(nn.Module):
    """A padded stem, ceil-mode max pooling, a shufflenet unit (chunk, branch, concat, shuffle), adaptive
    pooling to a larger size and a VGG-style classifier on it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1),
                                    nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(), nn.Linear(8 * 16, 16),
                                  nn.ReLU6(inplace=True), nn.Linear(16, 4))

    def forward(self, x):
        h = F.relu(self.stem(F.pad(x, (1, 1, 1, 1))))
        h = self.pool(h)
        left, right = h.chunk(2, dim=1)
        h = _shuffle(torch.cat((left, self.branch(right)), 1))
        return self.head(h[:, :, :-1, :-1])


class _AvgPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 3), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 3 * 3, 4)

    def forward(self, x):
        h = F.avg_pool2d(F.relu(self.conv1(x)), 3, 2, 1, ceil_mode=True, count_include_pad=False)
        h = F.relu(self.conv2(h))
        h = F.avg_pool2d(h, 2, divisor_override=3)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 3), 1))


AGREEMENT = {
    "shufflenet_like_spiking": (_ShuffleNetLike, (1, 9, 9), {"max_pool": "spiking"}),
    "shufflenet_like_avg": (_ShuffleNetLike, (1, 9, 9), {"max_pool": "avg"}),
    "avg_pools": (_AvgPools, (1, 11, 11), {}),
}


@pytest.mark.parametrize("name", sorted(AGREEMENT))
def test_snn_agrees_with_its_ann_at_large_T(name):
    factory, shape, kwargs = AGREEMENT[name]
    torch.manual_seed(3)
    model = factory().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    if kwargs.get("max_pool") == "avg":  # the ANN the SNN approaches is the rewritten one
        from neurodeploy.convert.max_pool import average_pooling_model
        reference = average_pooling_model(model)[0]
    else:
        reference = model
    x = torch.rand(200, *shape)
    with torch.no_grad():
        ann = copy.deepcopy(reference)(x).numpy()
    net = convert(model, x, normalization="max", **kwargs)
    snn = simulate(net, x, T_LARGE).readout[:, -1] / T_LARGE
    agreement = (snn.argmax(1) == ann.argmax(1)).mean()
    assert agreement >= 0.99, f"{name}: agreement {agreement}, max error {np.abs(snn - ann).max()}"
    assert np.abs(snn - ann).max() < 0.03 * np.abs(ann).max()


def test_enlarging_maps_before_a_dense_layer_are_absorbed():
    """VGG's classifier after adaptive pooling from 1 x 1 to 7 x 7: the dense layer takes the 1 x 1 map
    directly, with each input's 49 weight columns summed, the same map as before."""
    model = nn.Sequential(nn.Conv2d(1, 3, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                          nn.Linear(3 * 49, 5)).eval()
    net = FxConverter(model, (1, 4, 4)).run()
    (projection,) = net.incoming("output")
    (dense,) = [op for op in projection.ops if isinstance(op, Dense)]
    assert dense.weight.shape == (5, 3)
    expected = model[4].weight.detach().double().reshape(5, 3, 49).sum(2).numpy()
    np.testing.assert_allclose(dense.weight, expected, rtol=1e-12)


# --- torch.export programs ----------------------------------------------------------------------------


def _canonical(net):
    """A network's structure and arrays in topological order, without population names (the two graphs
    name their nodes differently)."""
    order = {name: i for i, name in enumerate(net.topological_order())}
    populations = [(p.role, tuple(p.shape), None if p.bias is None else np.asarray(p.bias),
                    p.neuron.threshold if p.neuron is not None else None)
                   for p in (net.populations[n] for n in net.topological_order())]
    projections = sorted(((order[p.source], order[p.target], [(op.kind, op.params(), op.arrays()) for op in p.ops])
                          for p in net.projections), key=lambda e: (e[0], e[1], str(e[2])))
    return populations, projections


def assert_same_network(a, b):
    pops_a, projs_a = _canonical(a)
    pops_b, projs_b = _canonical(b)
    assert len(pops_a) == len(pops_b) and len(projs_a) == len(projs_b)
    for pa, pb in zip(pops_a, pops_b, strict=True):
        assert pa[:2] == pb[:2]
        for va, vb in zip(pa[2:], pb[2:], strict=True):
            if va is None or vb is None:
                assert va is None and vb is None
            else:
                np.testing.assert_allclose(np.asarray(va, np.float64), np.asarray(vb, np.float64), rtol=1e-5,
                                           atol=1e-6)
    for (sa, ta, opsa), (sb, tb, opsb) in zip(projs_a, projs_b, strict=True):
        assert (sa, ta) == (sb, tb) and [o[:2] for o in opsa] == [o[:2] for o in opsb]
        for (_, _, arrays_a), (_, _, arrays_b) in zip(opsa, opsb, strict=True):
            for key, value in arrays_a.items():
                np.testing.assert_allclose(value, arrays_b[key], rtol=1e-5, atol=1e-6)


def exported_twin(model, x, tmp_path):
    """``model`` through the CLI's path: torch.export.save, torch.export.load, module_from_exported."""
    torch.export.save(torch.export.export(model, (x[:2],)), tmp_path / "model.pt2")
    return module_from_exported(torch.export.load(str(tmp_path / "model.pt2")))


class _InPlace(nn.Module):
    """MobileNetV2-style in-place activations and in-place residual add."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.act, self.relu = nn.ReLU6(inplace=True), nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.act(self.conv1(x))
        h2 = self.conv2(h)
        h2 += h
        return self.fc(self.relu(h2).mean((2, 3)))


@pytest.mark.parametrize("name", ["in_place", "shufflenet_like", "avg_pools"])
def test_exported_program_gives_the_same_ir_as_convert(name, tmp_path):
    factory, shape = {"in_place": (_InPlace, (1, 6, 6)), "shufflenet_like": (_ShuffleNetLike, (1, 9, 9)),
                      "avg_pools": (_AvgPools, (1, 11, 11))}[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.rand(40, *shape)
    max_pool = "avg" if name == "shufflenet_like" else None
    direct = convert(model, x, max_pool=max_pool)
    exported = convert(exported_twin(model, x, tmp_path), x, max_pool=max_pool)
    assert_same_network(direct, exported)


# --- torchvision architectures ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet1_0", "shufflenet_v2_x0_5", "mobilenet_v3_small"])
def test_torchvision_models_convert_after_the_named_action_and_export_alike(name, tmp_path):
    """torchvision's definitions, loaded without its compiled ops (``neurodeploy.train.torchvision_zoo``:
    when ``import torchvision`` fails next to the CPU build of PyTorch, the two op schemas its Python
    registers fake kernels for are declared first; the models use no compiled op): each converts with the
    strategy its refusal names (``max_pool="avg"``: ceil-mode max pooling, channel shuffle) or after
    ``replace_activations`` (Hardswish, squeeze-excitation gates), and its torch.export program gives the
    same IR."""
    from neurodeploy.convert import replace_activations
    from neurodeploy.train.torchvision_zoo import torchvision_model

    model = torchvision_model(name)
    x = torch.rand(8, 3, 32, 32)
    with pytest.raises(UnsupportedOperationError) as err:
        convert(model, x)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "graph node" in message
    max_pool = None
    if "replace_activations" in message:
        model = replace_activations(model)
    else:
        assert "max_pool='avg'" in message
        max_pool = "avg"
    direct = convert(model, x, max_pool=max_pool)
    assert direct.output.shape == (10,)
    assert_same_network(direct, convert(exported_twin(model, x, tmp_path), x, max_pool=max_pool))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg11_bn", "vgg16", "mobilenet_v2", "mobilenet_v3_small",
                                  "efficientnet_b0", "densenet121", "squeezenet1_0", "googlenet",
                                  "shufflenet_v2_x0_5", "regnet_x_400mf", "alexnet"])
def test_every_zoo_model_exports_to_the_same_ir(name, tmp_path):
    """For each architecture of the table in docs/converter.md, after the action its refusal names (max
    pooling -> average pooling, activations -> ReLU), the IR of the torch.export program (the CLI's path)
    is the IR of the module: same populations, projections, weights and biases (the walk without the
    activation statistics, which are the same ANN's on both paths)."""
    from neurodeploy.convert.activations import relu_model
    from neurodeploy.convert.max_pool import average_pooling_model
    from neurodeploy.train.torchvision_zoo import torchvision_model

    size = 64 if name == "alexnet" else 32
    model = relu_model(average_pooling_model(torchvision_model(name))[0])[0].eval()
    x = torch.rand(2, 3, size, size)
    direct = FxConverter(model, (3, size, size)).run()
    exported = FxConverter(exported_twin(model, x, tmp_path), (3, size, size)).run()
    assert_same_network(direct, exported)
