"""Output hardening: how much of the model's belief a caller sees.

Less detail makes membership inference and extraction harder (DESIGN §4): rounded
probabilities, the top-k classes, or the label alone.
"""

from __future__ import annotations

from typing import Any

import torch

from bastion.inference.config import OutputMode

__all__ = ["OutputMode", "harden"]


def harden(
    probabilities: torch.Tensor,
    *,
    classes: list[str],
    mode: OutputMode,
    top_k: int = 3,
    digits: int = 2,
) -> list[dict[str, Any]]:
    """One prediction per row, with only what ``mode`` allows."""
    labels = probabilities.argmax(dim=1).tolist()
    rows = probabilities.tolist()
    out: list[dict[str, Any]] = []
    for label, row in zip(labels, rows, strict=True):
        prediction: dict[str, Any] = {"label": classes[label]}
        if mode is OutputMode.PROBABILITIES:
            prediction["probabilities"] = dict(zip(classes, row, strict=True))
        elif mode is OutputMode.ROUNDED:
            prediction["probabilities"] = {
                c: round(p, digits) for c, p in zip(classes, row, strict=True)
            }
        elif mode is OutputMode.TOP_K:
            ranked = sorted(range(len(row)), key=lambda i: row[i], reverse=True)[:top_k]
            prediction["top_k"] = [
                {"label": classes[i], "probability": round(row[i], digits)} for i in ranked
            ]
        out.append(prediction)
    return out
