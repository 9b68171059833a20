"""Phone numbers, read by ``phonenumbers`` with the metadata of every region.

A number with its country code (+44 ..., 0049 ...) is read whatever the column. One
written nationally says less: many plans accept most digit strings of the right length
(Germany's takes four random 9-digit strings in five). So a national number counts only
with a sign of being written as one: the region's trunk prefix (030 ..., 020 ...), or the
grouping the region's own national format gives it (729 825 979 in Poland, (212) 555-0143
in the US); bare digits count only as a valid North American number. Each column gets one
region for each of the two kinds, the one under which most of its sample reads.

A number counts when it is *possible* (:func:`phonenumbers.is_possible_number`: a length
the plan allows); where that is all a decision needs, the length is read from the
library's metadata without a full parse, five times faster. Validity
(:func:`phonenumbers.is_valid_number`, needed for bare digits and numbers inside free
text) always goes through the library.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat

from bastion.data.pii.lexicon import words

__all__ = ["PhoneReader", "fit_reader", "valid_anywhere"]

#: Regions with a trunk prefix, tried (in this order) for numbers written with it.
_TRUNK = words("GB DE FR NL BE AT CH SE FI IE BR HU SK AU NZ AR ZA TR IL IN")
#: Regions without one, tried for numbers grouped as their national format groups them.
_PLAIN = words("US ES IT PL PT CZ DK NO GR LU")
_EXTENSION = re.compile(r"\s*(?:x|ext\.?|#)\s*\d{1,6}\s*$", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")

# Keep every compiled metadata pattern: a column of numbers from many countries consults
# more of them than the re module's own cache (512) holds, and each miss compiles again
# (a third of the time of a free-text column of international numbers, profiled).
_keep_patterns = getattr(phonenumbers, "enable_pattern_cache", None)
if callable(_keep_patterns):
    _keep_patterns()

NONE, POSSIBLE, VALID = 0, 1, 2
#: Values a column's regions are chosen on.
_FIT = 20


def _parse(text: str, region: str | None) -> PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException:
        return None


def _status(number: PhoneNumber | None, *, strict: bool = True) -> int:
    """VALID, POSSIBLE or NONE; not ``strict``: POSSIBLE or NONE, leaving out the costlier
    validity check where a possible number is enough."""
    if number is None or not phonenumbers.is_possible_number(number):
        return NONE
    if strict and phonenumbers.is_valid_number(number):
        return VALID
    return POSSIBLE


@functools.lru_cache(maxsize=1024)
def _runs(text: str) -> tuple[str, ...]:
    """The runs of digits of ``text``, an extension left out (kept for a while: a value is
    read under one region after another)."""
    return tuple(_DIGITS.findall(_EXTENSION.sub("", text)))


def _groups(text: str) -> tuple[int, ...]:
    return tuple(len(run) for run in _runs(text))


def international(text: str) -> str | None:
    """The number in E.164 spelling when written with a country code, else None."""
    stripped = text.strip()
    if stripped.startswith("+"):
        return stripped
    return "+" + stripped[2:] if stripped.startswith("00") else None


@functools.cache
def _plan(region: str) -> tuple[str, frozenset[int]]:
    """A region's trunk prefix ("" for none) and the lengths its national numbers may have
    (those :func:`phonenumbers.is_possible_number` accepts, local-only ones included)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.general_desc is None:
        return "", frozenset()
    general = metadata.general_desc
    lengths = (*general.possible_length, *(general.possible_length_local_only or ()))
    return metadata.national_prefix or "", frozenset(lengths)


def _digits(text: str) -> str:
    return "".join(_runs(text))


def _trunk_status(text: str, region: str, *, strict: bool = True) -> int:
    trunk, lengths = _plan(region)
    digits = _digits(text)
    if not trunk or not digits.startswith(trunk) or len(digits) - len(trunk) not in lengths:
        return NONE
    # The length is what is_possible_number tests: parse only to tell valid numbers apart.
    return _status(_parse(text, region), strict=True) if strict else POSSIBLE


