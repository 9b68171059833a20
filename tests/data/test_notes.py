"""The clinical-notes reference: identifiers inside sentences, their spans exact, the label
learnable, the same seed giving the same notes."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import phonenumbers
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from bastion.data.notes import DIAGNOSES, NOTE_ENTITIES, notes, write_notes
from bastion.errors import InvalidInput
from tests.conftest import Cli

_DATE_FORMATS = ("%d/%m/%Y", "%Y-%m-%d", "%d.%m.%Y", "%B %d, %Y", "%m/%d/%Y", "%d %b %Y")


def _is_date(text: str) -> bool:
    for layout in _DATE_FORMATS:
        try:
            dt.datetime.strptime(text, layout)
        except ValueError:
            continue
        return True
    return False


def _is_phone(text: str) -> bool:
    spelled = "+" + text[2:] if text.startswith("00") else text
    regions = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "PL")
    for region in (None,) if spelled.startswith("+") else regions:
        try:
            if phonenumbers.is_possible_number(phonenumbers.parse(spelled, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


#: What each entity's text must look like, checked here without the generator's code.
SHAPES: dict[str, Callable[[str], bool]] = {
    "person": lambda t: bool(re.fullmatch(r"[^\W\d_][\w'\- .]*", t)),
    "phone": _is_phone,
    "email": lambda t: bool(re.fullmatch(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", t)),
    "us_ssn": lambda t: bool(re.fullmatch(r"\d{3}([- ]?)\d{2}\1\d{4}", t)),
    "date_of_birth": _is_date,
    "record_number": lambda t: bool(re.fullmatch(r"MRN-\d{8}", t)),
}


def test_every_span_is_an_identifier_of_its_entity_and_they_do_not_overlap() -> None:
    made = notes(rows=300, seed=3)
    seen: Counter[str] = Counter()
    international = set()
    for note in made:
        assert note.diagnosis in DIAGNOSES
        previous_end = 0
        for span in note.spans:
            assert previous_end <= span.start < span.end <= len(note.text), (note, span)
            previous_end = span.end
            text = note.text[span.start : span.end]
            assert SHAPES[span.entity](text), (span.entity, text)
            seen[span.entity] += 1
            if span.entity == "phone" and text.startswith(("+", "00")):
                international.add(text.lstrip("+0").split()[0][:2])
    assert set(seen) == set(NOTE_ENTITIES), seen
    assert len(international) >= 4, international  # several countries' codes


def test_the_same_seed_gives_the_same_notes_and_another_seed_others() -> None:
    assert notes(rows=50, seed=7) == notes(rows=50, seed=7)
    assert notes(rows=50, seed=7) != notes(rows=50, seed=8)


def test_the_diagnosis_is_learnable_from_the_text() -> None:
    made = notes(rows=800, seed=0)
    texts, labels = [n.text for n in made], [n.diagnosis for n in made]
    assert min(Counter(labels).values()) > 150  # about equal shares
    words = CountVectorizer().fit(texts[:600])
    model = LogisticRegression(max_iter=1000).fit(words.transform(texts[:600]), labels[:600])
    assert model.score(words.transform(texts[600:]), labels[600:]) > 0.85


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_writes_the_notes_and_their_spans_beside_them(
    cli: Cli, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"notes{suffix}"
    result = cli("data", "reference", "notes", "--rows", "40", "--seed", "2", "--out", str(out))
    assert "wrote notes reference data" in result.stdout
    assert "notes.spans.jsonl" in result.stdout
    frame = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(frame.columns) == ["note_id", "note", "diagnosis"]
    assert len(frame) == 40
    truth = [json.loads(line) for line in (tmp_path / "notes.spans.jsonl").read_text().splitlines()]
    assert [t["note_id"] for t in truth] == list(frame["note_id"])
    expected = notes(rows=40, seed=2)
    for row, spans, note in zip(frame.itertuples(), truth, expected, strict=True):
        assert row.note == note.text  # offsets hold in the file as written
        written = [tuple(s) for s in spans["spans"]]
        assert written == [(s.start, s.end, s.entity) for s in note.spans]
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_notes_are_refused_in_other_formats(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"notes are written as \.csv or \.parquet"):
        write_notes(tmp_path / "notes.npz", rows=5)
