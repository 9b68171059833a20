"""Metric charts for the run page: a series scaled into an SVG box with its axes (pure
arithmetic; the run template draws it)."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.evaluate.svgplot import linear_ticks, tick_labels

__all__ = [
    "BOX",
    "HEIGHT",
    "METRIC_UNITS",
    "WIDTH",
    "Box",
    "Chart",
    "Tick",
    "axis_label",
    "line_chart",
]


@dataclass(frozen=True)
class Box:
    """A chart's drawing (width x height) and its plot area (left to right, top to bottom);
    around the plot area, the tick labels and the axes' names."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float


BOX = Box(width=360, height=180, left=52, right=352, top=8, bottom=142)
WIDTH, HEIGHT = BOX.width, BOX.height

#: What the metrics Bastion's jobs report measure; a metric not named here is unitless.
METRIC_UNITS: dict[str, str | None] = {
    "loss": None,
    "accuracy": "fraction",
    "epsilon": "cumulative",  # the privacy budget spent so far
}


@dataclass(frozen=True)
class Tick:
    """A tick: where it is along its axis (pixels in the box) and its label."""

    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    """One metric: the polyline's points in a WIDTH x HEIGHT box, its axes' ticks and
    names, and the numbers to print."""

    name: str
    y_label: str
    points: str
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    first_step: int
    last_step: int
    low: float
    high: float
    last: float
    count: int
    box: Box = BOX


def axis_label(name: str) -> str:
    """The y axis' name: the metric, with its unit where one is known (``accuracy
    (fraction)``)."""
    unit = METRIC_UNITS.get(name)
    return f"{name} ({unit})" if unit else name


def line_chart(name: str, samples: list[tuple[int, float]]) -> Chart:
    """Scale ``(step, value)`` samples (in step order) to fit the plot area, y growing
    upwards, with ticks at round steps (integers) and round values."""
    if not samples:
        raise ValueError(f"metric {name!r} has no samples to draw")
    steps = [step for step, _ in samples]
    values = [value for _, value in samples]
    low, high = min(values), max(values)
    span_x = (steps[-1] - steps[0]) or 1

    def x_of(step: float) -> float:
        return BOX.left + (step - steps[0]) / span_x * (BOX.right - BOX.left)

    def y_of(value: float) -> float:
        if high == low:  # a flat series runs through the middle
            return (BOX.top + BOX.bottom) / 2
        return BOX.bottom - (value - low) / (high - low) * (BOX.bottom - BOX.top)

    points = " ".join(f"{x_of(step):.1f},{y_of(value):.1f}" for step, value in samples)
    x_at = [t for t in linear_ticks(steps[0], steps[-1]) if t == int(t)]
    y_at = linear_ticks(low, high) if high > low else [low]
    return Chart(
        name=name,
        y_label=axis_label(name),
        points=points,
        x_ticks=tuple(Tick(round(x_of(t), 1), str(int(t))) for t in x_at),
        y_ticks=tuple(
            Tick(round(y_of(t), 1), text) for t, text in zip(y_at, tick_labels(y_at), strict=True)
        ),
        first_step=steps[0],
        last_step=steps[-1],
        low=low,
        high=high,
        last=values[-1],
        count=len(samples),
    )
