"""Residual networks: the ResNet-20-style zoo model, QCFS at the residual join, the mixed-resolution
fine-tuning of QuantReLU, and the delayed readout chosen on calibration items."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import simulate

from neurodeploy.convert import convert
from neurodeploy.errors import ConfigError
from neurodeploy.train.quantized import QuantReLU, calibrate_steps, draw_resolution, quantize_activations
from neurodeploy.train.zoo import ResidualBlock, build, resnet20


def test_resnet20_has_three_stages_of_three_blocks_and_converts():
    model = resnet20()
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 9 and sum(isinstance(b.shortcut, nn.Sequential) for b in blocks) == 2
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert isinstance(build("resnet20", (1, 28, 28), 10, seed=0), nn.Sequential)
    net = convert(model.eval(), torch.rand(8, 1, 28, 28))
    hidden = [p for p in net.populations.values() if p.role == "hidden"]
    assert len(hidden) == 1 + 2 * 9
    joins = [p.name for p in hidden if len(net.incoming(p.name)) == 2]
    assert len(joins) == 9  # every block's output population adds its conv path and its shortcut


class _QuantBlock(nn.Module):
    """stem -> residual block with a strided 1x1 shortcut -> identity residual block -> head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.down, self.same = ResidualBlock(4, 6, 2), ResidualBlock(6, 6, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x):
        return self.head(self.same(self.down(self.stem(x))))


def _ramp(model: nn.Module) -> nn.Module:
    """``model`` with every QuantReLU's staircase replaced by the clipped ramp clip(x, 0, s Q)."""
    ramp = copy.deepcopy(model)
    for module in ramp.modules():
        if isinstance(module, QuantReLU):
            theta = float(module.step.detach().abs()) * module.levels
            module.forward = lambda x, theta=theta: torch.clamp(x, 0, theta)
    return ramp


def test_qcfs_residual_join_follows_the_method_and_tends_to_the_clipped_ramp():
    """The population after each '+' has theta = s Q of the QuantReLU after the addition, v0 = theta / 2,
    reset by subtraction, and receives its conv path and its shortcut; the SNN's large-T limit is the ANN
    with each staircase replaced by the clipped ramp (what QCFS computes for T >> Q)."""
    torch.manual_seed(0)
    model = quantize_activations(_QuantBlock(), 2)
    x = torch.rand(64, 1, 8, 8)
    calibrate_steps(model, x)
    model.eval()
    net = convert(model, x, conversion="qcfs")
    for block in ("down", "same"):
        quantizer = getattr(model, block).relu2
        join = next(p for p in net.populations.values() if p.metadata.get("fx_node") == f"{block}_relu2")
        assert join.neuron.threshold == pytest.approx(float(quantizer.step.detach()) * quantizer.levels)
        assert join.neuron.v_init == "half" and join.neuron.reset == "subtract"
        assert len(net.incoming(join.name)) == 2
    T = 2000
    snn = simulate(net, x, T).readout[:, -1] / T
    with torch.no_grad():
        ramp = _ramp(model)(x).numpy()
    assert np.abs(snn - ramp).max() < 0.02 * np.abs(ramp).max()


