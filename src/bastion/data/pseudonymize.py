"""Pseudonymisation in the compute plane: keyed pseudonyms, generalisation, dropping.

Pseudonyms are ``psn_`` + the first 80 bits (hex) of HMAC-SHA256 under the compute
plane's pseudonym key (Tink PRF), over the value with surrounding whitespace removed.
The same subject therefore gets the same pseudonym in every dataset of this compute
plane, and nobody without the key can link a pseudonym back to the value.
"""

from __future__ import annotations

import datetime as dt
import enum

import pandas as pd
from tink.prf import Prf

from bastion.errors import InvalidInput

__all__ = ["Generalization", "coarsen", "pseudonym", "pseudonymize_frame"]

PREFIX = "psn_"
_BYTES = 10


class Generalization(enum.StrEnum):
    """Coarsen a column instead of replacing it."""

    AGE_BAND = "age-band"  # a date of birth becomes "30-39"
    ZIP3 = "zip3"  # a ZIP code (or an address ending in one) becomes its first three digits


def pseudonym(value: str, prf: Prf) -> str:
    """The keyed pseudonym of one value, as pseudonymised columns hold it."""
    digest: bytes = prf.compute(value.strip().encode(), _BYTES)
    return PREFIX + digest.hex()


def _pseudonyms(series: pd.Series, prf: Prf) -> pd.Series:
    values = series.astype("string").str.strip()
    unique = values.dropna().unique()
    mapping = {value: pseudonym(value, prf) for value in unique}
    return values.map(mapping).astype(object).where(values.notna(), None)


def _age_band(series: pd.Series, today: dt.date) -> pd.Series:
    born = pd.to_datetime(series, errors="coerce", format="mixed")
    years = (pd.Timestamp(today) - born).dt.days // 365.25
    low = (years // 10 * 10).astype("Int64")
    bands = low.astype("string") + "-" + (low + 9).astype("string")
    return bands.astype(object).where(born.notna(), None)


def _zip3(series: pd.Series) -> pd.Series:
    codes = series.astype("string").str.extract(r"(\d{5})(?:-\d{4})?\s*$", expand=False)
    return (codes.str[:3] + "**").astype(object).where(codes.notna(), None)


def coarsen(series: pd.Series, how: Generalization, *, today: dt.date | None = None) -> pd.Series:
    """One column coarsened as a pseudonymisation job does it (new rows sent to a model
    trained on generalised data must be coarsened the same way)."""
    if how is Generalization.AGE_BAND:
        return _age_band(series, today or dt.date.today())
    return _zip3(series)


def pseudonymize_frame(
    frame: pd.DataFrame,
    *,
    prf: Prf,
    pseudonymize: list[str] | None = None,
    generalize: dict[str, Generalization] | None = None,
    drop: list[str] | None = None,
    today: dt.date | None = None,
) -> pd.DataFrame:
    """A new frame with identifiers replaced, coarsened or removed; the input is untouched."""
    pseudonymize, generalize, drop = pseudonymize or [], generalize or {}, drop or []
    named = [*pseudonymize, *generalize, *drop]
    missing = sorted(set(named) - {str(c) for c in frame.columns})
    if missing:
        raise InvalidInput(f"unknown column(s): {', '.join(missing)}")
    repeated = sorted({c for c in named if named.count(c) > 1})
    if repeated:
        raise InvalidInput(f"column(s) given more than one treatment: {', '.join(repeated)}")
    if not named:
        raise InvalidInput("name at least one column to pseudonymise, generalise or drop")
    result = frame.drop(columns=drop).copy()
    for column in pseudonymize:
        result[column] = _pseudonyms(frame[column], prf)
    for column, how in generalize.items():
        result[column] = coarsen(frame[column], how, today=today)
    return result
