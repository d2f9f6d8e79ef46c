"""QCFS/QFFS: the quantized activation, its exact conversion, and early exit with batch compaction."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import simulate

from neurodeploy.backends import ExitPolicy, RunOptions, get_backend
from neurodeploy.backends.gpu.early_exit import confidence_log_odds as torch_log_odds
from neurodeploy.convert import convert
from neurodeploy.errors import UnsupportedOperationError
from neurodeploy.evaluate.dynamic_confidence import confidence_log_odds, stop_times
from neurodeploy.train.quantized import QuantReLU, calibrate_steps, quantize_activations


def test_quant_relu_values():
    q = QuantReLU(bits=2)
    q.step.data.fill_(0.5)
    q.initialized.fill_(True)
    x = torch.tensor([-1.0, 0.2, 0.26, 0.74, 0.76, 1.2, 3.0])
    # s * clip(round(x / s), 0, 3) with s = 0.5
    assert q(x).tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.5]


def test_step_initialization_uses_the_activation_scale():
    q = QuantReLU(bits=3)
    q.init_step(torch.linspace(-1, 7, 8001))
    assert float(q.step.detach()) == pytest.approx(7 * 0.999 / 7, rel=1e-2)


def _one_hidden_layer(bits: int) -> nn.Module:
    torch.manual_seed(0)
    model = quantize_activations(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)), bits)
    calibrate_steps(model, torch.rand(256, 6))
    return model.eval()


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_qcfs_reproduces_the_quantized_ann_after_Q_steps(bits):
    """With theta = s Q and v0 = theta / 2, Q steps of a constant input z give round(z / s) spikes
    clipped to [0, Q], so one hidden layer matches the quantized ANN exactly: O(Q) = Q x logits."""
    model = _one_hidden_layer(bits)
    x = torch.rand(200, 6)
    net = convert(model, x, conversion="qcfs")
    hidden = next(p for p in net.populations.values() if p.role == "hidden")
    quantizer = model[1]
    assert hidden.neuron.threshold == pytest.approx(float(quantizer.step.detach()) * quantizer.levels)
    assert hidden.neuron.v_init == "half" and hidden.neuron.reset == "subtract"
    with torch.no_grad():
        pre = model[0](x) / quantizer.step
        clean = (pre - pre.floor() - 0.5).abs().min(dim=1).values > 1e-3  # away from rounding ties
        ann = model(x).numpy()
    Q = quantizer.levels
    result = simulate(net, x, Q)
    np.testing.assert_allclose(result.readout[clean.numpy(), Q - 1] / Q, ann[clean.numpy()], rtol=1e-4, atol=1e-4)


def test_qffs_spec_and_plain_relu_refusal():
    model = _one_hidden_layer(2)
    net = convert(model, torch.rand(20, 6), conversion="qffs")
    hidden = next(p for p in net.populations.values() if p.role == "hidden")
    assert hidden.neuron.spike_cap == 3 and hidden.neuron.negative_spikes
    plain = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    with pytest.raises(UnsupportedOperationError, match="QCFS conversion needs quantized activations"):
        convert(plain, torch.rand(20, 6), conversion="qcfs")


def test_torch_and_numpy_log_odds_agree():
    readout = np.random.default_rng(0).normal(size=(5, 7, 4)) * 30
    np.testing.assert_allclose(torch_log_odds(torch.tensor(readout), 3.0).numpy(),
                               confidence_log_odds(readout, 3.0), rtol=1e-12)
    policy = ExitPolicy.from_confidence(2.0, 0.8)
    assert policy.threshold_log_odds == pytest.approx(np.log(4.0))


@pytest.fixture(scope="module")
def qcfs_conv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    model = quantize_activations(model, 2)
    x = torch.rand(300, 1, 12, 12)
    calibrate_steps(model, x)
    model.eval()
    with torch.no_grad():
        labels = model(x).argmax(1)
    return convert(model, x[:100], conversion="qcfs"), x, labels


@pytest.mark.parametrize("chunk, profile, encoding", [(1, "ideal", "analog"), (3, "ideal", "analog"),
                                                     (4, "pynn", "analog"), (5, "ideal", "if")])
def test_exited_items_get_the_full_run_prediction_at_their_exit_step(qcfs_conv, chunk, profile, encoding):
    net, x, labels = qcfs_conv
    T = 16
    backend = get_backend("gpu", device="cpu", chunk=chunk, profile=profile)
    full = backend.run(net, x, labels, RunOptions(T=T, batch_size=128, progress=False, encoding=encoding))
    log_odds = confidence_log_odds(full.readout, T)
    threshold = float(np.quantile(log_odds.max(axis=1), 0.5))  # about half the items never exit
    exited = backend.run(net, x, labels, RunOptions(T=T, batch_size=128, progress=False, encoding=encoding,
                                                    exit_policy=ExitPolicy(float(T), threshold)))
    expected = stop_times(log_odds, threshold)
    assert 0.2 < (expected < T).mean() < 1.0
    np.testing.assert_array_equal(exited.stop_times, expected)
    rows = np.arange(len(x))
    at_stop = exited.stop_times - 1
    np.testing.assert_array_equal(exited.predictions()[rows, at_stop], full.predictions()[rows, at_stop])
    np.testing.assert_allclose(exited.readout[rows, at_stop], full.readout[rows, at_stop], atol=1e-4)
    # nothing is simulated after the exit step: counts stop, the readout stays frozen
    after = np.arange(T)[None, :] >= exited.stop_times[:, None]
    assert exited.spike_counts[after].sum() == 0
    frozen = exited.readout[rows, at_stop][:, None, :].repeat(T, 1)
    np.testing.assert_array_equal(exited.readout[after], frozen[after])
    assert exited.spike_counts.sum() < full.spike_counts.sum()


def test_early_exit_result_round_trip(qcfs_conv, tmp_path):
    from neurodeploy.evaluate.result import SimulationResult

    net, x, labels = qcfs_conv
    exited = get_backend("gpu", device="cpu").run(
        net, x[:20], labels[:20], RunOptions(T=8, progress=False, exit_policy=ExitPolicy(8.0, 0.0)))
    loaded = SimulationResult.load(exited.save(tmp_path / "r.npz"))
    np.testing.assert_array_equal(loaded.stop_times, exited.stop_times)
    assert loaded.metadata["exit_policy"] == {"alpha": 8.0, "threshold_log_odds": 0.0}


@pytest.mark.parametrize("conversion, negative", [("rate", False), ("rate", True), ("qcfs", False), ("qffs", False)])
def test_conversion_features_known_before_converting_are_those_convert_gives(conversion, negative):
    """What a job checks against its backends before any work (``conversion_features``) is what ``convert``
    gives every hidden neuron."""
    from neurodeploy.convert.converter import conversion_features

    model = _one_hidden_layer(2)
    net = convert(model, torch.rand(20, 6), conversion=conversion, negative_spikes=negative)
    expected = {"rate": [], "qcfs": [], "qffs": ["spike caps", "negative spikes"]}[conversion] + \
        (["negative spikes"] if negative else [])
    assert list(conversion_features(conversion, negative)) == expected
    hidden = [p for p in net.populations.values() if p.role == "hidden"]
    assert hidden and all(p.neuron.conversion_features() == expected for p in hidden)
