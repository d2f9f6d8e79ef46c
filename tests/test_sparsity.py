"""Phase-1 sparsity penalties against hand-computed values, pruning, and a short fine-tuning run."""

import math

import pytest
import torch
import torch.nn as nn

from neurodeploy.data import Split
from neurodeploy.train.sparsity import (
    SparsityConfig,
    activation_penalty,
    activation_sparsity,
    distillation_targets,
    finetune_sparsity,
    measure_sizes,
    prune,
    weight_penalty,
)
from neurodeploy.train.trainer import train_epoch


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


def test_distillation_targets_by_hand():
    """Original logits [0, ln 3]: softmax [1/4, 3/4]; label 0 at weight 1/2: targets [5/8, 3/8]. A model with
    logits [ln 3, 0] (softmax [3/4, 1/4]) has cross-entropy -(5/8 ln 3/4 + 3/8 ln 1/4) = 0.699662 nats against
    them and gradient softmax - targets = [1/8, -1/8] in its logits; at weight 1 the original's own logits
    have gradient 0 (its outputs are the target), at weight 0 the targets are the one-hot label."""
    original = torch.tensor([[0.0, math.log(3.0)]])
    label = torch.tensor([0])
    targets = distillation_targets(label, original, 0.5)
    assert targets[0].tolist() == pytest.approx([0.625, 0.375])
    logits = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    loss = torch.nn.functional.cross_entropy(logits, targets)
    loss.backward()
    assert loss.item() == pytest.approx(-(0.625 * math.log(0.75) + 0.375 * math.log(0.25)), rel=1e-6)
    assert loss.item() == pytest.approx(0.699662, abs=1e-6)
    assert logits.grad[0].tolist() == pytest.approx([0.125, -0.125], abs=1e-6)
    same = original.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(same, distillation_targets(label, original, 1.0)).backward()
    assert same.grad.abs().max().item() < 1e-7
    assert distillation_targets(label, original, 0.0).tolist() == [[1.0, 0.0]]
    with pytest.raises(ValueError, match="distill"):
        distillation_targets(label, original, 1.5)


def test_train_epoch_against_targets_by_hand():
    """A linear layer at zero (softmax [1/2, 1/2]) on two items x = 1 with targets [1, 0] and [1/4, 3/4]:
    the mean gradient in the bias (and the weight, x = 1) is mean(softmax - targets) = [-1/8, 1/8], so one SGD
    step at lr 0.1 moves both to [0.0125, -0.0125]; the returned cross-entropy is ln 2 for both items."""
    layer = nn.Linear(1, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    fit = Split(torch.ones(2, 1), torch.tensor([1, 1]))  # the labels say class 1: the targets must win
    targets = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    loss = train_epoch(layer, fit, torch.optim.SGD(layer.parameters(), lr=0.1), 2, torch.Generator().manual_seed(0),
                       targets=targets)
    assert loss == pytest.approx(math.log(2.0), rel=1e-6)
    assert layer.bias.tolist() == pytest.approx([0.0125, -0.0125], abs=1e-7)
    assert layer.weight.flatten().tolist() == pytest.approx([0.0125, -0.0125], abs=1e-7)


def test_finetuning_increases_sparsity(mnist, small_dense_model):
    import copy

    model = copy.deepcopy(small_dense_model)
    record = finetune_sparsity(model, Split(mnist.train.images[:3000], mnist.train.labels[:3000]),
                               SparsityConfig(epochs=2, lambda_a=2.0, lambda_w=5.0, prune_threshold=5e-3),
                               progress=False)
    before, after = record["before"], record["after"]
    assert after["activation_sparsity"] > before["activation_sparsity"]
    assert after["weight_sparsity"] > before["weight_sparsity"]
    assert after["combined_sparsity"] == pytest.approx(
        1 - (1 - after["activation_sparsity"]) * (1 - after["weight_sparsity"]))
