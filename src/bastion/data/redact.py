"""Redaction of identifiers inside free text: each span :func:`bastion.data.pii.spans.find_spans`
finds is replaced, the rest of the text kept.

- ``placeholder``: a typed placeholder (``[PHONE]``, ``[EMAIL]``, ``[PERSON]`` ...).
- ``pseudonym``: the identifier's keyed pseudonym in brackets (``[PHONE ps_3f2a...]``), from
  the same key and in the same canonical spelling as pseudonymised columns (an e-mail in
  lower case, an SSN without separators, a phone number in E.164 where it parses), so one
  subject's identifier gets one pseudonym wherever it is written, in text or in a column.

What a redaction did is counted per entity; the counts, never the text, are what leaves the
job.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping

import pandas as pd
import phonenumbers
from stdnum.util import clean
from tink.prf import Prf

from bastion.data.pii.report import Entity
from bastion.data.pii.spans import find_spans
from bastion.data.pseudonymize import CANONICAL, pseudonym
from bastion.errors import InvalidInput

__all__ = ["Redaction", "redact_frame", "redact_text"]


class Redaction(enum.StrEnum):
    PLACEHOLDER = "placeholder"
    PSEUDONYM = "pseudonym"


def _e164(value: str) -> str:
    spelled = "+" + value.strip()[2:] if value.strip().startswith("00") else value
    try:
        number = phonenumbers.parse(spelled, None if spelled.startswith("+") else "US")
    except phonenumbers.NumberParseException:
        return clean(value, " -./()").strip()
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


#: Entity -> its canonical spelling before it is pseudonymised: a column's, and for the
#: entities only text mixes with others, phones in E.164 and names in lower case.
_CANONICAL: dict[str, Callable[[str], str]] = {
    **CANONICAL,
    Entity.PHONE: _e164,
    Entity.PERSON: lambda v: " ".join(v.split()).lower(),
}


def redact_text(
    text: str, *, mode: Redaction, prf: Prf | None = None, counts: Counter[str] | None = None
) -> str:
    """``text`` with every identifier span replaced (``prf``: the pseudonym key, needed for
    ``pseudonym``); each replacement is added to ``counts`` under its entity."""
    if mode is Redaction.PSEUDONYM and prf is None:
        raise ValueError("pseudonym redaction needs the pseudonym key")
    parts, last = [], 0
    for span in find_spans(text):
        label = span.entity.value.upper()
        if mode is Redaction.PLACEHOLDER or prf is None:
            replacement = f"[{label}]"
        else:
            value = text[span.start : span.end]
            canonical = _CANONICAL.get(span.entity, str.strip)(value)
            replacement = f"[{label} {pseudonym(canonical, prf)}]"
        parts += [text[last : span.start], replacement]
        last = span.end
        if counts is not None:
            counts[span.entity.value] += 1
    parts.append(text[last:])
    return "".join(parts)


def redact_frame(
    frame: pd.DataFrame, columns: Mapping[str, Redaction], *, prf: Prf | None = None
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """A new frame whose ``columns`` are redacted (the input untouched), and per column the
    replacements made per entity (counts only)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInput(f"no column {', '.join(missing)} to redact")
    result = frame.copy()
    counts: dict[str, dict[str, int]] = {}
    for column, mode in columns.items():
        tally: Counter[str] = Counter()
        values = frame[column]
        present = values.notna()
        result.loc[present, column] = [
            redact_text(str(v), mode=mode, prf=prf, counts=tally) for v in values[present]
        ]
        counts[column] = dict(sorted(tally.items()))
    return result, counts
