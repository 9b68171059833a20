"""A user's own text model, as a code package would hold it: PyTorch's multi-head attention
(which Opacus's validator swaps for its DP multi-head attention under DP-SGD)."""

from __future__ import annotations

import torch
from torch import nn


class NoteModel(nn.Module):
    def __init__(self, vocab_size: int, length: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 32)
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids.long())
        mixed, _ = self.attention(h, h, h, need_weights=False)
        out: torch.Tensor = self.head(mixed.mean(dim=1))
        return out


def build(*, input_shape: tuple[int, ...], classes: int, vocab_size: int) -> nn.Module:
    return NoteModel(vocab_size, input_shape[0], classes)
