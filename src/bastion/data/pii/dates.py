"""Calendar dates in the ways people write them, read vectorised: how many years ago each was.

Four families cover the usual spellings: year first (1985-04-03, 1985/04/03), day or
month first (03.04.1985, 04/03/1985: either reading may hold), a month name after the
day (3 Apr 1985, 3. März 1985, 3 de abril de 1985) or before it (April 3, 1985). Month
names (and their first three or four letters) come from Faker's date providers of many
Latin-script locales. pyarrow's regex engine finds and splits the dates; numpy checks
that each is a real calendar day.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import importlib
import pkgutil

import faker.providers.date_time as providers
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bastion.data.pii.text import digit_counts

__all__ = ["ages", "date_pattern", "families"]

_YEAR = r"(?P<y>(?:18|19|20)\d{2})"


@functools.cache
def _month_names() -> dict[str, int]:
    """Lower-case month name or abbreviation -> month number, for many languages."""
    names: dict[str, int] = {}
    spellings = [list(calendar.month_name)[1:], list(calendar.month_abbr)[1:]]
    for module in pkgutil.iter_modules(providers.__path__):
        provider = importlib.import_module(f"{providers.__name__}.{module.name}").Provider
        months = getattr(provider, "MONTH_NAMES", None)
        if isinstance(months, dict) and len(months) == 12:
            spellings.append([str(months[k]) for k in sorted(months)])
    for spelling in spellings:
        if not all((name.isalpha() and name.isascii()) or _latin(name) for name in spelling):
            continue
        for number, name in enumerate(spelling, start=1):
            lower = name.lower()
            names.setdefault(lower, number)
            names.setdefault(lower[:3], number)  # "Apr", "Mär"; the first language wins a clash
            if len(lower) > 4:
                names.setdefault(lower[:4], number)  # "Sept", "janv", "juil"
    return names


def _latin(text: str) -> bool:
    return all(ch.isalpha() and ord(ch) < 0x250 for ch in text)


#: The four families; a month is any word of 3 to 12 letters there, looked up afterwards (a
#: regex of every month name of every language costs more to compile than the matching it
#: saves; bounded, because free text is searched with them and an unbounded word would make
#: a long text's search quadratic).
_FAMILIES = (
    rf"{_YEAR}[-/.](?P<m>\d{{1,2}})[-/.](?P<d>\d{{1,2}})",
    rf"(?P<d>\d{{1,2}})[-/.](?P<m>\d{{1,2}})[-/.]{_YEAR}",
    rf"(?P<d>\d{{1,2}})(?:\.|st|nd|rd|th|er|º)?\s+(?:de\s+)?(?P<mon>[^\s\d.,]{{3,12}})\.?,?\s+"
    rf"(?:de\s+)?{_YEAR}",
    rf"(?P<mon>[^\s\d.,]{{3,12}})\.?\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?\s+{_YEAR}",
)


def families() -> tuple[str, ...]:
    """The four date families, each a pattern of its own (their group names repeat)."""
    return _FAMILIES


def date_pattern() -> str:
    """One RE2 pattern that any written date matches (a prefilter)."""
    return "|".join(f"(?:{p})" for p in _FAMILIES)


def _integers(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False))


def _days(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970 of each (year, month, day); -2**40 where it is no calendar day."""
    ok = (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    start = (
        (year - 1970).astype("datetime64[Y]").astype("datetime64[M]") + np.where(ok, month, 1) - 1
    )
    date = start.astype("datetime64[D]") + np.where(ok, day, 1) - 1
    ok &= date.astype("datetime64[M]") == start  # 31 April rolls into May
    return np.where(ok, date.astype(np.int64), -(2**40))


def ages(values: pa.Array, *, whole: bool, today: dt.date | None = None) -> np.ndarray:
    """Years between each value's date (the value itself when ``whole``, else the first
    date written inside it) and today; NaN where there is none."""
    result = np.full(len(values), np.nan)
    # A date has a four-digit year and a day: only values with five digits or more that
    # the families' one pattern matches are read family by family.
    rows = np.flatnonzero(digit_counts(values) >= 5)
    if len(rows):
        some = values.take(pa.array(rows))
        pattern = f"^(?:{date_pattern()})$" if whole else date_pattern()
        rows = rows[np.asarray(pc.match_substring_regex(some, pattern).to_numpy(False))]
    if len(rows):
        result[rows] = _ages(values.take(pa.array(rows)), whole=whole, today=today)
    return result


def _ages(values: pa.Array, *, whole: bool, today: dt.date | None) -> np.ndarray:
    result = np.full(len(values), np.nan)
    now = np.datetime64(today or dt.date.today(), "D").astype(np.int64)
    months = _month_names()
    for family in _FAMILIES:
        pattern = f"^(?:{family})$" if whole else family
        open_rows = np.isnan(result)
        found = np.asarray(pc.match_substring_regex(values, pattern).to_numpy(zero_copy_only=False))
        rows = np.flatnonzero(found & open_rows)
        if not len(rows):
            continue
        parts = pc.extract_regex(values.take(pa.array(rows)), pattern)
        names = parts.type.names
        year, day = _integers(parts.field("y")), _integers(parts.field("d"))
        if "mon" in names:
            spelled = pc.utf8_lower(parts.field("mon")).to_pylist()
            month = np.array([months.get(name or "", 0) for name in spelled], dtype=np.int64)
        else:
            month = _integers(parts.field("m"))
        days = _days(year, month, day)
        if "mon" not in names and family.startswith("(?P<d>"):
            # 04/03/1985 may be written month first: take that reading where the other fails.
            days = np.where(days < -(2**39), _days(year, day, month), days)
        dated = days > -(2**39)
        result[rows[dated]] = (now - days[dated]) / 365.25
    return result
