"""Everyday spellings that convert exactly (clamp(min=0), a final softmax, input normalization inside
forward or as a Normalize module), and every refusal of the converter's table: specific, with an action."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import simulate

from neurodeploy.convert import convert
from neurodeploy.convert.refusals import REFUSALS, SUPPORTED
from neurodeploy.errors import UnsupportedOperationError
from neurodeploy.ir.torch_ops import compile_chain

T = 1000
N = 500
DOCS = Path(__file__).resolve().parents[1] / "docs" / "converter.md"


def _train(model: nn.Module, x: torch.Tensor, classes: int = 4, steps: int = 60) -> nn.Module:
    """Fits ``model`` briefly to the labels of a random linear teacher, so that most items have a clear
    argmax (an untrained net has many near ties). Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(0)
    flat = x.flatten(1) - x.flatten(1).mean(0)
    labels = (flat @ torch.randn(flat.shape[1], classes, generator=generator)).argmax(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
    return model.eval()


def _agreement(model: nn.Module, x: torch.Tensor):
    """Converts ``model`` (max normalization), simulates it for T steps on ``x`` and returns the
    network, the ANN output ``[N, K]``, the SNN output O(T)/T ``[N, K]`` and the argmax agreement."""
    with torch.no_grad():
        ann = model(x).numpy()
    net = convert(model, x, normalization="max")
    snn = simulate(net, x, T).readout[:, -1] / T
    return net, ann, snn, float((snn.argmax(1) == ann.argmax(1)).mean())


class _Dense(nn.Module):
    """12 -> 32 -> 4 with ``activation`` (the spelling under test) between the layers."""

    def __init__(self, activation):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 32), nn.Linear(32, 4)
        self.activation = activation

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


RELU_SPELLINGS = {
    "x.clamp(min=0)": lambda h: h.clamp(min=0),
    "x.clamp(0)": lambda h: h.clamp(0),
    "torch.clamp(x, min=0)": lambda h: torch.clamp(h, min=0),
    "x.clamp_min(0)": lambda h: h.clamp_min(0),
    "torch.clamp_min(x, 0)": lambda h: torch.clamp_min(h, 0),
    "F.threshold(x, 0, 0)": lambda h: F.threshold(h, 0.0, 0.0),
    "nn.Threshold(0, 0)": nn.Threshold(0.0, 0.0),
}


@pytest.mark.parametrize("spelling", sorted(RELU_SPELLINGS))
def test_relu_spellings_convert(spelling):
    torch.manual_seed(0)
    x = torch.rand(N, 12)
    model = _train(_Dense(RELU_SPELLINGS[spelling]), x)
    net, ann, snn, agreement = _agreement(model, x)
    assert [p.role for p in net.populations.values()] == ["input", "hidden", "output"]
    assert np.abs(snn - ann).max() < 0.02 * np.abs(ann).max()
    assert agreement >= 0.99, f"{spelling}: agreement {agreement}"


class _WithSoftmax(nn.Module):
    def __init__(self, final):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4))
        self.final = final

    def forward(self, x):
        return self.final(self.body(x))


SOFTMAX_SPELLINGS = {
    "F.log_softmax(x, dim=1)": (lambda z: F.log_softmax(z, dim=1), "log_softmax"),
    "F.softmax(x, 1)": (lambda z: F.softmax(z, 1), "softmax"),
    "torch.softmax(x, -1)": (lambda z: torch.softmax(z, -1), "softmax"),
    "x.log_softmax(-1)": (lambda z: z.log_softmax(-1), "log_softmax"),
    "nn.LogSoftmax(dim=1)": (nn.LogSoftmax(dim=1), "LogSoftmax"),
    "nn.Softmax(dim=-1)": (nn.Softmax(dim=-1), "Softmax"),
}


@pytest.mark.parametrize("spelling", sorted(SOFTMAX_SPELLINGS))
def test_final_softmax_is_dropped_once_and_predictions_agree(spelling):
    final, name = SOFTMAX_SPELLINGS[spelling]
    torch.manual_seed(0)
    x = torch.rand(N, 12)
    model = _train(_WithSoftmax(final), x)
    net, ann, snn, agreement = _agreement(model, x)
    (note,) = net.metadata["conversion_notes"]
    assert f"dropped the final {name} " in note
    with torch.no_grad():
        logits = model.body(x).numpy()
    assert np.abs(snn - logits).max() < 0.02 * np.abs(logits).max()  # the output reads out the logits
    assert agreement >= 0.99, f"{spelling}: agreement {agreement}"


