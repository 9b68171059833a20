"""PII detection against the reference generators' ground truth."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa

from bastion.data.pii import Entity, _iban_ok, scan_frame, scan_series
from bastion.data.reference import PATIENT_PII_COLUMNS, TABLE_PII_COLUMNS, patients, table


def test_every_identifier_column_of_the_patients_table_is_found() -> None:
    frame = patients(seed=0)
    report = scan_frame(frame)
    expected = {c: e for c, e in PATIENT_PII_COLUMNS.items() if c != "subject_id"}
    assert report.entities() == expected
    assert all(f.confidence >= 0.8 for f in report.columns)


def test_the_large_table_is_classified_exactly() -> None:
    report = scan_frame(table(rows=50_000, seed=1))
    assert report.entities() == TABLE_PII_COLUMNS


def test_the_report_never_contains_values() -> None:
    frame = patients(seed=0).head(200)
    summary = json.dumps(scan_frame(frame).summary())
    for column in PATIENT_PII_COLUMNS:
        for value in frame[column].astype(str).head(50):
            assert value not in summary


def test_checksums_separate_real_identifiers_from_look_alikes() -> None:
    valid_cards = pd.Series(["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009"] * 20)
    assert [f.entity for f in scan_series("c", valid_cards)] == [Entity.CARD_NUMBER]
    invalid_cards = pd.Series(
        ["4111 1111 1111 1112", "5500-0000-0000-0005", "340000000000001"] * 20
    )
    assert scan_series("c", invalid_cards) == []
    ibans = pd.Series(
        ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606"]
        * 20
    )
    assert [f.entity for f in scan_series("i", ibans)] == [Entity.IBAN]
    broken = pd.Series(["GB82 WEST 1234 5698 7654 33", "DE89370400440532013001"] * 20)
    assert scan_series("i", broken) == []


def _mod_97(value: str) -> bool:
    """The ISO 7064 definition, one character at a time."""
    moved = value.replace(" ", "")
    moved = moved[4:] + moved[:4]
    return 15 <= len(moved) <= 34 and int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def test_the_vectorised_iban_check_is_the_iso_definition() -> None:
    rng = np.random.default_rng(0)
    ibans = table(rows=2000, seed=2)["iban"].tolist()
    damaged = [
        v[:i] + str((int(v[i]) + 1) % 10) + v[i + 1 :]
        for v, i in zip(ibans[:500], rng.integers(4, 22, 500), strict=True)
    ]
    others = ["GB82 WEST 1234 5698 7654 32", "gb82west12345698765432", "NO9386011117947"]
    others += ["LC55HEMM000100010012001200023015", "DE8937040044053201300", "DE89-3704"]
    values = [*ibans, *damaged, *others]
    expected = [_mod_97(v) if v.replace(" ", "").isalnum() else False for v in values]
    assert _iban_ok(pa.array(values)).tolist() == expected
    assert sum(expected) == 2000 + 4


def test_free_text_columns_are_searched_inside() -> None:
    notes = pd.Series(
        [
            f"Patient called about the invoice; reach them at person{i}@example.org after lunch."
            if i % 3 == 0
            else "Follow-up visit scheduled, no changes to the medication plan this week at all."
            for i in range(300)
        ]
    )
    findings = scan_series("notes", notes)
    assert [(f.entity, f.free_text) for f in findings] == [(Entity.EMAIL, True)]
    assert findings[0].matched == 100


def test_ordinary_columns_are_not_flagged() -> None:
    frame = pd.DataFrame(
        {
            "diagnosis": ["benign", "malignant"] * 50,
            "ward": [f"Ward {i % 7}" for i in range(100)],
            "score": range(100),
            "comment": ["stable"] * 100,
        }
    )
    assert scan_frame(frame).columns == []


def test_mixed_columns_below_the_threshold_are_not_classified() -> None:
    mixed = pd.Series([f"user{i}@example.com" if i % 2 else f"code-{i}" for i in range(400)])
    assert scan_series("mixed", mixed) == []


def test_identifiers_read_back_as_integers_are_still_found() -> None:
    frame = patients(seed=0)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    buffer.seek(0)
    reread = pd.read_csv(buffer)
    assert pd.api.types.is_integer_dtype(reread["card_number"])
    assert scan_frame(reread).entities()["card_number"] == "card_number"
    # Small integers (counts, codes) are not mistaken for identifiers.
    assert scan_frame(pd.DataFrame({"visits": range(1000)})).columns == []
