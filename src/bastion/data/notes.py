"""Synthetic clinical notes: the text reference workload (``bastion data reference notes``).

Each note is a few sentences assembled from templates under a fixed seed: a presenting
complaint whose symptoms depend on the note's ``diagnosis`` (the label a classifier learns),
and identifiers embedded in the sentences: the patient's and the clinician's names, phone
numbers in national and international spellings, e-mail addresses, US SSNs, dates of birth in
several formats and medical record numbers. People come from Faker in several locales, so
names, phones and dates are not all American.

Every identifier's span (``start``, ``end`` as Python string offsets, its entity as
:class:`bastion.data.pii.report.Entity` spells it) is recorded as the note is assembled: the
ground truth a span-level PII scan or a redaction is measured against. Nothing is
downloaded; the same seed gives the same notes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import phonenumbers
from faker import Faker

from bastion.data.ingest import write_table
from bastion.errors import InvalidInput
from bastion.files import atomic_output

__all__ = ["DIAGNOSES", "LOCALES", "NOTE_ENTITIES", "Note", "Span", "notes", "write_notes"]

#: Faker locales the people of the notes come from.
LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL")
#: Region of each locale's phone numbers (for their international spelling).
_REGION = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "es_ES": "ES"}
_REGION |= {"it_IT": "IT", "nl_NL": "NL", "pl_PL": "PL"}
#: Label -> symptoms and findings that point to it (each note names two or three).
DIAGNOSES = {
    "asthma": (
        "wheezing at night",
        "shortness of breath on exertion",
        "a dry cough after exercise",
        "chest tightness in cold air",
        "reduced peak flow",
    ),
    "diabetes": (
        "polyuria",
        "increased thirst",
        "blurred vision",
        "an elevated HbA1c",
        "slow-healing foot ulcers",
    ),
    "hypertension": (
        "morning headaches",
        "a raised blood pressure on three readings",
        "occasional nosebleeds",
        "dizziness when standing",
        "left ventricular hypertrophy on ECG",
    ),
    "migraine": (
        "a throbbing one-sided headache",
        "sensitivity to light",
        "nausea during attacks",
        "a visual aura before the pain",
        "attacks lasting most of a day",
    ),
}
#: The entities a note's spans name.
NOTE_ENTITIES = ("person", "phone", "email", "us_ssn", "date_of_birth", "record_number")
_DATE_FORMATS = ("%d/%m/%Y", "%Y-%m-%d", "%d.%m.%Y", "%B %d, %Y", "%m/%d/%Y", "%d %b %Y")
_FILLER = (
    "Vitals were otherwise unremarkable.",
    "No known drug allergies.",
    "Follow-up in four weeks.",
    "The patient was advised on lifestyle changes.",
    "Medication was reviewed and adjusted.",
)


@dataclass(frozen=True)
class Span:
    """An identifier inside a note: ``text[start:end]`` is it."""

    start: int
    end: int
    entity: str


@dataclass(frozen=True)
class Note:
    text: str
    diagnosis: str
    spans: tuple[Span, ...]


class _Writer:
    """Assembles a note from plain text and identifiers, recording each identifier's span."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.length = 0

    def text(self, value: str) -> None:
        self.parts.append(value)
        self.length += len(value)

    def entity(self, value: str, entity: str) -> None:
        self.spans.append(Span(self.length, self.length + len(value), entity))
        self.text(value)


def _phone(fake: Faker, locale: str, rng: np.random.Generator) -> str:
    """A phone number of the locale, national as Faker writes it or international (+44 ...,
    0044 ...) as phonenumbers formats it."""
    for _ in range(20):
        national = str(fake.phone_number())
        if "x" in national.lower():  # extensions: kept for national spellings only
            continue
        try:
            number = phonenumbers.parse(national, _REGION[locale])
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_valid_number(number):
            continue
        style = rng.integers(3)
        if style == 0:
            return national
        spelled = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        return spelled if style == 1 else "00" + spelled.removeprefix("+")
    return str(fake.phone_number())