def test_mixed_resolution_draws_one_of_three_schedules_per_batch():
    """Every QuantReLU at Q levels, all at one finer resolution, or each at its own: a third each."""
    torch.manual_seed(0)
    layers = [nn.Linear(4, 8), nn.ReLU()] + [m for _ in range(3) for m in (nn.Linear(8, 8), nn.ReLU())]
    model = quantize_activations(nn.Sequential(*layers), 2)
    calibrate_steps(model, torch.rand(64, 4))
    quantizers = [m for m in model.modules() if isinstance(m, QuantReLU)]
    assert len(quantizers) == 4 and all(q.resolution == "mixed" for q in quantizers)
    model.train()
    seen, everywhere_q, shared_finer, per_layer = set(), 0, 0, 0
    for _ in range(300):
        model(torch.rand(8, 4))
        finer = [q.finer for q in quantizers]
        seen |= set(finer)
        everywhere_q += finer == [1, 1, 1, 1]
        shared_finer += len(set(finer)) == 1 and finer[0] > 1
        per_layer += len(set(finer)) > 1
    assert seen == {1, 2, 4, 8, 16}
    assert min(everywhere_q, shared_finer, per_layer) >= 70  # about 100 each
    q = quantizers[0]
    x = torch.linspace(-1, 3, 401)[None, :].repeat(2, 1)
    q.finer = 4
    values = (q(x) / q.step.detach()).detach()
    np.testing.assert_allclose(values * 4, torch.round(values * 4), atol=1e-4)  # a grid of s / 4
    assert values.max() == pytest.approx(q.levels, rel=1e-5)  # the same clip s Q
    model.eval()
    model(torch.rand(8, 4))  # the hook draws nothing in eval mode; eval always uses Q levels
    np.testing.assert_allclose((q(x) / q.step).detach(), torch.round((q(x) / q.step).detach()), atol=1e-4)
    fixed = quantize_activations(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), 2, resolution="fixed")
    assert not fixed._forward_pre_hooks
    draw_resolution(fixed.train(), ())
    assert all(m.finer == 1 for m in fixed.modules() if isinstance(m, QuantReLU))


def test_delayed_readout_choice_uses_calibration_items_only():
    """'auto' simulates the first choice_items calibration items; the chosen k never agrees less with
    the ANN than reading from the start."""
    torch.manual_seed(0)
    model = resnet20(input_shape=(1, 8, 8), n_classes=4, blocks=1).eval()
    calibration = torch.rand(48, 1, 8, 8)
    net = convert(model, calibration, readout_start="auto", T=12, choice_items=24)
    choice = net.metadata["readout_start_choice"]
    assert choice["items"] == 24 and choice["T"] == 12
    assert net.metadata["readout_start"] == choice["readout_start"]
    assert choice["agreement"] >= choice["agreement_without"]


def test_job_conversion_settings_reach_the_converter(mnist):
    """--max-pool and --readout-start: a max-pooling model converts with the strategy, and the delayed
    readout's step is recorded in the network; --negative-spikes and --headroom reach every hidden neuron
    and lambda (the same calibration statistic, times 2)."""

    from neurodeploy.jobs.config import ConversionSettings, JobConfig
    from neurodeploy.jobs.prepare import convert_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    config = JobConfig(conversion=ConversionSettings(max_pool="avg", readout_start=3, calibration_samples=64))
    network = convert_model(model.eval(), mnist, config)
    assert network.metadata["readout_start"] == 3
    assert any("MaxPool2d" in note for note in network.metadata["conversion_notes"])
    signed = convert_model(model.eval(), mnist, JobConfig(conversion=ConversionSettings(
        max_pool="avg", readout_start=3, calibration_samples=64, negative_spikes=True, headroom=2.0)))
    hidden = [name for name, p in network.populations.items() if p.role == "hidden"]
    assert hidden and all(signed.populations[name].neuron.negative_spikes for name in hidden)
    assert not any(network.populations[name].neuron.negative_spikes for name in hidden)
    for name in hidden:
        np.testing.assert_allclose(signed.populations[name].metadata["lambda"],
                                   2 * np.asarray(network.populations[name].metadata["lambda"]), rtol=1e-12)
    with pytest.raises(ConfigError, match="--max-pool"):
        ConversionSettings(max_pool="sum")
    with pytest.raises(ConfigError, match="--readout-start"):
        ConversionSettings(readout_start=-1)


def _overshooting_chain() -> nn.Module:
    """x -> relu(x) -> relu(2 h1 - 1) -> h2: for x = 1/2 the second ReLU is 0, but its IF neuron fires
    once at the first spike of the first (which fires every other step from v0 = theta / 2)."""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        for layer, (w, b) in zip(model[::2], [(1.0, 0.0), (2.0, -1.0), (1.0, 0.0)], strict=True):
            layer.weight.fill_(w)
            layer.bias.fill_(b)
    return model.eval()


