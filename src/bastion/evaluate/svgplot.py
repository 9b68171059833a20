"""Plots as SVG text, drawn in pure Python: the model card's figures.

Line plots (several series, linear or log10 axes), horizontal bars with error bars, and a
heat map with its colour bar. Every text is XML-escaped (feature names come from users).
A drawing depends only on its input (no ids, no dates, coordinates rounded to 0.1 px) and
holds no script, no style sheet and no external resource, only presentation attributes:
it renders inline under the standalone card's CSP and as an ``<img>`` under the
dashboard's.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import escape

__all__ = [
    "COLOURS",
    "GREY",
    "Axis",
    "Bar",
    "Scale",
    "Series",
    "bar_plot",
    "heat_map",
    "line_plot",
    "linear_ticks",
    "log_ticks",
    "tick_labels",
]

WIDTH = 520
#: The "tab10" colour cycle: ten colours told apart at a glance.
COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
GREY = "#7f7f7f"
_INK = "#1d2329"
_GRID = "#e4e7ec"
_FONT = 11
_CHAR = 6.4  # the mean advance of an 11 px sans-serif character, for layout only
_TITLE_H = 30
_TICK_H = 20  # below the x axis: a tick label
_LABEL_H = 18  # then the axis label
_LEGEND_ROW = 16
_MAX_LABEL = 28  # bar labels longer than this are cut (the card lists them whole)
_MAX_CELLS = 64  # a heat map side longer than this is averaged down to it
#: viridis at five stops; colours between are interpolated.
_VIRIDIS = (
    (0x44, 0x01, 0x54),
    (0x3B, 0x52, 0x8B),
    (0x21, 0x91, 0x8C),
    (0x5E, 0xC9, 0x62),
    (0xFD, 0xE7, 0x25),
)


class Scale(enum.StrEnum):
    LINEAR = "linear"
    LOG = "log"  # base 10; values at or below zero are drawn at the axis' low end


@dataclass(frozen=True)
class Axis:
    """An axis' label, scale and range (``None``: taken from the data)."""

    label: str
    scale: Scale = Scale.LINEAR
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Series:
    """One line of a line plot, drawn in the given order; non-finite points are left out."""

    label: str
    points: Sequence[tuple[float, float]]
    colour: str | None = None  # None: the next colour of COLOURS
    dashed: bool = False
    markers: bool = False


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: its label, its value and the half-width of its error bar."""

    label: str
    value: float
    error: float = 0.0


# -- numbers ---------------------------------------------------------------------------------


def _clean(value: float) -> float:
    """``value`` without float noise (0.30000000000000004) or a negative zero."""
    rounded = round(value, 12)
    return 0.0 if rounded == 0 else rounded


def _nice_step(raw: float) -> float:
    """The round step (1, 2, 2.5 or 5 times a power of ten) nearest to ``raw``."""
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor, below in ((1.0, 1.5), (2.0, 2.25), (2.5, 3.5), (5.0, 7.5)):
        if raw / magnitude < below:
            return factor * magnitude
    return 10.0 * magnitude


def linear_ticks(low: float, high: float, *, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2, 2.5 or 5 times a power of ten apart) in
    ``[low, high]``; just ``[low]`` when the range is empty."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [_clean(low)]
    step = _nice_step((high - low) / max(count, 1))
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [_clean(index * step) for index in range(first, last + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """The powers of ten in ``[low, high]`` (both above zero); the ends if none is."""
    if not (0 < low <= high and math.isfinite(high)):
        return []
    first = math.ceil(math.log10(low) - 1e-9)
    last = math.floor(math.log10(high) + 1e-9)
    found = [_clean(10.0**power) for power in range(first, last + 1)]
    return found or [low, high]


def tick_labels(ticks: Sequence[float], scale: Scale = Scale.LINEAR) -> list[str]:
    """Labels with as many decimals as the ticks need, alike for all (0.0, 0.5, 1.0); on a
    log axis each power of ten as short as it goes (0.001, 0.01, 1)."""
    if not ticks:
        return []
    if scale is Scale.LOG:
        return [f"{t:g}" for t in ticks]
    decimals = 0
    while decimals < 12 and any(
        abs(round(t, decimals) - t) > 1e-9 * max(1.0, abs(t)) for t in ticks
    ):
        decimals += 1
    if decimals > 6 or max(abs(t) for t in ticks) >= 1e7:
        return [f"{t:.3g}" for t in ticks]
    return [f"{t:.{decimals}f}" for t in ticks]


def _px(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


# -- drawing ---------------------------------------------------------------------------------


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    size: int = _FONT,
    bold: bool = False,
    rotate: bool = False,
) -> str:
    extra = ' font-weight="600"' if bold else ""
    if size != _FONT:
        extra += f' font-size="{size}"'
    if rotate:
        extra += f' transform="rotate(-90 {_px(x)} {_px(y)})"'
    return (
        f'<text x="{_px(x)}" y="{_px(y)}" text-anchor="{anchor}" fill="{_INK}"{extra}>'
        f"{escape(text)}</text>"
    )


def _line(
    x1: float, y1: float, x2: float, y2: float, *, colour: str = _INK, extra: str = ""
) -> str:
    return (
        f'<line x1="{_px(x1)}" y1="{_px(y1)}" x2="{_px(x2)}" y2="{_px(y2)}" '
        f'stroke="{colour}"{extra}/>'
    )


def _rect(x: float, y: float, width: float, height: float, *, fill: str, extra: str = "") -> str:
    return (
        f'<rect x="{_px(x)}" y="{_px(y)}" width="{_px(width)}" height="{_px(height)}" '
        f'fill="{fill}"{extra}/>'
    )


def _document(width: float, height: float, title: str, body: list[str]) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_px(width)}" height="{_px(height)}" '
        f'viewBox="0 0 {_px(width)} {_px(height)}" role="img" aria-label="{escape(title)}" '
        f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="{_FONT}">'
    )
    return "\n".join(
        [
            head,
            f"<title>{escape(title)}</title>",
            _rect(0, 0, width, height, fill="#ffffff"),
            _text(width / 2, 19, title, anchor="middle", size=13, bold=True),
            *body,
            "</svg>",
        ]
    )


@dataclass(frozen=True)
class _Mapping:
    """Data values to pixels along one axis (clamped to the axis' range)."""

    low: float
    high: float
    scale: Scale
    start: float  # the pixel of ``low``
    end: float  # the pixel of ``high``

    def _position(self, value: float) -> float:
        if self.scale is Scale.LOG:
            return math.log10(max(value, self.low))
        return value

    def __call__(self, value: float) -> float:
        value = min(max(value, self.low), self.high)
        low, high = self._position(self.low), self._position(self.high)
        share = (self._position(value) - low) / ((high - low) or 1.0)
        return self.start + share * (self.end - self.start)

    def ticks(self) -> list[tuple[float, str]]:
        """Where the ticks go, with their labels."""
        found = (
            log_ticks(self.low, self.high)
            if self.scale is Scale.LOG
            else linear_ticks(self.low, self.high)
        )
        return list(zip(found, tick_labels(found, self.scale), strict=True))


def _range(axis: Axis, values: Sequence[float]) -> tuple[float, float]:
    """The axis' range: as given, else the data's (padded when it is one value)."""
    usable = [v for v in values if math.isfinite(v) and (axis.scale is Scale.LINEAR or v > 0)]
    default = (1e-3, 1.0) if axis.scale is Scale.LOG else (0.0, 1.0)
    low = axis.low if axis.low is not None else (min(usable) if usable else default[0])
    high = axis.high if axis.high is not None else (max(usable) if usable else default[1])
    if axis.scale is Scale.LOG:
        low = low if low > 0 else default[0]
        high = max(high, low)
        if high == low:
            low, high = low / 10, high * 10
    elif high <= low:
        pad = abs(low) * 0.1 or 0.5
        low, high = (low - pad, high + pad) if axis.low is None else (low, low + 2 * pad)
    return low, high


def _finite(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def _x_axis(mapping: _Mapping, *, top: float, bottom: float, label: str) -> list[str]:
    out = []
    for tick, text in mapping.ticks():
        x = mapping(tick)
        out.append(_line(x, top, x, bottom, colour=_GRID))
        out.append(_line(x, bottom, x, bottom + 4))
        out.append(_text(x, bottom + 15, text, anchor="middle"))
    middle = (mapping.start + mapping.end) / 2
    out.append(_text(middle, bottom + _TICK_H + 13, label, anchor="middle"))
    return out


def _y_axis(mapping: _Mapping, *, left: float, right: float, label: str) -> list[str]:
    out = []
    for tick, text in mapping.ticks():
        y = mapping(tick)
        out.append(_line(left, y, right, y, colour=_GRID))
        out.append(_line(left - 4, y, left, y))
        out.append(_text(left - 6, y + 4, text, anchor="end"))
    middle = (mapping.start + mapping.end) / 2
    out.append(_text(13, middle, label, anchor="middle", rotate=True))
    return out


def _widest(labels: Sequence[str]) -> float:
    return max((len(label) for label in labels), default=0) * _CHAR


def line_plot(*, title: str, series: Sequence[Series], x: Axis, y: Axis) -> str:
    """Lines (with markers where asked) on linear or log axes, a legend below the plot."""
    drawn = [(s, _finite(s.points)) for s in series]
    x_low, x_high = _range(x, [px for _, points in drawn for px, _ in points])
    y_low, y_high = _range(y, [py for _, points in drawn for _, py in points])
    top = _TITLE_H
    bottom = top + 240
    ys = _Mapping(y_low, y_high, y.scale, bottom, top)
    left = 24 + _widest([text for _, text in ys.ticks()]) + 8
    right = WIDTH - 18
    xs = _Mapping(x_low, x_high, x.scale, left, right)
    body = [
        *_x_axis(xs, top=top, bottom=bottom, label=x.label),
        *_y_axis(ys, left=left, right=right, label=y.label),
    ]
    legend_top = bottom + _TICK_H + _LABEL_H + 8
    for index, (one, points) in enumerate(drawn):
        colour = one.colour or COLOURS[index % len(COLOURS)]
        dash = ' stroke-dasharray="6 4"' if one.dashed else ""
        coordinates = " ".join(f"{_px(xs(px))},{_px(ys(py))}" for px, py in points)
        if coordinates:
            body.append(
                f'<polyline points="{coordinates}" fill="none" stroke="{colour}" '
                f'stroke-width="1.8"{dash}/>'
            )
        if one.markers:
            body.extend(
                f'<circle cx="{_px(xs(px))}" cy="{_px(ys(py))}" r="3" fill="{colour}"/>'
                for px, py in points
            )
        row = legend_top + index * _LEGEND_ROW
        body.append(
            _line(
                left, row - 4, left + 24, row - 4, colour=colour, extra=f' stroke-width="1.8"{dash}'
            )
        )
        body.append(_text(left + 30, row, one.label))
    body.append(
        _rect(left, top, right - left, bottom - top, fill="none", extra=f' stroke="{_INK}"')
    )
    height = legend_top + len(drawn) * _LEGEND_ROW
    return _document(WIDTH, height, title, body)


def bar_plot(*, title: str, bars: Sequence[Bar], x_label: str) -> str:
    """Horizontal bars, the first at the top, with error bars and a line at zero."""
    shown = [b for b in bars if math.isfinite(b.value)]
    labels = [
        b.label if len(b.label) <= _MAX_LABEL else b.label[: _MAX_LABEL - 1] + "…" for b in shown
    ]
    errors = [abs(b.error) if math.isfinite(b.error) else 0.0 for b in shown]
    ends = [b.value - e for b, e in zip(shown, errors, strict=True)]
    ends += [b.value + e for b, e in zip(shown, errors, strict=True)]
    low, high = min([0.0, *ends]), max([0.0, *ends])
    pad = (high - low) * 0.05
    low, high = _range(Axis(x_label), [low - pad if low < 0 else low, high + pad])
    left = 12 + _widest(labels)
    right, top = WIDTH - 18, _TITLE_H
    row_h = 22
    bottom = top + max(len(shown), 1) * row_h + 8
    xs = _Mapping(low, high, Scale.LINEAR, left, right)
    body = _x_axis(xs, top=top, bottom=bottom, label=x_label)
    for index, (bar, label, error) in enumerate(zip(shown, labels, errors, strict=True)):
        middle = top + 4 + index * row_h + row_h / 2
        start, end = sorted((xs(0.0), xs(bar.value)))
        body.append(_rect(start, middle - 7, end - start, 14, fill=COLOURS[0]))
        body.append(_text(left - 6, middle + 4, label, anchor="end"))
        if error > 0:
            a, b = xs(bar.value - error), xs(bar.value + error)
            body.append(_line(a, middle, b, middle))
            body.append(_line(a, middle - 4, a, middle + 4))
            body.append(_line(b, middle - 4, b, middle + 4))
    body.append(_line(xs(0.0), top, xs(0.0), bottom))
    body.append(
        _rect(left, top, right - left, bottom - top, fill="none", extra=f' stroke="{_INK}"')
    )
    return _document(WIDTH, bottom + _TICK_H + _LABEL_H + 6, title, body)


def _colour(share: float) -> str:
    """viridis at ``share`` (0 to 1)."""
    share = min(max(share, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    index = min(int(share), len(_VIRIDIS) - 2)
    within = share - index
    low, high = _VIRIDIS[index], _VIRIDIS[index + 1]
    red, green, blue = (round(a + (b - a) * within) for a, b in zip(low, high, strict=True))
    return f"#{red:02x}{green:02x}{blue:02x}"


def _shrink(grid: Sequence[Sequence[float]]) -> list[list[float]]:
    """The grid averaged down in square blocks until no side is longer than _MAX_CELLS."""
    rows, columns = len(grid), max((len(row) for row in grid), default=0)
    factor = max(1, math.ceil(max(rows, columns) / _MAX_CELLS))
    out = []
    for top in range(0, rows, factor):
        line = []
        for start in range(0, columns, factor):
            block = [
                value
                for row in grid[top : top + factor]
                for value in row[start : start + factor]
                if math.isfinite(value)
            ]
            line.append(sum(block) / len(block) if block else math.nan)
        out.append(line)
    return out


def heat_map(*, title: str, grid: Sequence[Sequence[float]], colour_label: str) -> str:
    """A grid of values as coloured cells (first row at the top), with its colour bar."""
    cells = _shrink(grid)
    values = [v for row in cells for v in row if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    side = 240
    count = max(len(cells), max((len(row) for row in cells), default=0), 1)
    size = side / count
    left, top = (WIDTH - side) / 2 - 40, _TITLE_H + 6
    body = []
    for r, row in enumerate(cells):
        for c, value in enumerate(row):
            fill = _colour((value - low) / ((high - low) or 1.0)) if math.isfinite(value) else GREY
            body.append(_rect(left + c * size, top + r * size, size + 0.2, size + 0.2, fill=fill))
    bar_left, stripes = left + side + 24, 48
    for index in range(stripes):  # the colour bar, high at the top
        share = 1 - (index + 0.5) / stripes
        body.append(
            _rect(
                bar_left,
                top + index * side / stripes,
                14,
                side / stripes + 0.2,
                fill=_colour(share),
            )
        )
    scale = _Mapping(low, high if high > low else low + 1.0, Scale.LINEAR, top + side, top)
    ticks = scale.ticks()
    for tick, text in ticks:
        y = scale(tick)
        body.append(_line(bar_left + 14, y, bar_left + 18, y))
        body.append(_text(bar_left + 21, y + 4, text))
    label_x = bar_left + 26 + _widest([text for _, text in ticks]) + 10
    body.append(_text(label_x, top + side / 2, colour_label, anchor="middle", rotate=True))
    body.append(_rect(bar_left, top, 14, side, fill="none", extra=f' stroke="{_INK}"'))
    return _document(WIDTH, top + side + 14, title, body)
