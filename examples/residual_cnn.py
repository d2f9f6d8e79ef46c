"""A small residual CNN written the way a user writes one (BatchNorm, ``F.relu``, a residual add,
``AdaptiveAvgPool2d``, a Linear head), trained 2 epochs on the embedded MNIST digits with a plain PyTorch
loop (not the project's trainer) and saved as a ``torch.export`` program: the model of issue 33, the
network a user brings to ``neurodeploy run --model FILE.pt2``.

    python examples/residual_cnn.py results/residual_cnn.pt2     # trains (seconds) and saves
    python examples/residual_cnn.py wide.pt2 --width 24 --pool 1   # a wider variant with global pooling
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.data import load_dataset


class ResidualCNN(nn.Module):
    """conv3x3x8 -> conv3x3x``width`` stride 2 -> residual block (two conv3x3x``width``, the add after the
    second BatchNorm) -> AdaptiveAvgPool2d(``pool``) -> Linear(``width * pool**2``, 10)."""

    def __init__(self, width: int = 16, pool: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv4 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Linear(width * pool**2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        y = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(x + self.bn4(self.conv4(y)))
        return self.head(torch.flatten(self.pool(x), 1))


def train(epochs: int = 2, seed: int = 0, lr: float = 1e-3, batch_size: int = 64, width: int = 16, pool: int = 2
          ) -> ResidualCNN:
    """The model trained ``epochs`` epochs on the embedded MNIST training digits (Adam, cross entropy)."""
    torch.manual_seed(seed)
    train_split = load_dataset().train
    model = ResidualCNN(width, pool)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_split), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model(train_split.images[index]), train_split.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def save_exported(model: nn.Module, path: str | Path) -> Path:
    """``model`` as a torch.export program at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = load_dataset().train.images[:1].clone()
    torch.export.save(torch.export.export(model, (example,)), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="results/residual_cnn.pt2")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=16, help="channels of the residual block")
    parser.add_argument("--pool", type=int, default=2, help="output size of the AdaptiveAvgPool2d")
    args = parser.parse_args()
    save_exported(train(args.epochs, args.seed, width=args.width, pool=args.pool), args.out)


if __name__ == "__main__":
    main()
