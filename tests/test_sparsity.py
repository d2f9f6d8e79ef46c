"""Phase-1 sparsity penalties against hand-computed values, pruning, and a short fine-tuning run."""

import math

import pytest
import torch
import torch.nn as nn

from neurodeploy.train.sparsity import (
    SparsityConfig,
    activation_penalty,
    activation_sparsity,
    finetune_sparsity,
    measure_sizes,
    prune,
    weight_penalty,
)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_penalties_by_hand():
    conv = nn.Conv2d(1, 2, 3, padding=1)            # 2 channels x 4 x 4 positions = 32 neurons
    bn2 = nn.BatchNorm2d(2)
    linear = nn.Linear(32, 3)                       # 3 neurons
    bn1 = nn.BatchNorm1d(3)
    model = nn.Sequential(conv, bn2, nn.ReLU(), nn.Flatten(), linear, bn1, nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        bn2.bias.copy_(torch.tensor([0.0, -1.0]))
        bn1.bias.copy_(torch.tensor([1.0, 2.0, -0.5]))
        conv.weight.fill_(0.5)
        linear.weight.fill_(-0.25)
        model[-1].weight.fill_(2.0)
    sizes = measure_sizes(model, torch.rand(1, 1, 4, 4))
    assert sizes.neurons[bn2] == 32 and sizes.neurons[bn1] == 3
    expected_a = 32 / 35 * (_phi(0) + _phi(-1)) / 2 + 3 / 35 * (_phi(1) + _phi(2) + _phi(-0.5)) / 3
    assert activation_penalty(sizes).item() == pytest.approx(expected_a, rel=1e-6)
    # synapses: conv 18 weights x 16 positions = 288, linear 96, last 6 -> S = 390
    assert sizes.synapses[conv] == 288 and sizes.synapses[linear] == 96
    expected_w = 288 / 390 * 0.5 + 96 / 390 * 0.25 + 6 / 390 * 2.0
    assert weight_penalty(sizes).item() == pytest.approx(expected_w, rel=1e-6)


def test_prune_and_activation_sparsity():
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1e-4, 0.5, -2e-4, 1.0], [0.3, -1e-5, 0.2, 0.0]]))
    assert prune(nn.Sequential(layer), 1e-3) == pytest.approx(4 / 8)
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[0].bias.zero_()
    assert activation_sparsity(model, torch.tensor([[1.0], [2.0], [-1.0]])) == pytest.approx(3 / 6)


def test_finetuning_increases_sparsity(mnist, small_dense_model):
    import copy

    from neurodeploy.data import Split

    model = copy.deepcopy(small_dense_model)
    record = finetune_sparsity(model, Split(mnist.train.images[:3000], mnist.train.labels[:3000]),
                               SparsityConfig(epochs=2, lambda_a=2.0, lambda_w=5.0, prune_threshold=5e-3),
                               progress=False)
    before, after = record["before"], record["after"]
    assert after["activation_sparsity"] > before["activation_sparsity"]
    assert after["weight_sparsity"] > before["weight_sparsity"]
    assert after["combined_sparsity"] == pytest.approx(
        1 - (1 - after["activation_sparsity"]) * (1 - after["weight_sparsity"]))
