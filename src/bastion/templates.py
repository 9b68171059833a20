"""Rendering the HTML pages Bastion writes (model cards, reports): escaped, no script."""

from __future__ import annotations

import math
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

__all__ = ["render", "significant"]


def significant(value: Any, digits: int = 4) -> Any:
    """A number as people read it: a float to ``digits`` significant digits without
    trailing zeros (0.8333 for 0.83333333, 12350 for 12345.6); integers, booleans and
    anything that is not a number unchanged. The ``num`` filter of Bastion's pages."""
    if isinstance(value, bool) or not isinstance(value, float | int):
        return value
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value) or value == 0:
        return str(value) if value else "0"
    exponent = math.floor(math.log10(abs(value)))
    if not -5 <= exponent < 15:
        return f"{value:.{digits - 1}e}"
    places = digits - 1 - exponent  # negative: rounded to tens, hundreds ...
    text = f"{round(value, places):.{max(0, places)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def render(package: str, template: str, **context: Any) -> str:
    """Render ``template`` from ``package``'s ``templates/`` folder, every value escaped."""
    environment = Environment(
        loader=PackageLoader(package, "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = significant
    return environment.get_template(template).render(**context)
