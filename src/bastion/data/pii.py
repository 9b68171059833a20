"""Column-level PII detection, vectorised, that never copies the values it finds.

Each string column is tested against every detector on a sample first; a clear answer
(most values match one entity) classifies the column, an ambiguous one is settled on
the whole column. Long free-text columns are searched for entities inside the text.
Pattern matching runs in pyarrow's regex engine; card numbers must pass the Luhn check
and IBANs the ISO 7064 mod-97 check. The report holds entity types, confidences and
counts: never a value.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from faker.providers.address.en_US import Provider as _AddressProvider
from faker.providers.person.en_US import Provider as _PersonProvider

__all__ = ["ColumnFinding", "Entity", "PiiReport", "scan_frame", "scan_series"]


class Entity(enum.StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    US_SSN = "us_ssn"
    CARD_NUMBER = "card_number"
    IBAN = "iban"
    IP_ADDRESS = "ip_address"
    DATE_OF_BIRTH = "date_of_birth"
    PERSON = "person"
    ADDRESS = "address"


_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
_PHONE = (
    r"(?:\+?1[ .-]?|001[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}"
    r"(?: ?(?:x|ext\.?) ?\d{1,5})?"
)
_SSN = (
    r"(?:00[1-9]|0[1-9]\d|[1-578]\d{2}|6[0-57-9]\d|66[0-57-9])-(?:0[1-9]|[1-9]\d)-"
    r"(?:000[1-9]|00[1-9]\d|0[1-9]\d{2}|[1-9]\d{3})"
)
_CARD = r"(?:\d[ -]?){11,18}\d"
_IBAN = r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}"
_IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
_DATE = (
    r"(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])/(?:19|20)\d{2}"
)
_SUFFIX_WORDS = "|".join(
    sorted({*_AddressProvider.street_suffixes, "St", "Ave", "Rd", "Blvd", "Ln", "Dr"})
)
_STREET = (
    rf"\d{{1,6}} [A-Za-z0-9 .'-]+ (?:{_SUFFIX_WORDS})\.?(?: (?:Apt\.|Suite) \d+)?"
    r"(?:, [A-Za-z .'-]+, [A-Z]{2} \d{5}(?:-\d{4})?)?"
)
_MILITARY = (
    r"(?:(?:USS|USNS|USNV|USCGC) [A-Za-z]+|Unit \d{4} Box \d{4}|PSC \d{4}, Box \d{4}), "
    r"[AFD]PO (?:AE|AA|AP) \d{5}"
)
_ADDRESS = f"{_STREET}|{_MILITARY}"
_NAME_SHAPE = (
    r"^(?:(?:Mr|Mrs|Ms|Dr|Prof)\.? )?[A-Z][a-z'-]+(?: [A-Z]\.?)?(?: [A-Z][A-Za-z'-]+){1,2}"
    r"(?: (?:Jr|Sr|II|III|IV|MD|PhD|DDS|DVM)\.?)?$"
)
_FIRST_NAMES = frozenset(n.lower() for n in _PersonProvider.first_names)
_LAST_NAMES = frozenset(n.lower() for n in _PersonProvider.last_names)
_TITLES = frozenset({"mr.", "mrs.", "ms.", "miss", "dr.", "prof.", "mr", "mrs", "ms", "dr"})
_SUFFIXES = frozenset({"jr.", "sr.", "ii", "iii", "iv", "v", "md", "phd", "dds", "dvm"})

#: A column is classified when this share of its (non-null) values is one entity.
CLASSIFY = 0.8
#: Below this share in the sample the entity is considered absent.
ABSENT = 0.02
#: Mean length from which a column is treated as free text.
FREE_TEXT_LENGTH = 40


def _luhn(candidates: pa.Array) -> np.ndarray:
    """Luhn validity of digit strings (separators removed), vectorised with numpy."""
    digits = pc.replace_substring_regex(candidates, r"[ -]", "").to_numpy(zero_copy_only=False)
    if len(digits) == 0:
        return np.zeros(0, dtype=bool)
    lengths = np.fromiter((len(d) for d in digits), dtype=np.int64, count=len(digits))
    width = int(lengths.max())
    padded = np.char.rjust(digits.astype(f"U{width}"), width, "0")
    grid = padded.view(np.uint32).reshape(len(digits), width).astype(np.int64) - ord("0")
    from_right = grid[:, ::-1]
    doubled = from_right[:, 1::2] * 2
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = from_right[:, 0::2].sum(axis=1) + doubled.sum(axis=1)
    ok: np.ndarray = (total % 10 == 0) & (lengths >= 12) & (lengths <= 19)
    return ok


def _iban_ok(candidates: pa.Array) -> np.ndarray:
    """ISO 7064 mod-97: move the first four characters to the end, letters to numbers."""
    values = pc.replace_substring(candidates, " ", "").to_pylist()
    result = np.zeros(len(values), dtype=bool)
    for index, value in enumerate(values):
        if value is None or not 15 <= len(value) <= 34:
            continue
        rearranged = value[4:] + value[:4]
        remainder = 0
        for char in rearranged:
            chunk = str(int(char, 36))
            remainder = int(f"{remainder}{chunk}") % 97
        result[index] = remainder == 1
    return result


def _dob(candidates: pa.Array) -> np.ndarray:
    """Dates that are plausible birth dates: between 110 years ago and today."""
    text = candidates.to_pandas()
    parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    today = pd.Timestamp(dt.date.today())
    ok = parsed.notna() & (parsed <= today) & (parsed >= today - pd.DateOffset(years=110))
    result: np.ndarray = ok.to_numpy(dtype=bool)
    return result


def _person(candidates: pa.Array) -> np.ndarray:
    """Two to four capitalised words, a known first or last name among them."""
    shaped = pc.match_substring_regex(candidates, _NAME_SHAPE).to_numpy(zero_copy_only=False)
    words = candidates.to_pylist()
    known = np.fromiter(
        (
            any(
                w.lower() in _FIRST_NAMES or w.lower() in _LAST_NAMES
                for w in (value or "").split()
                if w.lower() not in _TITLES and w.lower() not in _SUFFIXES
            )
            for value in words
        ),
        dtype=bool,
        count=len(words),
    )
    result: np.ndarray = shaped & known
    return result


@dataclass(frozen=True)
class _Detector:
    entity: Entity
    pattern: str
    check: Callable[[pa.Array], np.ndarray] | None = None


_DETECTORS = (
    _Detector(Entity.EMAIL, _EMAIL),
    _Detector(Entity.US_SSN, _SSN),
    _Detector(Entity.CARD_NUMBER, _CARD, _luhn),
    _Detector(Entity.IBAN, _IBAN, _iban_ok),
    _Detector(Entity.IP_ADDRESS, _IPV4),
    _Detector(Entity.PHONE, _PHONE),
    _Detector(Entity.DATE_OF_BIRTH, _DATE, _dob),
    _Detector(Entity.ADDRESS, _ADDRESS),
    _Detector(Entity.PERSON, r".+", _person),
)


def _share(values: pa.Array, detector: _Detector, *, whole: bool) -> int:
    """How many values are (``whole``) or contain an entity."""
    pattern = f"^(?:{detector.pattern})$" if whole else detector.pattern
    matched = pc.match_substring_regex(values, pattern)
    if detector.check is None:
        return int(pc.sum(matched).as_py() or 0)
    hits = pc.filter(values, matched)
    if whole or detector.entity in (Entity.PERSON, Entity.DATE_OF_BIRTH):
        return int(detector.check(hits).sum()) if len(hits) else 0
    # Inside free text: extract the candidates, check them, count rows with one valid.
    extracted = pc.extract_regex(hits, f"(?P<m>{detector.pattern})").field("m")
    return int(detector.check(extracted).sum()) if len(extracted) else 0


@dataclass
class ColumnFinding:
    column: str
    entity: Entity
    confidence: float
    matched: int
    rows: int
    free_text: bool = False


@dataclass
class PiiReport:
    columns: list[ColumnFinding] = field(default_factory=list)
    rows: int = 0

    def entities(self) -> dict[str, str]:
        return {f.column: f.entity.value for f in self.columns}

    def summary(self) -> dict[str, object]:
        """What may leave the compute plane: types, confidences, counts; never values."""
        return {
            "rows": self.rows,
            "columns": [
                {
                    "column": f.column,
                    "entity": f.entity.value,
                    "confidence": round(f.confidence, 4),
                    "matched": f.matched,
                    "free_text": f.free_text,
                }
                for f in self.columns
            ],
        }


def scan_series(
    name: str, series: pd.Series, *, sample: int = 1000, seed: int = 0
) -> list[ColumnFinding]:
    """Findings for one column (empty when it holds no recognised identifiers)."""
    if pd.api.types.is_integer_dtype(series) and not pd.api.types.is_bool_dtype(series):
        # Card numbers, SSNs and phone numbers read from CSV arrive as integers.
        if series.dropna().abs().max() < 10**8:
            return []
        series = series.astype("Int64").astype("string")
    elif not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
        return []
    values = pa.array(series.dropna().astype(str), type=pa.string())
    if len(values) == 0:
        return []
    rng = np.random.default_rng(seed)
    sampled = values.take(
        pa.array(rng.choice(len(values), size=min(sample, len(values)), replace=False))
    )
    free_text = float(pc.mean(pc.utf8_length(sampled)).as_py() or 0) >= FREE_TEXT_LENGTH
    findings: list[ColumnFinding] = []
    for detector in _DETECTORS:
        if free_text and detector.entity is Entity.PERSON:
            continue  # names inside prose need a language model; not claimed here
        share = _share(sampled, detector, whole=not free_text) / len(sampled)
        if share < ABSENT:
            continue
        if not free_text and share < CLASSIFY:
            share = _share(values, detector, whole=True) / len(values)  # settle on all rows
            if share < CLASSIFY:
                continue
        matched = _share(values, detector, whole=not free_text)
        findings.append(
            ColumnFinding(
                column=name,
                entity=detector.entity,
                confidence=matched / len(values),
                matched=matched,
                rows=len(values),
                free_text=free_text,
            )
        )
        if not free_text:
            break  # a column holds one kind of identifier; the first confident match wins
    return findings


def scan_frame(frame: pd.DataFrame, *, sample: int = 1000, seed: int = 0) -> PiiReport:
    report = PiiReport(rows=len(frame))
    for name in frame.columns:
        report.columns += scan_series(str(name), frame[name], sample=sample, seed=seed)
    return report
