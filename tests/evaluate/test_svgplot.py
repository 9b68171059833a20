"""The card's SVG drawer: round ticks, log axes that take zeros, escaped text, bounded output."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from bastion.evaluate.svgplot import (
    Axis,
    Bar,
    Scale,
    Series,
    bar_plot,
    heat_map,
    line_plot,
    linear_ticks,
    log_ticks,
    tick_labels,
)

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>&'


def _parse(svg: str) -> ET.Element:
    """The drawing as XML (it must be well-formed to render as an image at all)."""
    return ET.fromstring(svg)


def _self_contained(svg: str) -> None:
    assert "<script" not in svg and "href" not in svg and "url(" not in svg
    assert "style" not in svg  # presentation attributes only: no CSP allows inline style here
    assert re.findall(r"https?://[^\"]+", svg) == ["http://www.w3.org/2000/svg"]


@pytest.mark.parametrize(
    ("low", "high", "ticks"),
    [
        (0.0, 1.02, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.0, 0.1, [0.0, 0.02, 0.04, 0.06, 0.08, 0.1]),
        (-0.013, 0.12, [0.0, 0.025, 0.05, 0.075, 0.1]),
        (1.0, 50.0, [10.0, 20.0, 30.0, 40.0, 50.0]),
        (3.0, 3.0, [3.0]),
    ],
)
def test_linear_ticks_are_round_values_inside_the_range(
    low: float, high: float, ticks: list[float]
) -> None:
    assert linear_ticks(low, high) == ticks


def test_tick_labels_share_their_decimals_and_log_ticks_are_powers_of_ten() -> None:
    assert tick_labels([0.0, 0.5, 1.0]) == ["0.0", "0.5", "1.0"]
    assert tick_labels([0.0, 0.025, 0.05]) == ["0.000", "0.025", "0.050"]
    assert tick_labels([10.0, 20.0]) == ["10", "20"]
    assert log_ticks(1e-4, 1.05) == [1e-4, 1e-3, 1e-2, 0.1, 1.0]
    assert tick_labels(log_ticks(1e-4, 1.05), Scale.LOG) == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert log_ticks(2.0, 8.0) == [2.0, 8.0]  # no power of ten inside: the ends
    assert log_ticks(0.0, 1.0) == []


def _polyline(svg: str, index: int = 0) -> list[tuple[float, float]]:
    lines = _parse(svg).findall(f"{SVG}polyline")
    return [
        (float(x), float(y))
        for x, y in (p.split(",") for p in lines[index].attrib["points"].split())
    ]


def test_a_log_axis_takes_zeros_and_the_plot_clamps_to_its_range() -> None:
    log = Axis("rate", Scale.LOG, low=1e-4, high=1.0)
    svg = line_plot(
        title="ROC",
        series=[Series("attack", [(0.0, 0.0), (1e-4, 1e-4), (0.01, 0.3), (1.0, 1.0), (5.0, 9.0)])],
        x=log,
        y=log,
    )
    points = _polyline(svg)
    assert points[0] == points[1]  # zero is drawn at the axis' low end
    assert points[-1] == points[-2]  # beyond the range: at its high end
    xs, ys = zip(*points, strict=True)
    assert xs == tuple(sorted(xs)) and ys == tuple(sorted(ys, reverse=True))  # rising curve
    labels = [t.text for t in _parse(svg).iter(f"{SVG}text")]
    assert {"0.0001", "0.001", "0.01", "0.1", "1"} <= set(labels)
    _self_contained(svg)


def test_non_finite_points_are_left_out_and_an_empty_series_draws_nothing() -> None:
    svg = line_plot(
        title="t",
        series=[Series("a", [(0.0, 1.0), (1.0, math.nan), (2.0, math.inf), (3.0, 2.0)])],
        x=Axis("x"),
        y=Axis("y"),
    )
    assert len(_polyline(svg)) == 2 and "nan" not in svg and "inf" not in svg
    empty = line_plot(title="t", series=[Series("none", [])], x=Axis("x"), y=Axis("y"))
    assert _parse(empty).findall(f"{SVG}polyline") == []


def test_every_text_is_escaped() -> None:
    svg = line_plot(
        title=HOSTILE,
        series=[Series(HOSTILE, [(0.0, 0.0), (1.0, 1.0)], markers=True)],
        x=Axis(HOSTILE),
        y=Axis(HOSTILE),
    )
    bars = bar_plot(title=HOSTILE, bars=[Bar(HOSTILE, 0.1, 0.01)], x_label=HOSTILE)
    heat = heat_map(title=HOSTILE, grid=[[0.0, 1.0]], colour_label=HOSTILE)
    for drawing in (svg, bars, heat):
        _self_contained(drawing)
        assert "&lt;script&gt;" in drawing
        texts = [t.text for t in _parse(drawing).iter() if t.text and "script" in t.text]
        assert texts and all(text.startswith('<script>alert("x")</script>') for text in texts)


def test_bars_run_top_down_with_error_bars_and_long_labels_cut() -> None:
    long_name = "a_feature_name_far_longer_than_any_label_should_be"
    svg = bar_plot(
        title="importance",
        bars=[Bar("first", 0.3, 0.05), Bar(long_name, -0.02, 0.01), Bar("third", 0.1)],
        x_label="drop",
    )
    root = _parse(svg)
    labels = [t.text or "" for t in root.iter(f"{SVG}text")]
    first, second = labels.index("first"), next(i for i, t in enumerate(labels) if t.endswith("…"))
    assert first < second and long_name not in svg and len(labels[second]) == 28
    bars = [r for r in root.iter(f"{SVG}rect") if r.attrib["fill"] == "#1f77b4"]
    assert len(bars) == 3
    widths = [float(r.attrib["width"]) for r in bars]
    assert widths[0] > widths[2] > widths[1] > 0  # 0.3, 0.1, then |-0.02|


def test_a_heat_map_has_a_cell_per_value_and_is_bounded_for_large_grids() -> None:
    small = heat_map(title="t", grid=[[0.0, 0.5], [1.0, math.nan]], colour_label="v")
    root = _parse(small)
    fills = [r.attrib["fill"] for r in root.iter(f"{SVG}rect")]
    assert "#440154" in fills and "#fde725" in fills  # viridis' ends: the low and the high cell
    assert "#7f7f7f" in fills  # a missing value is grey
    big = heat_map(
        title="t", grid=[[float(r * c) for c in range(300)] for r in range(300)], colour_label="v"
    )
    cells = len(_parse(big).findall(f"{SVG}rect"))
    assert cells < 60 * 60 + 100 and len(big) < 400_000
