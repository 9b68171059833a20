"""Metric charts for the run page: a series scaled into an SVG polyline (pure arithmetic)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HEIGHT", "WIDTH", "Chart", "line_chart"]

WIDTH = 360
HEIGHT = 140
_PAD = 6


@dataclass(frozen=True)
class Chart:
    """One metric: the polyline's points in a WIDTH x HEIGHT box, and the numbers to print."""

    name: str
    points: str
    first_step: int
    last_step: int
    low: float
    high: float
    last: float
    count: int


def line_chart(name: str, samples: list[tuple[int, float]]) -> Chart:
    """Scale ``(step, value)`` samples (in step order) to fit the box, y growing upwards."""
    if not samples:
        raise ValueError(f"metric {name!r} has no samples to draw")
    steps = [step for step, _ in samples]
    values = [value for _, value in samples]
    low, high = min(values), max(values)
    span_x = (steps[-1] - steps[0]) or 1
    span_y = (high - low) or 1.0
    inner_w, inner_h = WIDTH - 2 * _PAD, HEIGHT - 2 * _PAD
    points = " ".join(
        f"{_PAD + (step - steps[0]) / span_x * inner_w:.1f},"
        f"{_PAD + inner_h - (value - low) / span_y * inner_h:.1f}"
        for step, value in samples
    )
    return Chart(
        name=name,
        points=points,
        first_step=steps[0],
        last_step=steps[-1],
        low=low,
        high=high,
        last=values[-1],
        count=len(samples),
    )