def _ssn(rng: np.random.Generator) -> str:
    area, group, serial = rng.integers(1, 666), rng.integers(1, 100), rng.integers(1, 10_000)
    separator = ("-", " ", "")[int(rng.integers(3))]
    return f"{area:03d}{separator}{group:02d}{separator}{serial:04d}"


def _note(fakes: Sequence[Faker], rng: np.random.Generator, diagnosis: str) -> Note:
    locale = LOCALES[int(rng.integers(len(LOCALES)))]
    fake = fakes[LOCALES.index(locale)]
    out = _Writer()
    out.text(("Patient ", "Seen today: ", "Referral for ")[int(rng.integers(3))])
    out.entity(f"{fake.first_name()} {fake.last_name()}", "person")
    out.text(" (DOB ")
    born = fake.date_of_birth(minimum_age=18, maximum_age=90)
    out.entity(born.strftime(_DATE_FORMATS[int(rng.integers(len(_DATE_FORMATS)))]), "date_of_birth")
    out.text(", ")
    out.entity(f"MRN-{int(rng.integers(10**7, 10**8))}", "record_number")
    symptoms = list(rng.choice(DIAGNOSES[diagnosis], size=int(rng.integers(2, 4)), replace=False))
    out.text(f") presents with {', '.join(symptoms[:-1])} and {symptoms[-1]}. ")
    if rng.random() < 0.3:  # a symptom of another diagnosis: the label is not trivial
        other = str(rng.choice([d for d in DIAGNOSES if d != diagnosis]))
        out.text(f"Also reports {rng.choice(DIAGNOSES[other])}. ")
    out.text(str(rng.choice(_FILLER)) + " ")
    if rng.random() < 0.8:
        out.text(("Call back on ", "Contact number: ", "Reachable at ")[int(rng.integers(3))])
        out.entity(_phone(fake, locale, rng), "phone")
        out.text(". ")
    if rng.random() < 0.6:
        out.text("Results to be sent to ")
        out.entity(str(fake.email()), "email")
        out.text(". ")
    if rng.random() < 0.4:
        out.text("SSN on file: ")
        out.entity(_ssn(rng), "us_ssn")
        out.text(". ")
    out.text("Reviewed by Dr. ")
    out.entity(str(fake.last_name()), "person")
    out.text(".")
    return Note("".join(out.parts), diagnosis, tuple(out.spans))


def notes(*, rows: int = 1000, seed: int = 0) -> list[Note]:
    """``rows`` notes under ``seed``; the diagnoses in about equal shares."""
    if rows < 1:
        raise InvalidInput("notes: rows must be at least 1")
    rng = np.random.default_rng(seed)
    fakes = []
    for number, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed * 1000 + number)
        fakes.append(fake)
    labels = list(DIAGNOSES)
    return [_note(fakes, rng, labels[int(rng.integers(len(labels)))]) for _ in range(rows)]


def write_notes(out: Path, *, rows: int | None = None, seed: int = 0) -> tuple[Path, Path]:
    """The notes as a table (``note_id``, ``note``, ``diagnosis``; .csv or .parquet) and their
    spans beside it (``<stem>.spans.jsonl``: one line per note, ``note_id`` and its spans as
    ``[start, end, entity]``), both written atomically; the two paths."""
    if out.suffix not in (".csv", ".parquet"):
        raise InvalidInput(f"{out}: notes are written as .csv or .parquet")
    made = notes(rows=rows or 1000, seed=seed)
    ids = [f"N{index:07d}" for index in range(len(made))]
    frame = pd.DataFrame(
        {"note_id": ids, "note": [n.text for n in made], "diagnosis": [n.diagnosis for n in made]}
    )
    write_table(frame, out)
    truth = out.with_name(out.stem + ".spans.jsonl")
    lines = (
        json.dumps({"note_id": i, "spans": [[s.start, s.end, s.entity] for s in n.spans]})
        for i, n in zip(ids, made, strict=True)
    )
    with atomic_output(truth, mode=0o600) as handle:
        handle.write(("\n".join(lines) + "\n").encode())
    return out, truth
