"""Numbers on Bastion's pages: 4 significant digits, integers as they are."""

from __future__ import annotations

import math

import pytest

from bastion.templates import significant


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.8333333333, "0.8333"),
        (0.9, "0.9"),
        (1 / 3 * 100, "33.33"),
        (12345.678, "12350"),
        (0.000123456, "0.0001235"),
        (-2.718281828, "-2.718"),
        (3.0, "3"),
        (0.99999, "1"),
        (0.0, "0"),
        (1.5e-9, "1.500e-09"),
        (6.02e23, "6.020e+23"),
        (12345678901, "12345678901"),  # an integer keeps every digit
        (0, "0"),
    ],
)
def test_numbers_are_rounded_to_four_significant_digits(value: float, shown: str) -> None:
    assert significant(value) == shown


def test_what_is_not_a_number_is_left_as_it_is() -> None:
    assert significant(True) is True
    assert significant(None) is None
    assert significant("0.123456") == "0.123456"
    assert significant(math.nan) == "nan" and significant(math.inf) == "inf"