def test_negative_spikes_take_back_an_overshoot_by_hand():
    """Max normalization on x in {1/2, 1} keeps every weight (lambda 1): h1 gets 1/2 per step and spikes
    at t = 1, 3, 5, ...; h2 gets 2 s1(t) - 1: v = 1/2 + 1 at t = 1 (a spike, v -> 1/2), then -1/2 at even
    and 1/2 at odd steps. Without negative spikes that first spike stays (readout 1 at every t); with
    them h2 emits -1 at every even step (v < 0, net count 1) and +1 at every odd one, so the readout is
    0 = the ANN's output at even t and 1 at odd t."""
    model = _overshooting_chain()
    calibration = torch.tensor([[0.5], [1.0]])
    x = torch.tensor([[0.5]])
    assert float(model(x).detach()) == 0.0
    plain, signed = (convert(model, calibration, normalization="max", v_init="half", negative_spikes=flag)
                     for flag in (False, True))
    assert all(p.neuron.negative_spikes for p in signed.populations.values() if p.role == "hidden")
    assert signed.metadata["negative_spikes"] and not plain.metadata["negative_spikes"]
    np.testing.assert_allclose(simulate(plain, x, 10).readout[0, :, 0], np.ones(10))
    np.testing.assert_allclose(simulate(signed, x, 10).readout[0, :, 0], np.arange(1, 11) % 2)


def test_negative_spikes_are_a_choice_of_rate_conversion():
    model = quantize_activations(_overshooting_chain(), 2)
    with pytest.raises(ConfigError, match="negative_spikes is a choice of rate conversion"):
        convert(model, torch.rand(4, 1), conversion="qcfs", negative_spikes=True)


def test_headroom_keeps_an_activation_above_the_calibration_maximum_unclipped_by_hand():
    """x -> relu(x) -> output. Max normalization on x in {1/2, 1}: lambda 1, so x = 3/2 (above every
    calibration item) gives the hidden neuron 3/2 per step and it fires at every step (at most one spike a
    step): readout t, the clipped 1 x t, not the ANN's 3/2 x t. With headroom 3, lambda = 3: the neuron gets
    1/2 per step and, from v0 = 1/2, fires at t = 1, 3, 5, ...; each spike carries lambda = 3 to the
    output, so the readout is 3 ceil(t / 2), which is the ANN's 3/2 x t at every even t."""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        for layer in model[::2]:
            layer.weight.fill_(1.0)
            layer.bias.fill_(0.0)
    calibration, x = torch.tensor([[0.5], [1.0]]), torch.tensor([[1.5]])
    plain, roomy = (convert(model.eval(), calibration, normalization="max", v_init="half", headroom=h)
                    for h in (1.0, 3.0))
    (hidden,) = [p for p in roomy.populations.values() if p.role == "hidden"]
    assert hidden.metadata["lambda"] == [3.0] and roomy.metadata["headroom"] == 3.0
    t = np.arange(1, 11)
    np.testing.assert_allclose(simulate(plain, x, 10).readout[0, :, 0], t)
    readout = simulate(roomy, x, 10).readout[0, :, 0]
    np.testing.assert_allclose(readout, 3 * np.ceil(t / 2))
    np.testing.assert_allclose(readout[1::2], 1.5 * t[1::2])


@pytest.mark.parametrize("kwargs, needle", [({"headroom": 0.5}, "headroom must be a number >= 1"),
                                             ({"headroom": float("inf")}, "headroom must be a number >= 1"),
                                             ({"headroom": 2.0, "conversion": "qcfs"},
                                              "headroom is a choice of rate conversion")])
def test_headroom_is_a_factor_of_at_least_one_in_rate_conversion(kwargs, needle):
    model = quantize_activations(_overshooting_chain(), 2) if "conversion" in kwargs else _overshooting_chain()
    with pytest.raises(ConfigError, match=needle):
        convert(model, torch.rand(4, 1), **kwargs)
