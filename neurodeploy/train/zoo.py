"""Seed architectures (Dutson et al.'s dense and conv MNIST and conv CIFAR models, a small ResNet and a
ResNet-20-style network). Every weighted layer but the last is followed by BatchNorm and ReLU;
convolutions use "same" padding."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from neurodeploy.errors import ConfigError


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def _dense_block(n_in: int, n_out: int) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU()]


def dense_mnist(input_shape: tuple[int, ...] = (1, 28, 28), n_classes: int = 10, hidden: int = 128) -> nn.Module:
    """FC128-FC128-FC10."""
    n_in = 1
    for size in input_shape:
        n_in *= size
    return nn.Sequential(nn.Flatten(), *_dense_block(n_in, hidden), *_dense_block(hidden, hidden),
                         nn.Linear(hidden, n_classes))


def conv_mnist(input_shape: tuple[int, ...] = (1, 28, 28), n_classes: int = 10,
               channels: tuple[int, int] = (32, 64), hidden: int = 128) -> nn.Module:
    """conv3x3x32, conv3x3x32, avgpool2, conv3x3x64, conv3x3x64, avgpool2, FC128, FC10. ``channels`` and
    ``hidden`` change the widths only (narrow instances keep the layer structure for quick checks)."""
    c, h, w = input_shape
    c1, c2 = channels
    return nn.Sequential(
        *_conv_block(c, c1), *_conv_block(c1, c1), nn.AvgPool2d(2),
        *_conv_block(c1, c2), *_conv_block(c2, c2), nn.AvgPool2d(2),
        nn.Flatten(), *_dense_block(c2 * (h // 4) * (w // 4), hidden), nn.Linear(hidden, n_classes),
    )


def conv_cifar(input_shape: tuple[int, ...] = (3, 32, 32), n_classes: int = 10) -> nn.Module:
    """3x[conv3x3x64], avgpool2, 3x[conv3x3x128], avgpool2, 3x[conv3x3x256], avgpool2, FC512, FC10/100."""
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for width in (64, 128, 256):
        for _ in range(3):
            layers += _conv_block(c, width)
            c = width
        layers.append(nn.AvgPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), *_dense_block(256 * (h // 8) * (w // 8), 512),
                         nn.Linear(512, n_classes))


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input (or a strided 1x1 conv-BN when the shape changes),
    then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


def resnet_small(input_shape: tuple[int, ...] = (1, 28, 28), n_classes: int = 10) -> nn.Module:
    """A small ResNet: conv3x3x16 stem, residual blocks 16, 32 (stride 2), 64 (stride 2), global
    average pooling, FC10. About 9 M multiply-accumulates per 28 x 28 image."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        ResidualBlock(16, 16, 1), ResidualBlock(16, 32, 2), ResidualBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes),
    )


def resnet20(input_shape: tuple[int, ...] = (1, 28, 28), n_classes: int = 10, blocks: int = 3) -> nn.Module:
    """He et al.'s CIFAR ResNet (6n + 2 layers; n = ``blocks`` = 3 gives ResNet-20): conv3x3x16 stem, three
    stages of ``blocks`` residual blocks with 16, 32 (stride 2) and 64 (stride 2) channels, downsampling
    shortcuts by strided 1x1 conv-BN (option B), global average pooling, FC. About 33 M
    multiply-accumulates per 28 x 28 image."""
    c = input_shape[0]
    layers: list[nn.Module] = [nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c = 16
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        for index in range(blocks):
            layers.append(ResidualBlock(c, width, stride if index == 0 else 1))
            c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "dense_mnist": dense_mnist,
    "conv_mnist": conv_mnist,
    "conv_cifar": conv_cifar,
    "resnet_small": resnet_small,
    "resnet20": resnet20,
}


def build(arch: str, input_shape: tuple[int, ...], n_classes: int, seed: int | None = None) -> nn.Module:
    """Instantiates a zoo architecture; ``seed`` fixes the weight initialization."""
    if seed is not None:
        torch.manual_seed(seed)
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](input_shape=tuple(input_shape), n_classes=n_classes)
