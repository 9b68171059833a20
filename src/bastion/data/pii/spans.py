"""Identifier spans inside free text: where each identifier is, not only whether a text holds
one (:meth:`Detector.inside` answers that for a column's scan).

A span is found the way a column's values are checked: a pattern proposes a candidate and
the field's check confirms it. E-mail addresses by their shape; US SSNs written with
separators (bare nine digits only after an SSN keyword) by python-stdnum's rules; card
numbers by Luhn and IBANs by mod-97; dates by the scan's four date families, kept as dates of
birth when they lie 10 to 110 years back; phone numbers by ``phonenumbers`` (with a country
code: valid for that country; written nationally: valid for one of the regions the scan
reads national numbers in, in the spelling that region writes); record numbers after a
record keyword (MRN, patient id, ...); people as a known first name followed by a
capitalised word, or a capitalised word after a title (Dr., Mrs., Herr ...).

Where two candidates overlap, the earlier entity in :data:`ORDER` keeps its span (a card
number's digits are no phone number).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from bastion.data.pii import dates, lexicon, phones
from bastion.data.pii.checksums import iban_ok, luhn_ok
from bastion.data.pii.detectors import BIRTH_MEDIAN_AGE, OLDEST
from bastion.data.pii.formats import ssn_ok
from bastion.data.pii.report import Entity

__all__ = ["ORDER", "Span", "find_spans"]


@dataclass(frozen=True, order=True)
class Span:
    """``text[start:end]`` is an identifier of ``entity``."""

    start: int
    end: int
    entity: Entity


#: Bounded parts (RFC 5321: 64 for the local part, 63 a label): a long text without an "@"
#: stays linear to search.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
    r"\.[A-Za-z]{2,24}"
)
_SSN = re.compile(r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])")
_SSN_BARE = re.compile(
    r"(?i:\b(?:ssn|social security(?: number| no\.?)?)\b)[^\d\n]{0,20}(?<![\w-])(\d{9})(?![\w-])"
)
_CARD = re.compile(r"(?<![\d+])[2-6](?:\d[ -]?){11,17}\d(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b")
_PHONE = re.compile(
    r"(?:\+|(?<!\d)00|(?<![\w.\-/])\(?0|(?<![\w.\-/+])\(?[1-9])\d?[\d\s().\-/]{5,20}\d"
    r"(?:\s*(?:x|ext\.?)\s*\d{1,6})?(?![\w-])"
)
#: Words that say a number is a phone number, in the characters before it.
_PHONE_WORDS = re.compile(
    r"(?i:\b(?:tel|tlf|telephone|telefon|telefone|telefono|téléphone|phone|mobile|mobil|cell"
    r"|handy|fax|call|calls|ring|reach|reached|contact|gsm)\b)"
)
_CONTEXT = 30
_EXTENSION = re.compile(r"\s*(?:x|ext\.?)\s*\d{1,6}$")
_DATE_LIKE = re.compile(r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}$|^\d{1,3}(?:\.\d{1,3}){3}$")
#: A record keyword, then the number (MRN: 00123456, patient id 4711-22), or the keyword as the
#: code's own prefix (MRN-00123456).
_RECORD_KEYWORD = (
    r"mrn|mr no\.?|medical record(?: number| no\.?)?|patient id|pid|hospital no\.?"
    r"|chart no\.?|nhs no\.?|case no\.?"
)
_RECORD_CODE = re.compile(r"\b(?i:mrn|pid|hn)-?\d{5,12}\b")
_RECORD = re.compile(
    rf"\b(?i:{_RECORD_KEYWORD})[\s:#.]+(?P<m>(?:[A-Z]{{1,4}}-?)?\d{{5,12}}(?:-\d{{1,4}})?)\b"
)
#: Words of a name (letters, joined by an apostrophe or a hyphen), and what may stand between a
#: first and a last name.
_TOKEN = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")
_PARTICLES = frozenset(
    lexicon.words("van von de der den da das di del della la le du des ter ten zu 't d'")
)
_TITLES = frozenset(
    lexicon.words("dr mr mrs ms miss prof herr frau mme mlle sig sra srta pan pani dott")
)
#: Particles one name may hold in a row (van der, de la ...).
_MOST_PARTICLES = 3
_INTRODUCERS = frozenset(lexicon.words("patient pt name"))


def _emails(text: str) -> Iterator[Span]:
    for match in _EMAIL.finditer(text):
        yield Span(match.start(), match.end(), Entity.EMAIL)


def _ssns(text: str) -> Iterator[Span]:
    for match in _SSN.finditer(text):
        if ssn_ok(match.group()):
            yield Span(match.start(), match.end(), Entity.US_SSN)
    for match in _SSN_BARE.finditer(text):
        if ssn_ok(match.group(1)):
            yield Span(match.start(1), match.end(1), Entity.US_SSN)


def _checked(
    pattern: re.Pattern[str], check: Callable[[pa.Array], np.ndarray], entity: Entity
) -> Callable[[str], Iterator[Span]]:
    """Candidates of ``pattern`` that pass the vectorised ``check`` (a checksum)."""

    def find(text: str) -> Iterator[Span]:
        found = list(pattern.finditer(text))
        if not found:
            return
        passed = check(pa.array([m.group() for m in found], type=pa.string())).tolist()
        for match, ok in zip(found, passed, strict=True):
            if ok:
                yield Span(match.start(), match.end(), entity)

    return find


@functools.cache
def _date_families() -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(rf"(?<!\w)(?:{family})(?!\w)") for family in dates.families())


def _births(text: str) -> Iterator[Span]:
    found = [m for family in _date_families() for m in family.finditer(text)]
    if not found:
        return
    years = dates.ages(pa.array([m.group() for m in found], type=pa.string()), whole=True)
    for match, age in zip(found, years, strict=True):
        if BIRTH_MEDIAN_AGE <= age <= OLDEST:
            yield Span(match.start(), match.end(), Entity.DATE_OF_BIRTH)


def _phones(text: str) -> Iterator[Span]:
    """Valid numbers anywhere; after a phone word (Tel., call, mobile ...), any number of 7
    to 15 digits: many numbers written down are not valid in any plan (a mistyped digit, an
    unassigned range) and are still someone's number."""
    for match in _PHONE.finditer(text):
        candidate = match.group()
        stripped = candidate.strip(" ().-/")
        digits = sum(ch.isdigit() for ch in _EXTENSION.sub("", stripped))
        if _DATE_LIKE.match(stripped) or digits < 7:
            continue
        number = candidate.lstrip("(") if candidate.startswith("(0") else candidate
        told = _PHONE_WORDS.search(text, max(0, match.start() - _CONTEXT), match.start())
        if phones.valid_anywhere(number) or (told is not None and digits <= 15):
            yield Span(match.start(), match.end(), Entity.PHONE)


