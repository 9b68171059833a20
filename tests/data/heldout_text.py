"""Held-out free text with identifier spans, built apart from ``bastion data reference notes``:
support tickets and letters rather than clinical notes, other locales (Brazil, Sweden,
Denmark, Czechia, Ireland, Switzerland, Austria, Portugal), other spellings, and decoys that
look like identifiers but are none (order numbers, version strings, visit dates and times,
amounts, postcodes). The span detector was not developed on it: its figures here are the
held-out ones (tests/data/test_spans.py, benchmarks/bench_text.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faker import Faker

#: Syllables of invented names: people no name list knows (a quarter of the people).
_SYLLABLES = ("zor", "vak", "ket", "trup", "mil", "dra", "quen", "bos", "yl", "tarn", "ox", "eph")
LOCALES = ("pt_BR", "sv_SE", "da_DK", "cs_CZ", "en_IE", "fr_CH", "de_AT", "pt_PT")
_MONTHS = ("January", "March", "June", "September", "November")


@dataclass(frozen=True)
class Held:
    text: str
    spans: tuple[tuple[int, int, str], ...]


class _Out:
    def __init__(self) -> None:
        self.text = ""
        self.spans: list[tuple[int, int, str]] = []

    def add(self, value: str, entity: str | None = None) -> None:
        if entity is not None:
            self.spans.append((len(self.text), len(self.text) + len(value), entity))
        self.text += value


def _decoy(rng: np.random.Generator) -> str:
    return str(
        rng.choice(
            [
                f"order #{rng.integers(10**5, 10**6)}",
                f"version {rng.integers(1, 20)}.{rng.integers(0, 10)}.{rng.integers(0, 30)}",
                f"visit on {rng.integers(1, 28)}/{rng.integers(1, 12)}/2026"
                f" at 10:{rng.integers(10, 59)}",
                f"an invoice of {rng.integers(100, 9999)}.{rng.integers(10, 99)} EUR",
                f"ticket INC{rng.integers(10**6, 10**7)}",
                f"room {rng.integers(100, 999)}, ward {rng.integers(1, 9)}",
            ]
        )
    )


def _invented(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()


def _person(fake: Faker, rng: np.random.Generator, *, first: bool) -> str:
    if rng.random() < 0.25:
        return f"{_invented(rng)} {_invented(rng)}" if first else _invented(rng)
    return f"{fake.first_name()} {fake.last_name()}" if first else str(fake.last_name())


def _one(fake: Faker, rng: np.random.Generator) -> Held:
    out = _Out()
    kind = int(rng.integers(3))
    if kind == 0:
        out.add("Dear ")
        out.add(str(rng.choice(["Mrs. ", "Mr. ", "Ms. "])))
        out.add(_person(fake, rng, first=False), "person")
        out.add(", thank you for your message about ")
        out.add(_decoy(rng))
        out.add(". ")
    elif kind == 1:
        out.add("Ticket opened by ")
        out.add(_person(fake, rng, first=True), "person")
        out.add(f" regarding {_decoy(rng)}. ")
    else:
        out.add("Customer ")
        out.add(_person(fake, rng, first=True), "person")
        out.add(", born ")
        born = fake.date_of_birth(minimum_age=20, maximum_age=85)
        layout = str(rng.choice(["%d.%m.%Y", "%Y-%m-%d", "%d/%m/%Y"]))
        if rng.random() < 0.3:
            month = _MONTHS[int(rng.integers(len(_MONTHS)))]
            out.add(f"{min(born.day, 28)} {month} {born.year}", "date_of_birth")
        else:
            out.add(born.strftime(layout), "date_of_birth")
        out.add(", asked about ")
        out.add(_decoy(rng))
        out.add(". ")
    if rng.random() < 0.7:
        out.add(str(rng.choice(["Phone: ", "Tel. ", "You can reach them on "])))
        out.add(str(fake.phone_number()), "phone")
        out.add(". ")
    if rng.random() < 0.6:
        out.add(str(rng.choice(["Reply to ", "E-mail: "])))
        out.add(str(fake.free_email()), "email")
        out.add(". ")
    if rng.random() < 0.2:
        out.add("Their social security number is ")
        area, group, serial = rng.integers(1, 666), rng.integers(1, 100), rng.integers(1, 10**4)
        out.add(f"{area:03d}-{group:02d}-{serial:04d}", "us_ssn")
        out.add(". ")
    out.add(f"Also noted: {_decoy(rng)}.")
    return Held(out.text, tuple(out.spans))


def heldout_text(*, rows: int = 600, seed: int = 101) -> list[Held]:
    rng = np.random.default_rng(seed)
    fakes = []
    for number, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed * 100 + number)
        fakes.append(fake)
    return [_one(fakes[int(rng.integers(len(fakes)))], rng) for _ in range(rows)]
