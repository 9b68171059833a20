"""Output hardening: how much of the model's belief a caller sees.

Less detail makes membership inference and extraction harder (DESIGN §4): rounded
probabilities, the top-k classes, or the label alone. A language model's text leaves with
every identifier span the span finder sees in it replaced by a typed placeholder.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from bastion.inference.config import OutputMode

__all__ = ["OutputMode", "harden", "redacted_text"]


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


def redacted_text(tokens: list[str]) -> tuple[str, Counter[str]]:
    """The tokens a language model wrote, as text, each identifier span (found in the text
    the tokens make, :func:`bastion.train.text.render`) replaced by ``[ENTITY]`` over the
    tokens it covers; and how many of each entity were replaced."""
    from bastion.data.pii.spans import find_spans  # noqa: PLC0415
    from bastion.train.text import render  # noqa: PLC0415

    text, starts = render(tokens)
    ends = [start + len(token) for start, token in zip(starts, tokens, strict=True)]
    counts: Counter[str] = Counter()
    kept: list[str] = []
    index = 0
    spans = sorted(find_spans(text), key=lambda span: span.start)
    for span in spans:
        while index < len(tokens) and ends[index] <= span.start:
            kept.append(tokens[index])
            index += 1
        covered = index
        while covered < len(tokens) and starts[covered] < span.end:
            covered += 1
        if covered > index:
            kept.append(f"[{span.entity.value.upper()}]")
            counts[span.entity.value] += 1
            index = covered
    kept.extend(tokens[index:])
    return render(kept)[0], counts