class Normalize(nn.Module):
    """What torchvision.transforms.Normalize does to a tensor: ``(x - mean) / std`` per channel."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - torch.as_tensor(self.mean).view(-1, 1, 1)) / torch.as_tensor(self.std).view(-1, 1, 1)


class _MnistStyle(nn.Module):
    """``(x - 0.1307) / 0.3081`` inside forward, then a zero-padded convolution."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 4 * 4, 4)

    def forward(self, x):
        x = (x - 0.1307) / 0.3081
        return self.fc(torch.flatten(F.avg_pool2d(F.relu(self.conv(x)), 2), 1))


class _Buffers(nn.Module):
    """Per-channel mean and std buffers reshaped in forward, ``x.sub(m).div(s)``, and a residual ``a - b``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]))
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 4)

    def forward(self, x):
        x = x.sub(self.mean.view(1, -1, 1, 1)).div(self.std.view(1, -1, 1, 1))
        h = F.relu(self.conv1(x)) - 0.5 * F.relu(self.conv2(x))
        return self.fc(F.avg_pool2d(h, 2).flatten(1))


NORMALIZED = {
    "(x - 0.1307) / 0.3081 in forward": (_MnistStyle, (1, 8, 8)),
    "Normalize module first in Sequential": (lambda: nn.Sequential(
        Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)), nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 4)), (3, 6, 6)),
    "buffers x.sub(m).div(s) and a - b": (_Buffers, (3, 6, 6)),
}


@pytest.mark.parametrize("spelling", sorted(NORMALIZED))
def test_input_normalization_folds_into_the_first_layer(spelling):
    factory, shape = NORMALIZED[spelling]
    torch.manual_seed(0)
    x = torch.rand(N, *shape)
    model = _train(factory(), x)
    net, ann, snn, agreement = _agreement(model, x)
    assert all(op.kind != "scale" for p in net.projections for op in p.ops)  # folded into the weights
    assert np.abs(snn - ann).max() < 0.02 * np.abs(ann).max()
    assert agreement >= 0.99, f"{spelling}: agreement {agreement}"


def test_input_normalization_fold_is_exact_at_padded_borders():
    """Zero padding of the normalized input is the raw value ``mean`` at the border, not 0: the shift
    must become a bias map that differs at the borders. With lambda = max, the first population's
    W' x + b' times lambda equals the ANN pre-activation to float precision, borders included."""
    torch.manual_seed(0)
    normalize = Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    model = nn.Sequential(normalize, nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(5 * 6 * 6, 3)).eval()
    x = torch.rand(32, 3, 6, 6)
    net = convert(model, x, normalization="max")
    hidden = next(p for p in net.populations.values() if p.role == "hidden")
    (projection,) = net.incoming(hidden.name)
    assert hidden.bias.shape == hidden.shape and not np.allclose(hidden.bias[:, 0, 0], hidden.bias[:, 2, 2])
    with torch.no_grad():
        pre = model[1](normalize(x)).numpy()
        folded = compile_chain(projection.ops)(x).numpy() + hidden.bias
    np.testing.assert_allclose(folded * hidden.metadata["lambda_mean"], pre, rtol=1e-5, atol=1e-5)


# --- refusals ---------------------------------------------------------------------------------------

LIN, CONV = (4,), (1, 6, 6)


class _Then(nn.Module):
    """A layer (Linear for (4,) inputs, Conv2d for (1, 6, 6)) followed by ``op``, the op under test."""

    def __init__(self, op, shape):
        super().__init__()
        self.layer = nn.Conv2d(1, 2, 3, padding=1) if shape == CONV else nn.Linear(4, 4)
        self.op = op

    def forward(self, x):
        return self.op(self.layer(x))


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[0]


class _Parameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3, 4))

    def forward(self, x):
        return F.linear(x, self.weight)


class _TwoShapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.a(x) + self.b(x)


class _TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


class _ControlFlow(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def _then(op, shape=LIN):
    return (lambda: _Then(op, shape)), shape


#: table key -> (model factory, input shape without batch); conversion "qcfs" for the last entry
TRIGGERS = {
    "max pooling without a strategy": _then(nn.MaxPool2d(2), CONV),
    "max pooling that its strategy cannot express": _then(nn.MaxPool2d(2, ceil_mode=True), CONV),
    "nn.Sigmoid": _then(nn.Sigmoid()),
    "nn.Tanh": _then(nn.Tanh()),
    "nn.GELU": _then(nn.GELU()),
    "nn.SiLU": _then(nn.SiLU()),
    "nn.ELU": _then(nn.ELU()),
    "nn.Softplus": _then(nn.Softplus()),
    "nn.Hardswish": _then(nn.Hardswish()),
    "nn.Hardsigmoid": _then(nn.Hardsigmoid()),
    "nn.Mish": _then(nn.Mish()),
    "nn.LeakyReLU": _then(nn.LeakyReLU()),
    "nn.PReLU": _then(nn.PReLU()),
    "nn.ConvTranspose2d": _then(nn.ConvTranspose2d(2, 2, 2), CONV),
    "nn.LayerNorm": _then(nn.LayerNorm(4)),
    "nn.GroupNorm": _then(nn.GroupNorm(1, 2), CONV),
    "nn.InstanceNorm2d": _then(nn.InstanceNorm2d(2), CONV),
    "nn.RNNBase": _then(nn.LSTM(4, 4)),
    "nn.MultiheadAttention": (_Attention, (3, 4)),
    "torch.sigmoid": _then(torch.sigmoid),
    "Tensor.sigmoid": _then(lambda h: h.sigmoid()),
    "torch.tanh": _then(torch.tanh),
    "Tensor.tanh": _then(lambda h: h.tanh()),
    "F.gelu": _then(F.gelu),
    "F.silu": _then(F.silu),
    "F.elu": _then(F.elu),
    "F.softplus": _then(F.softplus),
    "F.hardswish": _then(F.hardswish),
    "F.hardsigmoid": _then(F.hardsigmoid),
    "F.leaky_relu": _then(F.leaky_relu),
    "F.conv_transpose2d": _then(lambda h: F.conv_transpose2d(h, torch.ones(2, 1, 2, 2)), CONV),
    "F.layer_norm": _then(lambda h: F.layer_norm(h, (4,))),
    "torch.matmul": _then(lambda h: torch.matmul(h, h)),
    "operator.matmul": _then(lambda h: h @ h),
    "clip other than a ReLU or a clipped ReLU": _then(lambda h: h.clamp(-1, 6)),
    "mean or sum over axes other than the spatial ones": _then(lambda h: h.mean(1), CONV),
    "concatenation along an axis other than the channels": _then(lambda h: torch.cat([h, h], 2), CONV),
    "softmax that is not the last op over the class axis": _then(lambda h: F.relu(F.softmax(h, 1))),
    "product of two activations": _then(lambda h: h * h),
    "division by an activation": _then(lambda h: 1 / h),
    "constant factor that is not scalar or per-channel": _then(lambda h: h * torch.rand(2, 6, 6), CONV),
    "constant that does not broadcast to the activation": _then(lambda h: h + torch.ones(3, 4)),
    "parameter or buffer used directly": (_Parameter, (4,)),
    "batch size used in arithmetic": _then(lambda h: h.view(h.size(0) * 1, -1)),
    "rearrangement that mixes the batch axis": _then(lambda h: h.view(2, -1)),
    "padding other than with zeros": _then(lambda h: F.pad(h, (1, 1), value=1.0)),
    "adaptive max pooling to a size that does not divide the input": _then(nn.AdaptiveMaxPool2d(4), CONV),
    "residual add of different shapes": (_TwoShapes, (4,)),
    "convolution padding_mode other than 'zeros'": _then(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), CONV),
    "asymmetric 'same' padding": _then(nn.Conv2d(2, 2, 2, padding="same"), CONV),
    "batch norm without running statistics": _then(nn.BatchNorm1d(4, track_running_stats=False)),
    "second model input": (_TwoInputs, (4,)),
    "model output that is not one tensor": _then(lambda h: (h, h)),
    "data-dependent control flow": (_ControlFlow, (4,)),
    "model parameters that are not real floating point": (lambda: nn.Sequential(nn.Linear(4, 2)).to(torch.complex64),
                                                           (4,)),
    "plain ReLU with conversion 'qcfs' or 'qffs'": (
        lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), (4,)),
}
ACTIONS = ("replace", "use ", "retrain", "remove", "return", "wrap", "fine-tune", "make")


@pytest.mark.parametrize("key", sorted(REFUSALS))
def test_every_refusal_names_the_op_the_node_and_an_action(key):
    factory, shape = TRIGGERS[key]
    conversion = "qcfs" if "qcfs" in key else "rate"
    max_pool = "spiking" if "its strategy" in key or key.startswith("adaptive max") else None
    with pytest.raises(UnsupportedOperationError) as err:
        convert(factory().eval(), torch.rand(4, *shape), conversion=conversion, max_pool=max_pool)
    message, advice = str(err.value), REFUSALS[key]
    assert advice in message and SUPPORTED not in message
    assert any(action in advice for action in ACTIONS), advice
    if key not in ("data-dependent control flow", "model parameters that are not real floating point"):
        assert "graph node" in message  # those two are refused before there is a graph
    if " " not in key and key != "nn.RNNBase":  # an op named by the table: its name is in the message
        assert key.rsplit(".", 1)[1] in message


def test_unlisted_ops_still_name_the_node():
    class Unlisted(nn.Module):
        def forward(self, x):
            return torch.exp(x)

    with pytest.raises(UnsupportedOperationError, match=r"torch.exp \(graph node 'exp'\): rewrite it"):
        convert(Unlisted(), torch.rand(4, 3))


def test_docs_list_every_refusal():
    """docs/converter.md's table of refused operations is the converter's table, row for row."""
    text = DOCS.read_text().split("## Refused operations", 1)[1]
    rows = [line[2:-2].split(" | ") for line in text.splitlines() if line.startswith("| `")]
    assert {key.strip("`"): advice for key, advice in rows} == REFUSALS
    assert len(rows) == len(REFUSALS)


class _Block(nn.Module):
    """A residual block whose one ReLU module is called twice (torchvision's BasicBlock does the same)."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1, self.relu, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), \
            nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.relu(self.c2(self.relu(self.bn1(self.c1(x)))) + x)


class _Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.down, self.layer1 = nn.Conv2d(1, 4, 3, padding=1), nn.Sequential(_Block())
        self.features = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.output, self.fc = nn.ReLU(), nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        x = self.layer1(F.relu(self.down(x)))
        return self.fc(self.output(self.features(x)).flatten(1))


def test_population_names_follow_the_users_modules():
    """An activation module's population carries its module path, a functional ReLU the layer it activates
    (through its normalization); a module called twice gets unique names; a Sequential's bare index keeps the
    graph's name; "output" stays the readout's even where a module is called so."""
    net = convert(_Named().eval(), torch.rand(16, 1, 8, 8))
    assert list(net.topological_order()) == ["input", "down", "layer1.0.relu", "layer1.0.relu_1", "output_1",
                                             "output"]
    assert net.populations["output"].role == "output" and net.populations["output_1"].role == "hidden"
    sequential = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    assert list(convert(sequential, torch.rand(8, 1, 8, 8)).topological_order()) == ["input", "relu_2", "output"]
    functional = nn.Sequential(nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8)), nn.ReLU(), nn.Linear(8, 3))
    assert "relu_1" in convert(functional.eval(), torch.rand(8, 64)).populations  # module path "1": indices only


def test_an_exported_program_gets_the_names_of_its_class():
    """The same model given as a torch.export program: each rebuilt module sits at its user path, so the
    populations are named as from the class."""
    from neurodeploy.convert.exported import module_from_exported

    torch.manual_seed(0)
    model, x = _Named().eval(), torch.rand(16, 1, 8, 8)
    rebuilt = module_from_exported(torch.export.export(model, (x[:1],)))
    assert list(convert(rebuilt, x).topological_order()) == list(convert(model, x).topological_order())
    torch.testing.assert_close(rebuilt(x), model(x))