@functools.cache
def _country(code: int) -> str | None:
    """The main region of a country calling code (None for none, or a non-geographic one)."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    region = regions[0] if regions else None
    return region if region and region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY else None


def _international_status(spelled: str, *, strict: bool) -> int:
    """A number with its country code: calling codes are prefix-free, so the first one the
    digits start with is it; the rest must have a length that country's plan allows (with
    or without its trunk prefix, as in +49 (0)30 ...)."""
    digits = _digits(spelled)
    for size in (1, 2, 3):
        if size >= len(digits) or (region := _country(int(digits[:size]))) is None:
            continue
        trunk, lengths = _plan(region)
        national = digits[size:]
        if trunk and national.startswith(trunk) and len(national) - len(trunk) in lengths:
            possible = True
        else:
            possible = len(national) in lengths
        if not possible:
            return NONE
        if not strict:
            return POSSIBLE
        break  # valid or only possible: the library says
    return _status(_parse(spelled, None), strict=strict)


def _plain_status(text: str, region: str, *, strict: bool = True) -> int:
    runs = _runs(text)
    digits = "".join(runs)
    if region == "US" and len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) not in _plan(region)[1]:
        return NONE
    grouped = len(runs) > 1
    if not grouped and region != "US":
        return NONE  # bare digits count only as a valid North American number: no parse
    number = _parse(text, region)
    if number is None:
        return NONE
    if grouped:
        canonical = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
        if tuple(len(run) for run in runs) == _groups(canonical):
            return _status(number, strict=strict)
    if region == "US" and _status(number) == VALID:
        return VALID  # bare digits: a North American number with a real area code
    return NONE


@dataclass(frozen=True)
class PhoneReader:
    """How one column's values are read: ``trunk`` and ``plain`` are its two regions;
    ``numeric`` columns (digits a CSV reader made a number of) are read as North American."""

    trunk: str
    plain: str
    numeric: bool = False

    def status(self, value: str, *, strict: bool = True) -> int:
        """VALID, POSSIBLE or NONE (not ``strict``: VALID is reported as POSSIBLE where
        telling them apart costs a validity check)."""
        if self.numeric:
            return VALID if _status(_parse(value, "US")) == VALID else NONE
        spelled = international(value)
        if spelled is not None:
            return _international_status(spelled, strict=strict)
        trunk = _trunk_status(value, self.trunk, strict=strict)
        return trunk or _plain_status(value, self.plain, strict=strict)

    def ok(self, value: str) -> int:
        """1 for a phone number as this column writes them."""
        return int(self.status(value, strict=False) != NONE)

    def e164(self, value: str) -> str | None:
        """The number in E.164 spelling (+442079460958, an extension kept after ``x``), so
        that one number written many ways is written one way: read with its country code
        where written with one (+44 ..., 0044 ...), else in this column's region (its trunk
        region for a number written with that trunk prefix); None for no possible number."""
        spelled = international(value)
        if spelled is not None:
            number = _parse(spelled, None)
        elif self.numeric:
            number = _parse(value, "US")
        else:
            trunked = _trunk_status(value, self.trunk, strict=False) != NONE
            number = _parse(value, self.trunk if trunked else self.plain)
        if number is None or _status(number, strict=False) == NONE:
            return None
        spelling = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        return f"{spelling}x{number.extension}" if number.extension else spelling


def _best(values: Sequence[str], regions: Sequence[str], read: Callable[..., int]) -> str:
    if not values:
        return regions[0]
    best, best_score = regions[0], -1
    for region in regions:
        statuses = [read(v, region) for v in values]
        score = sum(s != NONE for s in statuses) * 2 + sum(s == VALID for s in statuses)
        if score > best_score:
            best, best_score = region, score
        if sum(s != NONE for s in statuses) >= 0.9 * len(values):
            break
    return best


def fit_reader(sample: Sequence[str], *, numeric: bool) -> PhoneReader:
    """The reader that reads most of a column's ``sample`` (at most a few dozen values)."""
    if numeric:
        return PhoneReader(trunk=_TRUNK[0], plain="US", numeric=True)
    national = [v for v in sample[:_FIT] if international(v) is None]
    trunked = [v for v in national if _digits(v).startswith("0")]
    plain = [v for v in national if v not in set(trunked)]
    return PhoneReader(
        trunk=_best(trunked, _TRUNK, _trunk_status), plain=_best(plain, _PLAIN, _plain_status)
    )


def valid_anywhere(text: str) -> bool:
    """A valid number on its own (a phone number inside free text, no column to fit): with
    its country code, valid for that country; written nationally, valid for one of the
    regions read here, written with that region's trunk prefix or in its national grouping
    (bare digits only as a North American number)."""
    if international(text) is not None:
        return PhoneReader(trunk=_TRUNK[0], plain="US").status(text) == VALID
    if any(_trunk_status(text, region) == VALID for region in _TRUNK):
        return True
    return any(_plain_status(text, region) == VALID for region in _PLAIN)
