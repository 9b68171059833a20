"""Pseudonymisation in the compute plane: keyed pseudonyms, generalisation, dropping.

Pseudonyms are ``psn_`` + the first 80 bits (hex) of HMAC-SHA256 under the compute
plane's pseudonym key (Tink PRF), over the value with surrounding whitespace removed.
The same subject therefore gets the same pseudonym in every dataset of this compute
plane, and nobody without the key can link a pseudonym back to the value. Where the
scan's entity of a column has one canonical spelling (phone numbers in E.164, e-mail
addresses in lower case, SSNs, card numbers and IBANs without separators), values are
spelled that way first, so one subject written two ways still gets one pseudonym.

:func:`plan_columns` decides which columns a job treats: those named, or by default every
column the registration scan found or suspected to identify people, the target excepted.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
from stdnum import iban
from stdnum.util import clean
from tink.prf import Prf

from bastion.data.pii import Entity
from bastion.data.pii.phones import fit_reader
from bastion.errors import InvalidInput

__all__ = [
    "CANONICAL",
    "Generalization",
    "Plan",
    "coarsen",
    "plan_columns",
    "pseudonym",
    "pseudonymize_frame",
]

PREFIX = "psn_"
_BYTES = 10
#: Distinct values of a phone column its regions are fitted on (as the scan fits them).
_PHONE_FIT = 40


class Generalization(enum.StrEnum):
    """Coarsen a column instead of replacing it."""

    AGE_BAND = "age-band"  # a date of birth becomes "30-39"
    ZIP3 = "zip3"  # a ZIP code (or an address ending in one) becomes its first three digits


def pseudonym(value: str, prf: Prf) -> str:
    """The keyed pseudonym of one value, as pseudonymised columns hold it."""
    digest: bytes = prf.compute(value.strip().encode(), _BYTES)
    return PREFIX + digest.hex()


def _without_separators(value: str) -> str:
    return clean(value, " -").strip()


#: Entity -> its canonical spelling, for entities written one way per subject (phone
#: numbers, fitted to their column, are apart).
CANONICAL: dict[str, Callable[[str], str]] = {
    Entity.EMAIL: str.lower,
    Entity.US_SSN: _without_separators,
    Entity.CARD_NUMBER: _without_separators,
    Entity.IBAN: iban.compact,  # separators removed, upper case
}


def _spelling(entity: str | None, sample: list[str], *, numeric: bool) -> Callable[[str], str]:
    """How a column's (stripped) values are spelled before they are pseudonymised: the
    entity's canonical form; a value that has none (a phone column's "n/a") as written.
    ``sample``: a few of the column's distinct values (a phone column's regions)."""
    if entity == Entity.PHONE:
        reader = fit_reader(sample, numeric=numeric)
        return lambda value: reader.e164(value) or value
    return CANONICAL.get(entity or "", str)


def _pseudonyms(series: pd.Series, prf: Prf, entity: str | None) -> pd.Series:
    values = series.astype("string").str.strip()
    unique = values.dropna().unique()
    sample = [str(v) for v in unique[:_PHONE_FIT]]
    spell = _spelling(entity, sample, numeric=pd.api.types.is_numeric_dtype(series))
    mapping = {value: pseudonym(spell(value), prf) for value in unique}
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
    entities: Mapping[str, str] | None = None,
    today: dt.date | None = None,
) -> pd.DataFrame:
    """A new frame with identifiers replaced, coarsened or removed; the input is untouched.

    ``entities`` maps a column to the scan's entity (:class:`~bastion.data.pii.Entity`
    values): its values are spelled canonically before they are pseudonymised. A column
    it does not map is pseudonymised as written (stripped).
    """
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
        result[column] = _pseudonyms(frame[column], prf, (entities or {}).get(column))
    for column, how in generalize.items():
        result[column] = coarsen(frame[column], how, today=today)
    return result


@dataclass(frozen=True)
class Plan:
    """What a pseudonymisation does to each column of a table, by name only (it is logged
    and recorded with the version it makes). ``default``: no column was named."""

    pseudonymize: list[str]
    generalize: dict[str, Generalization]
    drop: list[str]
    untouched: list[str]
    default: bool
    redact: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """The plan as the new version's summaries record it: column names, never values."""
        summary: dict[str, object] = {
            "default": self.default,
            "pseudonymized": self.pseudonymize,
            "generalized": {column: how.value for column, how in self.generalize.items()},
            "dropped": self.drop,
            "untouched": self.untouched,
        }
        if self.redact:
            summary["redacted"] = dict(self.redact)
        return summary

    def lines(self) -> list[str]:
        """The plan in words, one line per treatment, the columns left untouched last."""
        why = " (by default: every identifier and suspected identifier)" if self.default else ""
        treated = [
            ("pseudonymised" + why, self.pseudonymize),
            ("generalised", [f"{c} ({how.value})" for c, how in self.generalize.items()]),
            ("dropped", self.drop),
            ("redacted inside", [f"{c} ({how})" for c, how in self.redact.items()]),
        ]
        lines = [f"{label}: {', '.join(columns)}" for label, columns in treated if columns]
        return [*lines, f"left untouched: {', '.join(self.untouched) or 'none'}"]


def plan_columns(
    columns: Sequence[str],
    *,
    pseudonymize: Iterable[str] = (),
    generalize: Mapping[str, Generalization] | None = None,
    drop: Iterable[str] = (),
    redact: Mapping[str, str] | None = None,
    free_text: Collection[str] = (),
    identifiers: Collection[str] = (),
    suspects: Collection[str] = (),
    target: str | None = None,
    dataset: str = "the dataset",
) -> Plan:
    """The columns named, or, when none is, every column of ``identifiers`` and
    ``suspects`` (what the registration scan recorded) but the ``target``: pseudonymised, or
    for the ``free_text`` ones (identifiers found inside text) redacted with keyed
    pseudonyms, so that the text around them stays; the rest of ``columns`` is listed as
    left untouched."""
    named, generalized, dropped = list(pseudonymize), dict(generalize or {}), list(drop)
    redacted = dict(redact or {})
    default = not (named or generalized or dropped or redacted)
    if default:
        flagged = {c for c in columns if c in {*identifiers, *suspects} and c != target}
        named = [c for c in columns if c in flagged and c not in free_text]
        redacted = {c: "pseudonym" for c in columns if c in flagged and c in free_text}
        if not (named or redacted):
            raise InvalidInput(
                f"the scan of {dataset} recorded no identifier or suspected identifier column "
                "to pseudonymise by default; name the columns to treat (--columns, --drop, "
                "--age-band, --zip3)"
            )
    treated = {*named, *generalized, *dropped, *redacted}
    return Plan(
        pseudonymize=named,
        generalize=generalized,
        drop=dropped,
        untouched=[c for c in columns if c not in treated],
        default=default,
        redact=redacted,
    )
