"""The detectors, one per entity, in the order a column is tested against them.

Each has a cheap vectorised *shape* test (pyarrow's RE2 regex engine) that every value
goes through, and a *check* of the candidates the shape lets through: a vectorised
checksum where one exists, else the field's library, one distinct value at a time. The
check is *fitted* to the column on its sample first: the phone regions it is read in,
the national identifiers it holds, whether its IPv4-looking values are version strings,
whether its dates lie far enough back to be births. A fit may also say that the best this
column can be is a suspect (recent dates, a row counter, name-shaped words that are no
known names).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bastion.data.pii import formats, lexicon
from bastion.data.pii.checksums import iban_ok, luhn_ok
from bastion.data.pii.dates import ages
from bastion.data.pii.phones import fit_reader
from bastion.data.pii.report import Entity
from bastion.data.pii.text import digit_counts, letter_counts, nines

__all__ = ["ABSENT", "CLASSIFY", "DETECTORS", "SUSPECT", "Detector", "Fitted", "Rows", "matches"]

#: A column is classified when this share of its (non-null) values is one entity.
CLASSIFY = 0.8
#: Below this share in the sample the entity is considered absent.
ABSENT = 0.02
#: A structured column unclassified is a suspect from this share of its best entity on
#: (below it, chance: one random number in ten passes a check digit).
SUSPECT = 0.2
#: Bare nine-digit numbers are SSNs only when nearly all pass: random nine-digit
#: identifiers pass the SSN rules nine times in ten.
BARE_SSN = 0.98
#: SSNs read back as integers have nine digits unless their area is 001-099 (one in nine).
NINE_DIGITS = 0.8
#: Birth dates lie this many years back at the median (recent dates: events, or infants).
BIRTH_MEDIAN_AGE = 10.0
OLDEST = 110.0
#: A fitted check samples this many values of the column (regions, identifier kinds).
FIT_VALUES = 40


def matches(values: pa.Array, pattern: str) -> np.ndarray:
    return np.asarray(pc.match_substring_regex(values, pattern).to_numpy(zero_copy_only=False))


def _everything(values: pa.Array) -> np.ndarray:
    return np.ones(len(values), dtype=bool)


def _head(values: pa.Array) -> list[str]:
    head: list[str] = pc.unique(values).slice(0, FIT_VALUES).to_pylist()
    return head


Rows = Callable[[], int]


@dataclass(frozen=True)
class Fitted:
    """A detector fitted to one column: the check of its candidates, and how to judge."""

    check: Callable[[pa.Array], np.ndarray]
    vectorised: bool = False  # cheap for any number of values (else capped, see scan)
    classify_at: float = CLASSIFY
    suspect_only: bool = False
    #: ``check`` of the candidates the fit was given, where the fit computed it already
    #: (the scan uses it instead of checking those values a second time)
    checked: np.ndarray | None = None

    def check_fitted(self, candidates: pa.Array) -> np.ndarray:
        """``check`` of the very candidates this was fitted on."""
        return self.check(candidates) if self.checked is None else self.checked


class Detector(Protocol):
    @property
    def entity(self) -> Entity:
        """What the detector finds."""

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        """Which values have the entity's shape (the prefilter, over every value)."""

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        """The check for this column, from the shaped values of its sample; None: the
        sample rules the entity out (``rows()``: non-null values of the whole column, which
        a column read in chunks is read once more to count)."""

    def inside(self, texts: pa.Array) -> np.ndarray | None:
        """Which free-text values hold the entity; None where it is not searched for."""


@dataclass(frozen=True)
class _Pattern:
    """An entity its shape says all about (an e-mail address, a street address)."""

    entity: Entity
    shape: str
    search: str | None = None

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        return np.zeros(len(values), bool) if numeric else matches(values, f"^(?:{self.shape})$")

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        return Fitted(check=_everything, vectorised=True)

    def inside(self, texts: pa.Array) -> np.ndarray | None:
        return None if self.search is None else matches(texts, self.search)


@dataclass(frozen=True)
class _Checksum:
    """A number with a check digit (card numbers: Luhn; IBANs: mod-97)."""

    entity: Entity
    shape: str
    checksum: Callable[[pa.Array], np.ndarray]
    numbers: bool  # also read from numeric columns
    search: str  # inside free text, the candidate as group "m"

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        if numeric and not self.numbers:
            return np.zeros(len(values), bool)
        return matches(values, f"^(?:{self.shape})$")

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        return Fitted(check=self.checksum, vectorised=True)

    def inside(self, texts: pa.Array) -> np.ndarray | None:
        found = matches(texts, self.search)
        rows = np.flatnonzero(found)
        if len(rows):
            first = pc.extract_regex(texts.take(pa.array(rows)), self.search)
            found[rows] = self.checksum(first.field("m"))
        return found


