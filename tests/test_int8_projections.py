"""The gpu backend's int8 path (``precision="int8"``, ``backends/gpu/binary_ops.py``) against the float paths."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from neurodeploy.backends import ExitPolicy, RunOptions, get_backend
from neurodeploy.backends.gpu import binary_ops
from neurodeploy.backends.gpu.compiled import compile_network
from neurodeploy.convert import convert
from neurodeploy.errors import ConfigError
from neurodeploy.ir import AvgPool2d, Conv2d, Dense, Flatten
from neurodeploy.ir.torch_ops import compile_chain

pytestmark = pytest.mark.skipif(not binary_ops.available(torch.device("cpu")),
                                reason="PyTorch without oneDNN's int8 kernels")

CHAINS = {
    "conv": (lambda w: [Conv2d(w((16, 8, 3, 3)), padding=(1, 1))], (8, 12, 12)),
    "strided conv": (lambda w: [Conv2d(w((16, 8, 3, 3)), stride=(2, 2))], (8, 18, 18)),
    "pool conv": (lambda w: [AvgPool2d((2, 2), (2, 2)), Conv2d(w((16, 8, 3, 3)), padding=(1, 1))], (8, 16, 16)),
    "overlapping pool conv": (lambda w: [AvgPool2d((3, 3), (2, 2)), Conv2d(w((16, 8, 3, 3)), padding=(1, 1))],
                              (8, 17, 17)),
    "dense": (lambda w: [Dense(w((7, 40)))], (40,)),
    "flatten dense": (lambda w: [Flatten(), Dense(w((7, 8 * 4 * 4)))], (8, 4, 4)),
    "pool flatten dense": (lambda w: [AvgPool2d((2, 2), (2, 2)), Flatten(), Dense(w((7, 8 * 2 * 2)))], (8, 4, 4)),
    "pool, 1x1 pool, flatten dense": (lambda w: [AvgPool2d((2, 2), (2, 2)), AvgPool2d((1, 1), (1, 1)),
                                                 Flatten(), Dense(w((7, 8 * 2 * 2)))], (8, 4, 4)),
}


def _weights(rng):
    return lambda shape: rng.normal(0.0, 0.3, shape).astype(np.float32)


@pytest.mark.parametrize("chain", sorted(CHAINS))
@pytest.mark.parametrize("amplitude", [None, "scalar", "channel"])
def test_int8_current_is_within_the_stated_bound_of_the_exact_sum(chain, amplitude):
    """Against the float64 current: the split's residual (at most max|w| 2^-(bits + 1) per active weight, bits
    >= 25 for 4 parts) plus float32 rounding of the parts' sum (a few units of 2^-24 of sum |w s|)."""
    rng = np.random.default_rng(1)
    build, shape = CHAINS[chain]
    ops = build(_weights(rng))
    amp = {None: None, "scalar": torch.tensor(0.75),
           "channel": torch.rand(shape[0], *([1] * (len(shape) - 1))) + 0.5}[amplitude]
    spikes = (torch.rand(30, *shape) < 0.3).float()
    fast = binary_ops.binary_projection(ops, shape, amp)
    scaled = spikes.double() * (1.0 if amp is None else amp.double())
    exact = compile_chain(ops, dtype=torch.float64)(scaled)
    magnitude = compile_chain([_absolute(op) for op in ops], dtype=torch.float64)(scaled)  # sum |w s| per output
    current = fast(spikes)
    assert current.dtype == torch.float32 and current.shape == exact.shape
    bound = magnitude * (2.0 ** -25 + 4 * 2.0 ** -24) + 1e-30
    assert torch.all((current.double() - exact).abs() <= bound)
    float32 = compile_chain(ops)(spikes * (1.0 if amp is None else amp))
    # no worse than the float32 path's own error
    assert (current.double() - exact).abs().max() <= 2 * (float32.double() - exact).abs().max() + 1e-12


def _absolute(op):
    """The op with |weights| (bounds the rounding of its sum)."""
    if isinstance(op, Conv2d):
        return Conv2d(np.abs(op.weight), op.stride, op.padding, op.dilation, op.groups)
    if isinstance(op, Dense):
        return Dense(np.abs(op.weight))
    return op


