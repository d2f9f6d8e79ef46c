"""The int8 path's fused neuron scan (``backends/gpu/fused.py``) against the eager scan it replaces."""

import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from neurodeploy.backends import ExitPolicy, RunOptions, get_backend
from neurodeploy.backends.gpu import binary_ops, fused
from neurodeploy.backends.gpu.compiled import Layer, _fused_neuron, compile_network
from neurodeploy.backends.gpu.neurons import integrate_and_fire
from neurodeploy.convert import convert

pytestmark = pytest.mark.skipif(not binary_ops.available(torch.device("cpu")), reason="no oneDNN int8 kernels")


@pytest.fixture(autouse=True)
def _kernel():
    """The fused scan built (once per machine, on first use: not at collection). CI has a compiler and the
    ``ninja`` dependency, so there a failed build fails the tests instead of skipping them."""
    if fused.kernel() is None:
        if os.environ.get("CI"):
            pytest.fail("the fused scan's C++ extension did not build")
        pytest.skip("no C++ compiler / ninja for the fused scan")

SHAPE = (4, 5, 6)


def _layer(threshold: str, reset: str, fan: np.ndarray, channels_last: bool) -> Layer:
    layer = Layer("h", "hidden", SHAPE, reset=reset, channels_last=channels_last)
    layer.threshold = {"unit": 1.0, "scalar": 0.7,
                       "channel": torch.tensor([0.5, 0.9, 1.0, 1.3]).reshape(4, 1, 1)}[threshold]
    layer.fused_neuron = _fused_neuron(layer, fan)
    return layer


def _constant(kind: str, batch: int, channels_last: bool, rng) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "channel":
        return torch.as_tensor(rng.uniform(-0.1, 0.3, (4, 1, 1)), dtype=torch.float32)
    c = torch.as_tensor(rng.uniform(-0.1, 0.3, (batch, *SHAPE)), dtype=torch.float32)
    return c.contiguous(memory_format=torch.channels_last) if channels_last else c


