"""A residual MLP: blocks of Linear-ReLU-Linear added to their input, then a linear head.

Bastion calls ``build(input_shape=..., classes=...)`` and keeps the training loop: DP-SGD,
adversarial training, checkpoints, evaluation and sealing apply unchanged. Every layer is
one Opacus can make private (no BatchNorm). ``features(x)`` exposes the penultimate layer,
which the backdoor scan and the inference server's OOD detector read.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.inner(x))


class TabularResNet(nn.Module):
    def __init__(self, inputs: int, classes: int, *, width: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.ReLU())
        self.blocks = nn.Sequential(*(Block(width) for _ in range(blocks)))
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(*, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    return TabularResNet(math.prod(input_shape), classes)