class _Ssn:
    entity = Entity.US_SSN
    _shape = r"^\d{3}(?:-\d{2}-|\s\d{2}\s|\d{2})\d{4}$"
    _search = r"(?:^|[^\d-])\d{3}[- ]\d{2}[- ]\d{4}(?:[^\d-]|$)"

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        return matches(values, r"^\d{7,9}$" if numeric else self._shape)

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        if numeric and float(np.mean(matches(candidates, r"^\d{9}$"))) < NINE_DIGITS:
            return None  # of mixed widths: amounts, counts (SSN areas 001-099 are rarer)
        bare = numeric or float(np.mean(matches(candidates, r"^\d+$"))) >= 0.5
        return Fitted(check=self._check, classify_at=BARE_SSN if bare else CLASSIFY)

    @staticmethod
    def _check(candidates: pa.Array) -> np.ndarray:
        padded = pc.utf8_lpad(candidates, width=9, padding="0")  # integers lose leading zeros
        return formats.per_value(padded, formats.ssn_ok) > 0

    def inside(self, texts: pa.Array) -> np.ndarray:
        found = matches(texts, self._search)
        rows = np.flatnonzero(found)
        if len(rows):
            first = pc.extract_regex(texts.take(pa.array(rows)), r"(?P<m>\d{3}[- ]\d{2}[- ]\d{4})")
            found[rows] = self._check(first.field("m"))
        return found


class _Ip:
    entity = Entity.IP_ADDRESS
    _v4 = r"(?:\d{1,3}\.){3}\d{1,3}"
    _v6 = r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\d{1,3}\.){3}\d{1,3})?"

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        if numeric:
            return np.zeros(len(values), bool)
        return matches(values, rf"^(?:{self._v4}|{self._v6})$")

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        octets = formats.per_value(candidates, formats.ip_octets)
        v4 = (octets >= 0) & (octets <= 255)
        # Version strings (10.2.3.4) have small parts; addresses spread over 0..255.
        versions = v4.any() and float(np.mean(octets[v4] >= 32)) < 0.5
        if versions:
            return Fitted(check=self._check_v6, checked=np.asarray(octets == 256))
        return Fitted(check=self._check, checked=np.asarray(octets >= 0))

    @staticmethod
    def _check(candidates: pa.Array) -> np.ndarray:
        return np.asarray(formats.per_value(candidates, formats.ip_octets) >= 0)

    @staticmethod
    def _check_v6(candidates: pa.Array) -> np.ndarray:
        return np.asarray(formats.per_value(candidates, formats.ip_octets) == 256)

    def inside(self, texts: pa.Array) -> np.ndarray:
        found = matches(texts, rf"(?:^|[^\w.:])(?:{self._v4}|{self._v6})(?:[^\w.:]|$)")
        rows = np.flatnonzero(found)
        if len(rows):
            pattern = rf"(?:^|[^\w.:])(?P<m>{self._v4}|{self._v6})(?:[^\w.:]|$)"
            first = pc.extract_regex(texts.take(pa.array(rows)), pattern).field("m")
            octets = formats.per_value(first, formats.ip_octets)
            found[rows] = octets >= 32  # an IPv6 address, or an IPv4 one with a large part
        return found


class _Birth:
    entity = Entity.DATE_OF_BIRTH

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        return np.zeros(len(values), bool) if numeric else ~np.isnan(ages(values, whole=True))

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        years = ages(candidates, whole=True)
        born = years[(years >= 0) & (years <= OLDEST)]
        if not len(born):
            return None
        recent = float(np.median(born)) < BIRTH_MEDIAN_AGE
        checked = (years >= 0) & (years <= OLDEST)
        return Fitted(check=self._check, vectorised=True, suspect_only=recent, checked=checked)

    @staticmethod
    def _check(candidates: pa.Array) -> np.ndarray:
        years = ages(candidates, whole=True)
        return (years >= 0) & (years <= OLDEST)

    def inside(self, texts: pa.Array) -> np.ndarray:
        years = ages(texts, whole=False)  # NaN where no date is written (and compares false)
        found: np.ndarray = (years >= BIRTH_MEDIAN_AGE) & (years <= OLDEST)
        return found