def _records(text: str) -> Iterator[Span]:
    for match in _RECORD_CODE.finditer(text):
        yield Span(match.start(), match.end(), Entity.RECORD_NUMBER)
    for match in _RECORD.finditer(text):
        yield Span(match.start("m"), match.end("m"), Entity.RECORD_NUMBER)


def _known(word: str, names: frozenset[str] | lexicon.Names) -> bool:
    """A name word (each part of a hyphenated one) among ``names``."""
    parts = [part for part in re.split(r"[-'\u2019]", word) if part]
    if isinstance(names, lexicon.Names):
        return bool(parts) and all(names.known(part) for part in parts)
    return bool(parts) and all(part in names for part in parts)


def _people(text: str) -> Iterator[Span]:
    """A known first name, then (particles aside) a known last name; or capitalised words
    after a title (Dr. Ciani) or after "patient" or "name" (Patient Jane Roe)."""
    names = lexicon.names()
    tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]

    def capital(index: int) -> bool:
        word = tokens[index][2]
        return word[0].isupper() and word.lower() not in _PARTICLES

    def joined(left: int, right: int) -> bool:  # only spaces (and a title's dot) between
        return not text[tokens[left][1] : tokens[right][0]].strip(" .")

    def name_from(index: int, most: int) -> int | None:
        """The last token of a name starting at ``index`` (particles inside), or None."""
        end, taken, previous, particles = None, 0, None, 0
        while index < len(tokens) and taken < most and particles <= _MOST_PARTICLES:
            if previous is not None and not joined(previous, index):
                break
            previous = index
            if tokens[index][2].lower() in _PARTICLES:
                index, particles = index + 1, particles + 1
                continue
            if not capital(index):
                break
            end, taken, index = index, taken + 1, index + 1
        return end

    for i, (start, _, word) in enumerate(tokens):
        lower = word.lower()
        if (lower in _TITLES or lower in _INTRODUCERS) and i + 1 < len(tokens) and joined(i, i + 1):
            last = name_from(i + 1, 3 if lower in _TITLES else 2)
            first = i + 1
            while first < min(len(tokens), i + 1 + _MOST_PARTICLES) and (
                tokens[first][2].lower() in _PARTICLES
            ):
                first += 1 if lower in _TITLES else len(tokens)
            if last is not None and first <= last and (lower in _TITLES or last > first):
                begin = tokens[i + 1][0] if lower in _TITLES else tokens[first][0]
                yield Span(begin, tokens[last][1], Entity.PERSON)
        if word[0].isupper() and _known(lower, names.first) and i + 1 < len(tokens):
            last = name_from(i + 1, 3) if joined(i, i + 1) else None
            while last is not None and last > i and not _known(tokens[last][2].lower(), names):
                last -= 1  # the name ends at its last known part
            if (
                last is not None
                and last > i
                and any(_known(tokens[k][2].lower(), names.last) for k in range(i + 1, last + 1))
            ):
                yield Span(start, tokens[last][1], Entity.PERSON)


#: Entities in the order their spans win an overlap, with what finds them.
ORDER: tuple[tuple[Entity, Callable[[str], Iterable[Span]]], ...] = (
    (Entity.EMAIL, _emails),
    (Entity.IBAN, _checked(_IBAN, iban_ok, Entity.IBAN)),
    (Entity.CARD_NUMBER, _checked(_CARD, luhn_ok, Entity.CARD_NUMBER)),
    (Entity.US_SSN, _ssns),
    (Entity.RECORD_NUMBER, _records),
    (Entity.DATE_OF_BIRTH, _births),
    (Entity.PHONE, _phones),
    (Entity.PERSON, _people),
)


def find_spans(text: str) -> list[Span]:
    """Every identifier span in ``text``, in order, none overlapping another."""
    kept: list[Span] = []
    for _, find in ORDER:
        for span in find(text):
            if all(span.end <= other.start or other.end <= span.start for other in kept):
                kept.append(span)
    return sorted(kept)