def test_split_is_exact_for_weights_of_few_bits():
    """Weights on a 2^-8 grid with |w| < 2: the split holds them exactly, so the current equals the exact sum."""
    rng = np.random.default_rng(2)
    weight = (rng.integers(-255, 256, (16, 8, 3, 3)) / 256.0).astype(np.float32)
    qs, scales = binary_ops.split_int8(weight.astype(np.float64), 4)
    rebuilt = sum(q.astype(np.float64) * s[:, None, None, None] for q, s in zip(qs, scales, strict=True))
    np.testing.assert_array_equal(rebuilt, weight)
    spikes = (torch.rand(10, 8, 8, 8) < 0.5).float()
    fast = binary_ops.binary_projection([Conv2d(weight, padding=(1, 1))], (8, 8, 8), None)(spikes)
    exact = compile_chain([Conv2d(weight, padding=(1, 1))], dtype=torch.float64)(spikes.double())
    assert torch.equal(fast.double(), exact)


def test_unsupported_chains_keep_the_float_path():
    w = np.ones((4, 4, 3, 3), np.float32)
    assert binary_ops.binary_projection([Conv2d(w, dilation=(2, 2))], (4, 8, 8), None) is None
    assert binary_ops.binary_projection([AvgPool2d((3, 3), (1, 1), (1, 1)), Conv2d(w)], (4, 9, 9), None) is None
    assert binary_ops.binary_projection([AvgPool2d((12, 12), (1, 1)), Conv2d(w)], (4, 16, 16), None) is None
    big = Dense(np.broadcast_to(np.float32(0.5), (2, binary_ops.MAX_DENSE_WEIGHTS // 2 + 1)))
    assert binary_ops.binary_projection([big], (binary_ops.MAX_DENSE_WEIGHTS // 2 + 1,), None) is None
    assert binary_ops.binary_projection([AvgPool2d((3, 3), (2, 2)), Flatten(), Dense(np.ones((3, 16)))],
                                        (4, 5, 5), None) is None


def simulate(net, x: torch.Tensor, T: int, encoding: str = "analog", **backend_kwargs):
    """On the CPU (the int8 kernels' device) whatever device the other tests use."""
    options = RunOptions(T=T, batch_size=len(x), progress=False, encoding=encoding)
    return get_backend("gpu", device="cpu", **backend_kwargs).run(net, x, torch.zeros(len(x), dtype=torch.long),
                                                                   options)


@pytest.fixture(scope="module")
def conv_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    x = torch.rand(40, 3, 16, 16)
    return convert(model, x), x


@pytest.mark.parametrize("profile", ["ideal", "pynn"])
@pytest.mark.parametrize("encoding", ["analog", "if"])
def test_int8_spikes_match_the_fp32_path_on_a_conv_net(conv_net, profile, encoding):
    """Spike for spike on this net (currents differ by float32 rounding only; a membrane that close to its
    threshold would flip a spike in either path), and the readout within float32 rounding."""
    net, x = conv_net
    fp32 = simulate(net, x, 30, profile=profile, encoding=encoding)
    int8 = simulate(net, x, 30, profile=profile, encoding=encoding, precision="int8")
    np.testing.assert_array_equal(int8.spike_counts, fp32.spike_counts)
    np.testing.assert_array_equal(int8.synaptic_events, fp32.synaptic_events)
    np.testing.assert_allclose(int8.readout, fp32.readout, atol=1e-4)
    assert int8.spike_counts[:, :, 1:].sum() > 0  # the hidden layers fire


def test_int8_chunking_and_neuron_counts_match(conv_net):
    net, x = conv_net
    compiled = compile_network(net, torch.device("cpu"), int8_parts=binary_ops.DEFAULT_PARTS)
    lowered = [incoming.binary_fn is not None for layer in compiled.layers for incoming in layer.incoming]
    assert lowered == [False, True, True, True, True]  # all but the analog input's projection
    whole = simulate(net, x, 12, precision="int8", chunk=12)
    steps = simulate(net, x, 12, precision="int8", chunk=1)
    np.testing.assert_array_equal(whole.spike_counts, steps.spike_counts)
    backend = get_backend("gpu", device="cpu", precision="int8")
    recorded = backend.run(net, x, torch.zeros(len(x), dtype=torch.long),
                           RunOptions(T=12, batch_size=len(x), progress=False, record_neuron_counts=True))
    reference = get_backend("gpu", device="cpu").run(net, x, torch.zeros(len(x), dtype=torch.long), RunOptions(
        T=12, batch_size=len(x), progress=False, record_neuron_counts=True))
    np.testing.assert_array_equal(recorded.neuron_counts, reference.neuron_counts)


def test_int8_refuses_what_it_cannot_run():
    with pytest.raises(ConfigError, match="ideal and pynn"):
        get_backend("gpu", device="cpu", precision="int8", profile="spinnaker")


@pytest.mark.parametrize("chain", ["conv", "pool flatten dense"])
def test_bias_added_in_the_kernel(chain):
    rng = np.random.default_rng(3)
    build, shape = CHAINS[chain]
    ops = build(_weights(rng))
    spikes = (torch.rand(12, *shape) < 0.3).float()
    without = binary_ops.binary_projection(ops, shape, None)(spikes)
    bias = torch.linspace(-1.0, 1.0, without.shape[1])
    with_bias = binary_ops.binary_projection(ops, shape, None, bias=bias)(spikes)
    expected = without + bias.reshape(-1, *([1] * (without.ndim - 2)))
    torch.testing.assert_close(with_bias, expected, rtol=2.5e-7, atol=1e-7)  # two float32 roundings


def test_small_feature_maps_run_as_matrix_products():
    """Below MIN_POSITIONS output positions the convolution runs over patches; same currents as the float path."""
    rng = np.random.default_rng(4)
    cases = [([Conv2d(_weights(rng)((16, 8, 3, 3)), padding=(1, 1))], (8, 4, 4)),
             ([Conv2d(_weights(rng)((16, 8, 3, 3)), stride=(2, 2))], (8, 9, 9)),
             ([AvgPool2d((2, 2), (2, 2)), Conv2d(_weights(rng)((16, 8, 3, 3)), padding=(1, 1))], (8, 4, 4))]
    for ops, shape in cases:
        spikes = (torch.rand(6, *shape) < 0.4).float()
        bias = torch.linspace(-1.0, 1.0, 16)
        fast = binary_ops.binary_projection(ops, shape, None, bias=bias)(spikes)
        exact = compile_chain(ops, dtype=torch.float64)(spikes.double()) + bias.double().reshape(-1, 1, 1)
        assert fast.shape == exact.shape
        torch.testing.assert_close(fast.double(), exact, rtol=0, atol=2e-6)


def test_int8_early_exit_matches_fp32(conv_net):
    """Items that leave the batch early (state compacted) stop at the same steps with the same readout."""
    net, x = conv_net
    labels = torch.zeros(len(x), dtype=torch.long)
    options = RunOptions(T=30, batch_size=len(x), progress=False, exit_policy=ExitPolicy(0.03, 3.0))
    fp32 = get_backend("gpu", device="cpu", chunk=3).run(net, x, labels, options)
    int8 = get_backend("gpu", device="cpu", chunk=3, precision="int8").run(net, x, labels, options)
    assert len(np.unique(fp32.stop_times // 3)) > 1  # items leave in different chunks: the rest are compacted
    np.testing.assert_array_equal(int8.stop_times, fp32.stop_times)
    np.testing.assert_array_equal(int8.spike_counts, fp32.spike_counts)


def test_int8_after_an_overlapping_pool_matches_fp32():
    """AlexNet's pooling (3x3 windows every 2): the convolution after it takes the int8 path (windows summed in
    uint8, 6 parts) and the spikes equal the fp32 path's on this net."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, 2), nn.Conv2d(8, 16, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()
    x = torch.rand(40, 3, 16, 16)
    net = convert(model, x)
    compiled = compile_network(net, torch.device("cpu"), int8_parts=binary_ops.DEFAULT_PARTS)
    assert [incoming.binary_fn is not None for layer in compiled.layers for incoming in layer.incoming] == [
        False, True, True]
    fp32 = simulate(net, x, 30)
    int8 = simulate(net, x, 30, precision="int8")
    np.testing.assert_array_equal(int8.spike_counts, fp32.spike_counts)
    np.testing.assert_allclose(int8.readout, fp32.readout, atol=1e-5)
    assert int8.spike_counts[:, :, 1:].sum() > 0