class _Phone:
    entity = Entity.PHONE
    _shape = r"^(?:\+|00)?[\d\s().\-/]{6,24}\d(?:\s*(?:x|ext\.?|#)\s*\d{1,6})?$"
    #: 03.04.1985 and 192.168.0.1 are no phone numbers
    _date = r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}$|^\d{1,3}(?:\.\d{1,3}){3}$"
    _search = r"(?:\+|\b00|\(0|\b0|\b[2-9])\d?[\d\s().\-/]{5,20}\d"

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        if numeric:
            return matches(values, r"^1?[2-9]\d{9}$")
        shaped: np.ndarray = matches(values, self._shape) & ~matches(values, self._date)
        return shaped & (digit_counts(values) >= 7)

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        reader = fit_reader(_head(candidates), numeric=numeric)
        return Fitted(check=lambda values: formats.per_value(values, reader.ok) > 0)

    def inside(self, texts: pa.Array) -> np.ndarray:
        found = matches(texts, self._search)
        rows = np.flatnonzero(found)
        if len(rows):
            pattern = rf"(?P<m>{self._search})"
            first = pc.extract_regex(texts.take(pa.array(rows)), pattern).field("m")
            stripped = pc.utf8_trim(first, characters=" ().-/")
            numbers = ~matches(stripped, self._date)
            rows, stripped = rows[numbers], stripped.filter(pa.array(numbers))
            reader = fit_reader(_head(stripped), numeric=False)
            found[:] = False
            found[rows] = formats.per_value(stripped, reader.status) == 2  # valid ones only
        return found


class _Stdnum:
    """Identifiers python-stdnum validates: which kinds a column holds is fitted."""

    def __init__(self, entity: Entity, shape: str, numbers: str | None) -> None:
        self.entity, self._shape, self._numbers = entity, shape, numbers

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        if numeric:
            return (
                np.zeros(len(values), bool)
                if self._numbers is None
                else matches(values, self._numbers)
            )
        return matches(values, self._shape) & (digit_counts(values) >= 5)

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        if self.entity is Entity.VAT_NUMBER:
            return Fitted(check=lambda values: formats.per_value(values, formats.vat_ok) > 0)
        modules = formats.national_ids(_head(candidates), least=0.2, cover=0.5)
        if not modules:
            return None

        last: dict[tuple[int, bool], str] = {}  # the module a value of this kind last passed

        def valid(value: str) -> int:
            kind = (len(value), value.isdigit())
            tried = last.get(kind)
            if tried is not None and formats.national_id_ok(tried, value):
                return 1
            for module in modules:
                if module != tried and formats.national_id_ok(module, value):
                    last[kind] = module
                    return 1
            return 0

        return Fitted(check=lambda values: formats.per_value(values, valid) > 0)

    def inside(self, texts: pa.Array) -> np.ndarray | None:
        return None


class _Person:
    entity = Entity.PERSON

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        return np.zeros(len(values), bool) if numeric else lexicon.name_shaped(values)

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        read = self._read(candidates)
        named, shaped = float(np.mean(read == 2)), float(np.mean(read >= 1))
        if named >= 0.5:
            return Fitted(check=lambda values: self._read(values) == 2, checked=read == 2)
        if shaped >= CLASSIFY and named >= 0.2:  # name-shaped, few known names
            return Fitted(
                check=lambda values: self._read(values) >= 1, suspect_only=True, checked=read >= 1
            )
        return None

    @staticmethod
    def _read(values: pa.Array) -> np.ndarray:
        names = lexicon.names()

        def read(value: str) -> int:
            shaped, named = lexicon.is_person(value, names)
            return 2 if named else int(shaped)

        return formats.per_value(values, read)

    def inside(self, texts: pa.Array) -> np.ndarray:
        # Names in prose are only suspected: a known first name before a known last name.
        found = matches(texts, r"\p{Lu}\p{Ll}+ \p{Lu}\p{Ll}+")
        rows = np.flatnonzero(found)
        if len(rows):
            names = lexicon.names()

            def pair(text: str) -> int:
                words = text.replace(",", " ").replace(".", " ").split()
                return int(
                    any(
                        a[:1].isupper()
                        and b[:1].isupper()
                        and a.lower() in names.first
                        and b.lower() in names.last
                        for a, b in itertools.pairwise(words)
                    )
                )

            found[rows] = formats.per_value(texts.take(pa.array(rows)), pair) > 0
        return found


