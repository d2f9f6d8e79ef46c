"""ANN training: SGD with momentum and a cosine learning-rate schedule, best-validation checkpoint."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from neurodeploy.data.datasets import Split


@dataclass
class TrainConfig:
    """epochs, batch size, SGD learning rate / momentum / weight decay, validation fraction of the
    training split, and the seed that fixes initialization, shuffling and the validation split."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    val_fraction: float = 0.1
    seed: int = 0


def evaluate_accuracy(model: nn.Module, split: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``split`` as a fraction in [0, 1]."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            logits = model(split.images[start:start + batch_size])
            correct += int((logits.argmax(1) == split.labels[start:start + batch_size]).sum())
    return correct / max(len(split), 1)


def split_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    n_val = int(round(fraction * len(train)))
    val, fit = order[:n_val], order[n_val:]
    return Split(train.images[fit], train.labels[fit]), Split(train.images[val], train.labels[val])


def train_epoch(model: nn.Module, fit: Split, optimizer: torch.optim.Optimizer, batch_size: int,
                generator: torch.Generator, penalty: Callable[[], torch.Tensor] | None = None,
                after_step: Callable[[], None] | None = None, max_grad_norm: float | None = None,
                targets: torch.Tensor | None = None, frozen_norms: bool = False) -> float:
    """One shuffled pass of SGD over ``fit`` with cross-entropy (plus ``penalty()`` when given); calls
    ``after_step`` after every optimizer step. With ``max_grad_norm``, the gradients of all parameters are
    scaled before each step so that their global L2 norm is at most that value
    (``torch.nn.utils.clip_grad_norm_``). With ``targets`` (float ``[len(fit), classes]``, each row class
    probabilities summing to 1) the cross-entropy is taken against those instead of ``fit.labels``. With
    ``frozen_norms`` the batch norms stay in eval mode: they normalize with their running statistics and do
    not update them (their scale and bias are still trained).
    Returns the mean cross-entropy (nats per item)."""
    model.train()
    if frozen_norms:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    order = torch.randperm(len(fit), generator=generator)
    total = 0.0
    for i in range(0, len(fit), batch_size):
        index = order[i:i + batch_size]
        if index.numel() < 2:
            continue  # batch norm needs two samples
        wanted = fit.labels[index] if targets is None else targets[index]
        cross_entropy = F.cross_entropy(model(fit.images[index]), wanted)
        loss = cross_entropy if penalty is None else cross_entropy + penalty()
        optimizer.zero_grad()
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if after_step is not None:
            after_step()
        total += cross_entropy.item() * index.numel()
    return total / len(fit)


def train_model(model: nn.Module, train: Split, config: TrainConfig, progress: bool = True) -> dict:
    """Trains ``model`` in place and loads the weights of the epoch with the best validation accuracy.
    Returns the training record (per-epoch loss and validation accuracy, best epoch, wall time)."""
    torch.manual_seed(config.seed)
    fit, val = split_validation(train, config.val_fraction, config.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    steps = config.epochs * ((len(fit) + config.batch_size - 1) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    generator = torch.Generator().manual_seed(config.seed)
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    history = []
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc="training", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        loss = train_epoch(model, fit, optimizer, config.batch_size, generator, after_step=scheduler.step)
        accuracy = evaluate_accuracy(model, val) if len(val) else 0.0
        history.append({"epoch": epoch + 1, "loss": loss, "val_accuracy": accuracy})
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{accuracy:.4f}")
        if accuracy > best[0]:
            best = (accuracy, epoch + 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    return {"history": history, "best_epoch": best[1], "val_accuracy": best[0],
            "train_wall_time_s": time.perf_counter() - start, "config": config.__dict__}