@pytest.mark.parametrize("threshold", ["unit", "scalar", "channel"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("constant_kind, with_dynamic", [("none", True), ("channel", True), ("batched", True),
                                                         ("channel", False), ("batched", False)])
@pytest.mark.parametrize("channels_last, fan_max", [(True, 300), (False, 300), (True, 70000)])
def test_fused_scan_equals_the_eager_scan(threshold, reset, constant_kind, with_dynamic, channels_last, fan_max):
    """Membranes, spikes and counts bit for bit (the same float32 operations in the same order; fan-outs of
    2^15 and more take the kernel's int64 event sums)."""
    rng = np.random.default_rng(1)
    steps, batch = 9, 7
    fan = rng.integers(0, fan_max, SHAPE)
    layer = _layer(threshold, reset, fan, channels_last)
    assert layer.fused_neuron.wide == (fan_max > 2**15)
    v0 = torch.as_tensor(rng.uniform(-0.5, 1.0, (batch, *SHAPE)), dtype=torch.float32)
    if channels_last:
        v0 = v0.contiguous(memory_format=torch.channels_last)
    dynamic = torch.as_tensor(rng.uniform(-0.2, 0.7, (steps, batch, *SHAPE)), dtype=torch.float32)
    constant = _constant(constant_kind, batch, channels_last, rng)

    v_eager = v0.clone()
    spikes = integrate_and_fire(layer, v_eager, dynamic.clone() if with_dynamic else None, constant, steps)
    matrix = torch.as_tensor(np.stack([np.ones(fan.size), fan.reshape(-1)], 1), dtype=torch.float32)
    counts = (spikes.reshape(steps * batch, -1) @ matrix).reshape(steps, batch, 2)

    v_fused = v0.clone()
    v_flat = fused.memory_order(v_fused, 1, SHAPE, channels_last)
    assert v_flat.data_ptr() == v_fused.data_ptr()  # a view: the scan updates the membrane in place
    out = fused.spike_buffer(steps, batch, SHAPE, channels_last, "cpu")
    stats = torch.empty((steps, batch, 2))
    flat_constant = None
    if constant is not None:
        batched = constant.ndim == len(SHAPE) + 1
        flat_constant = fused.memory_order(constant.expand(batch if batched else 1, *SHAPE), 1, SHAPE,
                                           channels_last)
    fused.scan(layer.fused_neuron, v_flat,
               fused.memory_order(dynamic, 2, SHAPE, channels_last) if with_dynamic else None, flat_constant,
               fused.memory_order(out, 2, SHAPE, channels_last), stats)
    assert out.dtype == torch.uint8
    assert torch.equal(out.float(), spikes)
    assert torch.equal(v_fused, v_eager)
    assert torch.equal(stats, counts)
    assert 0 < spikes.mean() < 1


def test_fused_scan_hand_computed():
    """One neuron, 12 steps: 0.25 a step against theta 1 fires at steps 4, 8, 12 (subtract); 0.375 a step
    with reset to zero fires at 3, 6, 9, 12 (1.125 >= 1, then 0). Fan-out 3: 3 events a spike."""
    fan = np.array([3])
    for reset, drive, expected in (("subtract", 0.25, [4, 8, 12]), ("zero", 0.375, [3, 6, 9, 12])):
        layer = Layer("h", "hidden", (1,), reset=reset)
        neuron = _fused_neuron(layer, fan)
        v = torch.zeros(1, 1)
        out = torch.empty((12, 1, 1), dtype=torch.uint8)
        stats = torch.empty((12, 1, 2))
        fused.scan(neuron, v, None, torch.full((1, 1), drive), out, stats)
        steps = (np.flatnonzero(out.reshape(-1).numpy()) + 1).tolist()
        assert steps == expected
        np.testing.assert_array_equal(stats[:, 0, 1].numpy(), 3 * out.reshape(-1).numpy())
        assert float(v) == 0.0  # the last step fired: back to 0 (exactly, in both resets)


@pytest.fixture(scope="module")
def conv_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    x = torch.rand(40, 3, 16, 16)
    return convert(model, x), x


def test_only_the_int8_path_fuses(conv_net):
    """Every hidden layer of the conv net is read only by int8 projections: all fused; fp32 (the default) none."""
    net, _ = conv_net
    int8 = compile_network(net, torch.device("cpu"), int8_parts=binary_ops.DEFAULT_PARTS)
    assert [layer.fused_neuron is not None for layer in int8.layers] == [False, True, True, True, True, False]
    assert all(layer.fused_neuron is None for layer in compile_network(net, torch.device("cpu")).layers)


@pytest.mark.parametrize("profile, encoding, chunk, exit_policy", [
    ("ideal", "analog", None, None), ("pynn", "analog", 4, None), ("pynn", "if", 3, None),
    ("ideal", "analog", 3, ExitPolicy(0.03, 3.0))])
def test_fused_and_eager_scans_agree_in_the_engine(conv_net, profile, encoding, chunk, exit_policy):
    """The int8 path with and without the fused scan: the same spikes, events, readout and stop steps (pynn: the
    delay buffers hold uint8 spikes; early exit: the membranes are compacted between chunks)."""
    net, x = conv_net
    labels = torch.zeros(len(x), dtype=torch.long)
    options = RunOptions(T=24, batch_size=len(x), progress=False, encoding=encoding, exit_policy=exit_policy)
    backend = get_backend("gpu", device="cpu", precision="int8", profile=profile, chunk=chunk)
    session = backend.compile(net, options)
    results = [backend.simulate_batch(session, x, labels, 0, options)]
    for layer in session.state.layers:
        layer.fused_neuron = None
    results.append(backend.simulate_batch(session, x, labels, 0, options))
    fast, eager = results
    np.testing.assert_array_equal(fast.spike_counts, eager.spike_counts)
    np.testing.assert_array_equal(fast.synaptic_events, eager.synaptic_events)
    np.testing.assert_array_equal(fast.readout, eager.readout)
    np.testing.assert_array_equal(fast.stop_times, eager.stop_times)
    assert fast.spike_counts[:, :, 1:].sum() > 0
    if exit_policy is not None:
        assert len(np.unique(fast.stop_times // 3)) > 1  # items leave in different chunks: compaction ran


@pytest.mark.parametrize("shape, kernel, stride, padding", [((3, 4, 4, 5), (3, 3), (1, 1), (1, 1)),
                                                            ((2, 2, 2, 7), (3, 3), (1, 1), (1, 1)),
                                                            ((2, 6, 5, 3), (3, 2), (2, 1), (0, 1))])
def test_paired_patches_equal_the_unfolded_paired_input(shape, kernel, stride, padding):
    """The extension's patches of uint8 spikes ``[n, H, W, C]``: every tap's channels as [pair s, s], zeros in
    the padding, taps in (i, j) order, positions row-major; against torch's unfold of the paired input."""
    n, h, w, c = shape
    x = (torch.rand(n, c, h, w) < 0.4).to(torch.uint8) + (torch.rand(n, c, h, w) < 0.3).to(torch.uint8)  # 0..2
    x = x.contiguous(memory_format=torch.channels_last)
    pair = 32
    paired = torch.cat([pair * x.double(), x.double()], dim=1)
    columns = torch.nn.functional.unfold(paired, kernel, padding=padding, stride=stride)  # [n, 2C kh kw, L]
    taps = kernel[0] * kernel[1]
    expected = columns.reshape(n, 2 * c, taps, -1).permute(0, 3, 2, 1).reshape(-1, taps * 2 * c)
    patches = fused.kernel().paired_patches(x.permute(0, 2, 3, 1).contiguous(), *kernel, *stride, *padding, pair)
    assert patches.dtype == torch.uint8
    assert torch.equal(patches.double(), expected)


def test_patches_without_the_extension_are_the_same(monkeypatch):
    """``binary_ops._paired_patches``'s torch route (no compiler) gives the extension's bytes."""
    x = (torch.rand(3, 6, 4, 4) < 0.4).to(torch.uint8).contiguous(memory_format=torch.channels_last)
    built = binary_ops._paired_patches(x, 3, 3, (1, 1), (1, 1), 128)
    monkeypatch.setattr(binary_ops, "fused", type("NoExtension", (), {"kernel": staticmethod(lambda: None)}))
    assert torch.equal(binary_ops._paired_patches(x, 3, 3, (1, 1), (1, 1), 128), built)
