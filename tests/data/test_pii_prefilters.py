"""The scan's cheap prefilters change what it costs, never what it finds: each is checked
against the reading it stands in front of, on every text column of the held-out tables
(three mixes) and on hand-written values of many countries."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bastion.data.pii import lexicon
from bastion.data.pii.dates import _ages, ages
from bastion.data.pii.detectors import DETECTORS, matches
from bastion.data.pii.report import Entity
from bastion.data.pii.text import column_text, digit_counts, letter_counts, nines
from bastion.data.reference import patients
from tests.data.heldout_pii import FINAL, FRESH, TUNING, heldout

WRITTEN = [
    "Vraňanská 43, 218 58 Mirošov",
    "Müllerstraße 12a, 80331 München",
    "12 rue de la Paix, 75002 Paris",
    "ul. Długa 5/7, 00-238 Warszawa",
    "Calle Mayor 3, 28013 Madrid",
    "Kerkstraat 17, 1017 GC Amsterdam",
    "742 Evergreen Terrace",
    "Flat 3, 14 Baker St.",
    "Élodie Ñúñez, 3 Ångström väg, 114 28 Stockholm",
    "seen in unit 4, way better",
    "Born 3. März 1985 in Köln",
    "DOB: 1985-04-03; admitted 04/03/2019",
    "3 de abril de 1985",
    "April 3, 1985",
    "٣٤٥ شارع الملك",  # Arabic-Indic digits are no ASCII digits
    "",
    "x",
    "\uff11\uff12\uff13 Main Street",  # full-width digits
    "12345 Rd. 678",  # two letters: the fewest an address has
    "7 ul. 9-11 m 2",
    "MRN-00123456",
    "+44 20 7946 0958",
]


@functools.cache
def _columns() -> list[pa.Array]:
    frames = [heldout(mix=mix, rows=500)[0] for mix in (TUNING, FINAL, FRESH)]
    frames.append(patients(seed=0))
    columns = [pa.array(WRITTEN)]
    for frame in frames:
        for name in frame.columns:
            text = column_text(frame[name])
            if text is not None and not text.numeric:
                columns.append(text.values)
    # A slice starts its offsets past zero; the readings must not care.
    columns.append(columns[1].slice(7, 200))
    return columns


def test_digits_become_nines_as_the_regex_writes_them() -> None:
    for values in _columns():
        assert nines(values).equals(pc.replace_substring_regex(values, r"\d", "9"))


def test_digit_and_letter_counts_bound_what_the_patterns_need() -> None:
    for values in _columns():
        texts = values.to_pylist()
        digits = [sum("0" <= ch <= "9" for ch in text) for text in texts]
        letters = [sum(ch.isalpha() for ch in text) for text in texts]
        assert digit_counts(values).tolist() == digits
        assert (letter_counts(values) >= np.array(letters)).all()


def test_the_address_prefilter_finds_what_the_full_reading_finds() -> None:
    (address,) = [d for d in DETECTORS if d.entity is Entity.ADDRESS]
    found = 0
    for values in _columns():
        lengths = pc.utf8_length(values).to_numpy(zero_copy_only=False)
        full = (
            (lexicon.address_shaped(values) | matches(values, lexicon.STREET_LINE))
            & (lengths >= 8)
            & (lengths <= 200)
            & ~matches(values, "@")
        )
        shaped = address.shaped(values, numeric=False)
        assert shaped.tolist() == full.tolist()
        assert lexicon.street_line(values).tolist() == matches(values, lexicon.STREET_LINE).tolist()
        found += int(shaped.sum())
    assert found > 500  # the held-out address columns, and the written ones


@pytest.mark.parametrize("whole", [True, False])
def test_the_date_prefilter_finds_what_the_four_families_find(whole: bool) -> None:
    dated = 0
    for values in _columns():
        prefiltered, full = ages(values, whole=whole), _ages(values, whole=whole, today=None)
        assert np.array_equal(prefiltered, full, equal_nan=True)
        dated += int((~np.isnan(full)).sum())
    assert dated > 500  # the held-out birth-date columns, and dates inside free text
