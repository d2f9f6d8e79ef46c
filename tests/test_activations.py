"""Activations no IF neuron computes stay refused, with an action that works: the refusal names
``replace_activations``, which swaps them for ReLU and removes squeeze-excitation gates, and following it
converts (never a second refusal of the same op)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.convert import convert, replace_activations
from neurodeploy.convert.activations import relu_model
from neurodeploy.data.datasets import Split
from neurodeploy.errors import UnsupportedOperationError


class _SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation: x * gate(fc2(act(fc1(mean(x)))))."""

    def __init__(self, channels, gate):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, 2, 1), nn.Conv2d(2, channels, 1)
        self.act, self.gate = nn.SiLU(), gate

    def forward(self, x):
        scale = self.gate(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return scale * x


class _MobileNetV3Like(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.hswish = nn.Hardswish()
        self.se = _SqueezeExcitation(4, nn.Hardsigmoid())
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.se2 = _SqueezeExcitation(4, nn.Sigmoid())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.se(self.hswish(self.bn(self.stem(x))))
        h = self.se2(F.gelu(self.conv(h)))
        return self.fc(F.silu(h).mean((2, 3)))


def test_relu_model_removes_gates_and_swaps_activations():
    """Each gate x * g(s) becomes x (its branch disappears); Hardswish, GELU, SiLU become ReLUs: the
    rewritten model computes the plain ReLU network."""
    torch.manual_seed(0)
    model = _MobileNetV3Like().eval()
    rewritten, changes = relu_model(model)
    assert sum("removed the gate" in c for c in changes) == 2
    assert sum("by ReLU" in c or "by F.relu" in c for c in changes) == 3  # hswish module, gelu, silu
    assert not any(isinstance(m, (nn.Sigmoid, nn.Hardsigmoid, nn.SiLU, nn.Hardswish)) for m in rewritten.modules())
    x = torch.rand(5, 1, 6, 6)
    with torch.no_grad():
        h = F.relu(model.bn(model.stem(x)))
        h = F.relu(model.conv(h))
        expected = model.fc(F.relu(h).mean((2, 3)))
        torch.testing.assert_close(rewritten(x), expected)


def test_refusal_names_the_action_and_following_it_converts():
    torch.manual_seed(0)
    model = _MobileNetV3Like().eval()
    x = torch.rand(64, 1, 6, 6)
    with pytest.raises(UnsupportedOperationError) as err:
        convert(model, x)
    message = str(err.value)
    assert "Hardswish" in message and "replace_activations" in message and len(message.splitlines()) == 1
    labels = torch.randint(0, 3, (64,))
    tuned = replace_activations(model, Split(x, labels), epochs=1)
    assert tuned.activation_changes and not tuned.training
    net = convert(tuned, x)
    assert net.output.shape == (3,)


@pytest.mark.parametrize("op", [nn.SiLU(), nn.GELU(), nn.Sigmoid(), nn.Tanh(), nn.LeakyReLU(), nn.Mish(), F.hardswish,
                                torch.sigmoid, lambda h: h.tanh()])
def test_every_swapped_activation_converts_after_the_action(op):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.op = nn.Linear(4, 5), nn.Linear(5, 2), op

        def forward(self, x):
            return self.b(self.op(self.a(x)))

    x = torch.rand(16, 4)
    with pytest.raises(UnsupportedOperationError, match="replace_activations"):
        convert(Net().eval(), x)
    convert(replace_activations(Net()), x)
