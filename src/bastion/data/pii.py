"""Column-level PII detection, vectorised, that never copies the values it finds.

Each string column is tested against every detector on a sample first; a clear answer
(most values match one entity) classifies the column, an ambiguous one is settled on
the whole column (read again chunk by chunk when it is too large to hold). Long free-text
columns are searched for entities inside the text. Pattern matching runs in pyarrow's
regex engine; card numbers must pass the Luhn check and IBANs the ISO 7064 mod-97 check.
The report holds entity types, confidences and counts: never a value.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from faker.providers.address.en_US import Provider as _AddressProvider
from faker.providers.person.en_US import Provider as _PersonProvider

__all__ = ["ColumnFinding", "Entity", "PiiReport", "scan_chunks", "scan_frame", "scan_series"]


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


def _characters(text: pa.Array, width: int, *, right: bool) -> np.ndarray:
    """ASCII strings of at most ``width`` characters as one (width, n) array of their codes,
    padded with "0" on the left (``right``-aligned) or on the right: a row per position."""
    pad = pc.utf8_lpad if right else pc.utf8_rpad
    padded = pad(text, width=width, padding="0").cast(pa.large_binary())
    start = int(np.frombuffer(padded.buffers()[1], dtype=np.int64)[padded.offset])
    data = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[start : start + width * len(text)]
    return np.ascontiguousarray(data.reshape(len(text), width).T).astype(np.int32)


def _luhn(candidates: pa.Array) -> np.ndarray:
    """Luhn validity of digit strings (separators removed), vectorised with numpy."""
    digits = pc.fill_null(pc.replace_substring_regex(candidates, r"[ -]", ""), "")
    lengths = pc.utf8_length(digits).to_numpy(zero_copy_only=False)
    fits = (lengths >= 12) & (lengths <= 19) & pc.ascii_is_decimal(digits).to_numpy(False)
    result = np.zeros(len(lengths), dtype=bool)
    if not fits.any():
        return result
    # Right-aligned, so row 0 is the last digit; leading zeros leave the sum as it is.
    from_right = _characters(digits.filter(pa.array(fits)), 19, right=True)[::-1] - ord("0")
    doubled = from_right[1::2] * 2
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = from_right[0::2].sum(axis=0) + doubled.sum(axis=0)
    result[fits] = total % 10 == 0
    return result


#: 10^k mod 97 for every k an IBAN's digits can reach (34 characters, two digits a letter).
_POWERS_MOD_97 = np.array([pow(10, k, 97) for k in range(69)], dtype=np.int32)


def _iban_ok(candidates: pa.Array) -> np.ndarray:
    """ISO 7064 mod-97: with the first four characters moved to the end and letters made
    numbers (A = 10 ... Z = 35), the number leaves a remainder of 1 when divided by 97.
    Vectorised with numpy: each character adds its value times 10^(digits after it) mod 97."""
    text = pc.fill_null(pc.replace_substring(candidates, " ", ""), "")
    lengths = pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int32)
    fits = (lengths >= 15) & (lengths <= 34) & pc.string_is_ascii(text).to_numpy(False)
    result = np.zeros(len(lengths), dtype=bool)
    if not fits.any():
        return result
    chars = _characters(text.filter(pa.array(fits)), 34, right=False)
    position = np.arange(34)[:, None]
    inside = position < lengths[fits][None, :]
    digit = (chars >= ord("0")) & (chars <= ord("9"))
    upper = (chars >= ord("A")) & (chars <= ord("Z"))
    lower = (chars >= ord("a")) & (chars <= ord("z"))
    readable = (digit | upper | lower | ~inside).all(axis=0)
    number = np.where(digit, chars - ord("0"), np.where(upper, chars - 55, chars - 87))
    width = (2 - digit.astype(np.int16)) * inside  # the digits each character becomes
    after = width.sum(axis=0, dtype=np.int16) - np.cumsum(width, axis=0, dtype=np.int16)
    head, body = width[:4].sum(axis=0, dtype=np.int16), width[4:].sum(axis=0, dtype=np.int16)
    # Moved, the first four come last: the rest have them after too, they lose the rest.
    after = np.where(position >= 4, after + head, after - body)
    remainder = (number * _POWERS_MOD_97[after] * inside).sum(axis=0) % 97
    result[fits] = (remainder == 1) & readable
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


class _Column:
    """A column's non-null values as text, counted whole: held in memory, or read again in
    chunks for each count (a column too large to hold)."""

    def __init__(self, texts: Callable[[], Iterable[pa.Array]]) -> None:
        self._texts = texts
        self._counts: dict[tuple[Entity, bool], int] = {}
        self.rows = 0

    def count(self, detector: _Detector, *, whole: bool) -> int:
        key = (detector.entity, whole)
        if key not in self._counts:
            rows = matched = 0
            for text in self._texts():
                rows += len(text)
                matched += _share(text, detector, whole=whole)
            self.rows, self._counts[key] = rows, matched
        return self._counts[key]


def _text(series: pd.Series) -> pa.Array | None:
    """The non-null values as the detectors read them: text, integers as their digits;
    None for a column they do not read (fractions, booleans, dates)."""
    if pd.api.types.is_integer_dtype(series) and not pd.api.types.is_bool_dtype(series):
        series = series.astype("Int64").astype("string")
    elif not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
        return None
    text = pa.array(series.dropna().astype(str), type=pa.string())
    # A column pandas holds in Arrow comes back chunked; the detectors want one array.
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def _small_integers(chunks: Iterable[pd.Series]) -> bool:
    """Integers below 10^8 (counts, codes) cannot be card, SSN or phone numbers."""
    largest = (chunk.dropna().abs().max() for chunk in chunks)
    return max((v for v in largest if pd.notna(v)), default=0) < 10**8


def _is_integer(series: pd.Series) -> bool:
    return pd.api.types.is_integer_dtype(series) and not pd.api.types.is_bool_dtype(series)


def scan_series(
    name: str, series: pd.Series, *, sample: int = 1000, seed: int = 0
) -> list[ColumnFinding]:
    """Findings for one column (empty when it holds no recognised identifiers)."""
    # Card numbers, SSNs and phone numbers read from CSV arrive as integers.
    if _is_integer(series) and _small_integers([series]):
        return []
    values = _text(series)
    if values is None:
        return []
    return _classify(name, values, _Column(lambda: [values]), sample=sample, seed=seed)


def scan_chunks(
    name: str,
    chunks: Callable[[], Iterable[pd.Series]],
    *,
    sample: pd.Series,
    sample_size: int = 1000,
    seed: int = 0,
) -> list[ColumnFinding]:
    """:func:`scan_series` for a column too large to hold, read in chunks: each call of
    ``chunks`` reads it once, in order, each chunk with the dtype of the whole column.
    ``sample`` (a uniform sample of its rows, with that dtype) decides, as the sample of
    :func:`scan_series` does; only the counts the decision needs read the whole column.
    """
    if _is_integer(sample) and _small_integers(chunks()):
        return []
    values = _text(sample)
    if values is None:
        return []

    def texts() -> Iterator[pa.Array]:
        for chunk in chunks():
            text = _text(chunk)
            if text is not None:
                yield text

    return _classify(name, values, _Column(texts), sample=sample_size, seed=seed)


def _classify(
    name: str, values: pa.Array, column: _Column, *, sample: int, seed: int
) -> list[ColumnFinding]:
    """Test a sample of ``values`` against every detector; count on ``column`` what the
    sample leaves open and what is reported."""
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
            settled = column.count(detector, whole=True)  # settle on all rows
            if settled / column.rows < CLASSIFY:
                continue
        matched = column.count(detector, whole=not free_text)
        findings.append(
            ColumnFinding(
                column=name,
                entity=detector.entity,
                confidence=matched / column.rows,
                matched=matched,
                rows=column.rows,
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