class _Record:
    """Record numbers: unique codes of one fixed shape (MRN-00123456, 12-345-678). Letters
    other than a record prefix (ORD-, INV-) make it a suspect: orders, invoices, tickets
    have such codes too; a dense range of numbers is a row counter, a suspect as well."""

    entity = Entity.RECORD_NUMBER
    _shape = r"^[A-Za-z0-9][A-Za-z0-9 ./_#:-]{4,30}[A-Za-z0-9]$"
    _dates = r"\d{4}-\d\d-\d\d|\d\d?[./-]\d\d?[./-]\d{2,4}|\d\d:\d\d"
    #: Postcodes of one shape (US ZIP+4, Brazil, Portugal, Japan) are places, not records.
    _postcodes = frozenset({"99999-9999", "99999-999", "9999-999", "999-9999"})
    _prefixes = frozenset(
        lexicon.words(
            "mrn mr mrno pid pat patient pt hn hosp ur emr ehr chart case client member mbr "
            "subject subj sid id nhs kvnr insured"
        )
    )

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        if numeric:
            return np.zeros(len(values), bool)
        coded = matches(values, self._shape) & matches(values, r"[^\d]")
        result: np.ndarray = coded & (digit_counts(values) >= 6) & ~matches(values, self._dates)
        return result

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        templates = nines(candidates)
        counts = pc.value_counts(templates)
        top = int(np.argmax(counts.field("counts").to_numpy()))
        template = counts.field("values")[top].as_py()
        if counts.field("counts")[top].as_py() < 0.95 * len(candidates):
            return None  # letters or layout vary: words, hex digests, pseudonyms
        if template in self._postcodes:
            return None
        words = {w.lower() for w in re.findall(r"[A-Za-z]+", template)}
        if len(pc.unique(candidates)) < 0.9 * len(candidates):
            return None  # repeats: a category (product codes), not a record
        numbers = pc.cast(pc.replace_substring_regex(candidates, r"\D", ""), pa.float64())
        extent = pc.min_max(numbers)
        counter = extent["max"].as_py() - extent["min"].as_py() + 1 <= 2 * rows()  # row numbers

        def check(values: pa.Array) -> np.ndarray:
            same = pc.equal(nines(values), template)
            return np.asarray(same.to_numpy(zero_copy_only=False))

        unknown = not words <= self._prefixes
        checked = np.asarray(pc.equal(templates, template).to_numpy(zero_copy_only=False))
        return Fitted(
            check=check, vectorised=True, suspect_only=counter or unknown, checked=checked
        )

    def inside(self, texts: pa.Array) -> np.ndarray | None:
        return None


_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
_US_STREET = (
    r"\d{1,6} [A-Za-z0-9 .'-]+ (?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr"
    r"|Court|Ct|Place|Pl|Way|Terrace|Circle|Parkway)\.?(?: (?:Apt\.|Suite) \d+)?"
)


class _Address:
    entity = Entity.ADDRESS

    def shaped(self, values: pa.Array, *, numeric: bool) -> np.ndarray:
        shaped = np.zeros(len(values), bool)
        if numeric:
            return shaped
        lengths = pc.utf8_length(values).to_numpy(zero_copy_only=False)
        # Both readings need a number and a word (two letters at least): only values with
        # both are split into words and matched.
        maybe = (
            (lengths >= 8)
            & (lengths <= 200)
            & (digit_counts(values) > 0)
            & (letter_counts(values) > 1)
        )
        rows = np.flatnonzero(maybe)
        if len(rows):
            some = values.take(pa.array(rows))
            typed = lexicon.address_shaped(some) | lexicon.street_line(some)
            shaped[rows] = typed & ~matches(some, "@")
        return shaped

    def fit(self, candidates: pa.Array, *, numeric: bool, rows: Rows) -> Fitted | None:
        return Fitted(check=_everything, vectorised=True)

    def inside(self, texts: pa.Array) -> np.ndarray:
        return matches(texts, _US_STREET)


DETECTORS: tuple[Detector, ...] = (
    _Pattern(Entity.EMAIL, _EMAIL, search=_EMAIL),
    _Checksum(
        Entity.IBAN,
        r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}",
        iban_ok,
        numbers=False,
        search=r"(?P<m>[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8})",
    ),
    _Checksum(
        Entity.CARD_NUMBER,
        r"(?:\d[ -]?){11,18}\d",
        luhn_ok,
        numbers=True,
        search=r"(?:^|[^\d+])(?P<m>[2-6](?:\d[ -]?){11,17}\d)(?:\D|$)",
    ),
    _Ssn(),
    _Ip(),
    _Birth(),
    _Stdnum(
        Entity.VAT_NUMBER, r"^[A-Za-z]{2}[ -]?[0-9A-Za-z][0-9A-Za-z .+*-]{1,14}$", numbers=None
    ),
    _Stdnum(
        Entity.NATIONAL_ID, r"^[0-9A-Za-z][0-9A-Za-z .\-/]{5,22}[0-9A-Za-z]$", numbers=r"^\d{8,13}$"
    ),
    _Phone(),
    _Address(),
    _Person(),
    _Record(),
)
