"""Every supported op: the converted SNN's O(T)/T approaches the ANN output; refused ops explain why."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import simulate

from neurodeploy.convert import convert
from neurodeploy.errors import UnsupportedOperationError

T = 2000


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.skip = nn.Conv2d(2, 4, 1)
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.conv2(h) + self.skip(x))
        y = y + F.relu(h)  # identity shortcut between populations
        return self.head(torch.flatten(y, 1))


class FunctionalSpellings(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = self.drop(F.relu(self.fc1(x)))
        x = self.fc2(x).relu()
        x = F.dropout(x, 0.2, self.training)
        return self.fc3(x.reshape(-1, 16))


class InplaceRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(10, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.fc3(F.relu_(self.fc2(self.act(self.fc1(x)))))


MODELS = {
    "linear": (lambda: nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 3)), (10,)),
    "batchnorm1d": (lambda: nn.Sequential(nn.Linear(10, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3)), (10,)),
    "conv_stride_pad_dilation": (lambda: nn.Sequential(
        nn.Conv2d(2, 6, 3, stride=2, padding=2, dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3)),
        (2, 8, 8)),
    "conv_groups_same_bn2d": (lambda: nn.Sequential(
        nn.Conv2d(4, 8, 3, padding="same", groups=2), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 5 * 5, 3)), (4, 5, 5)),
    "avgpool": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3)),
        (1, 6, 6)),
    "avgpool_overlapping": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, stride=1), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3)), (1, 6, 6)),
    "adaptive_avgpool": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)),
        (1, 6, 6)),
    "residual_add": (Residual, (2, 6, 6)),
    "functional_relu_view_reshape_dropout": (FunctionalSpellings, (3, 4)),
    "inplace_relu": (InplaceRelu, (10,)),
    "torch_flatten_and_pool_functions": (lambda: _Functional(), (1, 6, 6)),
}


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 3 * 3, 2)

    def forward(self, x):
        x = F.avg_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))


def _randomize_bn(model):
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_snn_matches_ann(name):
    factory, shape = MODELS[name]
    torch.manual_seed(1)
    model = factory().eval()
    _randomize_bn(model)
    x = torch.rand(64, *shape)
    with torch.no_grad():
        ann = model(x).numpy()
    net = convert(model, x, normalization="max")
    result = simulate(net, x, T)
    snn = result.readout[:, -1] / T
    scale = np.abs(ann).max()
    assert np.abs(snn - ann).max() < 0.02 * scale, f"{name}: max error {np.abs(snn - ann).max()} vs {scale}"
    agreement = (snn.argmax(1) == ann.argmax(1)).mean()
    assert agreement >= 0.95


def test_neuron_granularity_matches_ann():
    torch.manual_seed(0)
    model = MODELS["conv_groups_same_bn2d"][0]().eval()
    _randomize_bn(model)
    x = torch.rand(64, 4, 5, 5)
    net = convert(model, x, normalization="max", granularity="neuron")
    with torch.no_grad():
        ann = model(x).numpy()
    snn = simulate(net, x, T).readout[:, -1] / T
    assert np.abs(snn - ann).max() < 0.02 * np.abs(ann).max()


def test_batchnorm_folding_is_exact():
    """One hidden layer with a per-neuron threshold of 1 and lambda = max: W' x + b' equals the ANN
    pre-activation divided by lambda, so folding must be exact to float precision."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 2)).eval()
    _randomize_bn(model)
    x = torch.rand(32, 5)
    net = convert(model, x, normalization="max")
    hidden = next(p for p in net.populations.values() if p.role == "hidden")
    (proj,) = net.incoming(hidden.name)
    lam = hidden.metadata["lambda_mean"]
    with torch.no_grad():
        pre = model[1](model[0](x)).numpy()
    folded = x.numpy() @ proj.ops[0].weight.T + hidden.bias
    np.testing.assert_allclose(folded * lam, pre, rtol=1e-5, atol=1e-5)


REFUSED = [
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)), (1, 6, 6), "MaxPool2d",
     "max_pool='avg'"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()), (4,), "Sigmoid", "nn.ReLU"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.GELU()), (4,), "GELU", "nn.ReLU"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Tanh()), (4,), "Tanh", "nn.ReLU"),
]


@pytest.mark.parametrize("factory, shape, op, advice", REFUSED)
def test_refused_modules_name_the_op_and_the_fix(factory, shape, op, advice):
    with pytest.raises(UnsupportedOperationError) as err:
        convert(factory().eval(), torch.rand(4, *shape))
    assert op in str(err.value) and advice in str(err.value) and "graph node" in str(err.value)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[0]


class _Cat(nn.Module):
    def forward(self, x):
        return torch.cat([F.relu(x), F.relu(x)], 0)  # along the batch axis


class _Product(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * self.fc(x)


class _ControlFlow(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


@pytest.mark.parametrize("model, shape, needle", [
    (_Attention(), (3, 4), "attention"),
    (_Cat(), (4,), "concatenation"),
    (_Product(), (4,), "products"),
    (_ControlFlow(), (4,), "torch.fx could not trace"),
])
def test_refused_functions_and_untraceable_models(model, shape, needle):
    with pytest.raises(UnsupportedOperationError, match=needle):
        convert(model.eval(), torch.rand(4, *shape))
