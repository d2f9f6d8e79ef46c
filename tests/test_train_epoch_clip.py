"""``train_epoch(..., max_grad_norm=)``: the gradients' global norm is clipped before the step."""

import torch
import torch.nn as nn

from neurodeploy.data.datasets import Split
from neurodeploy.train.trainer import train_epoch


def _one_step(max_grad_norm):
    """A 2 -> 2 linear layer with zero weights, two items x = (1, 0) of class 0, one SGD step of lr 1.
    Logits 0 -> softmax (1/2, 1/2), d(mean cross-entropy)/dW = [[-1/2, 0], [1/2, 0]]: global norm 1/sqrt(2)."""
    model = nn.Linear(2, 2, bias=False)
    nn.init.zeros_(model.weight)
    fit = Split(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 0]))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    train_epoch(model, fit, optimizer, 2, torch.Generator().manual_seed(0), max_grad_norm=max_grad_norm)
    return model.weight.detach()


def test_the_step_is_clipped_to_the_global_norm():
    torch.testing.assert_close(_one_step(None), torch.tensor([[0.5, 0.0], [-0.5, 0.0]]))
    # clipped to 0.1: the gradient scaled by 0.1 / (1/sqrt(2)), so W[0, 0] = 0.5 * 0.1 * sqrt(2) = 0.0707...
    clipped = 0.1 / 2 ** 0.5
    torch.testing.assert_close(_one_step(0.1), torch.tensor([[clipped, 0.0], [-clipped, 0.0]]), rtol=1e-5, atol=1e-6)
    # above the norm: unchanged
    torch.testing.assert_close(_one_step(1.0), torch.tensor([[0.5, 0.0], [-0.5, 0.0]]))
