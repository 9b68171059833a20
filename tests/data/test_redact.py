"""Redaction inside free text (bastion.data.redact): typed placeholders or keyed pseudonyms in
place of every identifier span; one subject, one pseudonym, in text as in columns."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from bastion.data.notes import notes
from bastion.data.pseudonymize import PREFIX, plan_columns, pseudonym, pseudonymize_frame
from bastion.data.redact import Redaction, redact_frame, redact_text
from bastion.errors import InvalidInput
from bastion.security.keys import Keyring
from bastion.spec import PseudonymizeJob
from tests.conftest import other_keyring

NOTE = (
    "Patient Anna Kowalska (DOB 12/03/1950, MRN-12345678) called from +44 20 7946 0958 "
    "about her results; mail ann@example.com, SSN 123-45-6789. Seen by Dr. Okafor."
)


def test_placeholders_replace_every_identifier_and_keep_the_rest() -> None:
    counts: Counter[str] = Counter()
    redacted = redact_text(NOTE, mode=Redaction.PLACEHOLDER, counts=counts)
    assert redacted == (
        "Patient [PERSON] (DOB [DATE_OF_BIRTH], [RECORD_NUMBER]) called from [PHONE] "
        "about her results; mail [EMAIL], SSN [US_SSN]. Seen by Dr. [PERSON]."
    )
    assert counts == Counter(person=2, date_of_birth=1, record_number=1, phone=1, email=1, us_ssn=1)


def test_a_pseudonym_is_the_one_the_same_identifier_gets_in_a_column(keyring: Keyring) -> None:
    prf = keyring.pseudonym_prf()
    redacted = redact_text(NOTE, mode=Redaction.PSEUDONYM, prf=prf)
    column = pd.DataFrame({"phone": ["+44 (0)20 7946 0958"], "email": ["Ann@Example.com"]})
    columns = pseudonymize_frame(
        column,
        prf=prf,
        pseudonymize=["phone", "email"],
        entities={"phone": "phone", "email": "email"},
    )
    assert f"[PHONE {columns['phone'][0]}]" in redacted
    assert f"[EMAIL {columns['email'][0]}]" in redacted
    assert f"[US_SSN {pseudonym('123456789', prf)}]" in redacted
    for secret in ("Kowalska", "7946", "ann@example.com", "6789", "Okafor", "1950"):
        assert secret not in redacted
    # Another key, other pseudonyms; written another way, the same one.
    assert redact_text(NOTE, mode=Redaction.PSEUDONYM, prf=prf) == redacted
    respelled = NOTE.replace("+44 20 7946 0958", "0044 20 7946 0958").replace(
        "123-45-6789", "123 45 6789"
    )
    assert redact_text(respelled, mode=Redaction.PSEUDONYM, prf=prf) == redacted


def test_another_key_gives_other_pseudonyms(keyring: Keyring, tmp_path: Path) -> None:
    ours = redact_text(NOTE, mode=Redaction.PSEUDONYM, prf=keyring.pseudonym_prf())
    theirs = redact_text(
        NOTE, mode=Redaction.PSEUDONYM, prf=other_keyring(tmp_path / "other").pseudonym_prf()
    )
    assert ours != theirs
    keyed = re.compile(re.escape(PREFIX) + r"[0-9a-f]+")
    assert keyed.sub("P", ours) == keyed.sub("P", theirs)


def test_pseudonyms_need_the_key() -> None:
    with pytest.raises(ValueError, match="needs the pseudonym key"):
        redact_text(NOTE, mode=Redaction.PSEUDONYM)


def test_a_frame_is_redacted_column_by_column_and_counted() -> None:
    made = notes(rows=60, seed=9)
    frame = pd.DataFrame({"note": [n.text for n in made], "diagnosis": [n.diagnosis for n in made]})
    frame.loc[3, "note"] = None
    result, counts = redact_frame(frame, {"note": Redaction.PLACEHOLDER})
    assert frame["note"][0] == made[0].text  # the input is untouched
    assert pd.isna(result["note"][3])
    assert result["diagnosis"].tolist() == frame["diagnosis"].tolist()
    expected: Counter[str] = Counter()
    left, total = 0, 0
    for index, note in enumerate(made):
        if index == 3:
            continue
        expected.update(s.entity for s in note.spans)
        for span in note.spans:  # identifiers left as they were written (a missed span)
            total += 1
            left += note.text[span.start : span.end] in result["note"][index]
    assert left <= 0.02 * total, (left, total)
    found = counts["note"]
    for entity, number in expected.items():
        assert abs(found.get(entity, 0) - number) <= 0.03 * number, (entity, found, expected)
    with pytest.raises(InvalidInput, match="no column notes to redact"):
        redact_frame(frame, {"notes": Redaction.PLACEHOLDER})


def test_a_redaction_plan_names_its_columns_and_refuses_a_double_treatment() -> None:
    plan = plan_columns(["note", "age", "ssn"], redact={"note": "pseudonym"}, identifiers={"ssn"})
    assert not plan.default  # a redaction names its columns: nothing else is treated
    assert plan.pseudonymize == [] and plan.untouched == ["age", "ssn"]
    assert plan.summary()["redacted"] == {"note": "pseudonym"}
    assert "redacted inside: note (pseudonym)" in plan.lines()
    job = {"type": "pseudonymize", "dataset": "notes@1", "redact": {"note": "placeholder"}}
    PseudonymizeJob.model_validate(job)
    with pytest.raises(ValidationError, match="note: redacted and treated otherwise"):
        PseudonymizeJob.model_validate({**job, "drop": ["note"]})
    with pytest.raises(ValidationError, match="placeholder"):
        PseudonymizeJob.model_validate({**job, "redact": {"note": "blank"}})


def test_by_default_a_flagged_free_text_column_is_redacted_not_replaced_whole() -> None:
    plan = plan_columns(
        ["note", "ssn", "age"],
        identifiers={"ssn", "note"},
        free_text={"note"},
    )
    assert plan.default
    assert plan.pseudonymize == ["ssn"]
    assert plan.redact == {"note": "pseudonym"}
    assert plan.untouched == ["age"]
