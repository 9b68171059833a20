"""The privacy gate: identifiers and suspected identifiers are refused as features unless
explicitly overridden."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pandas as pd
import pytest

from bastion.agent.job import JobContext
from bastion.agent.train_job import _features
from bastion.data.feature_gate import check_features
from bastion.data.ingest import Loaded, describe
from bastion.data.reference import patients
from bastion.errors import PolicyViolation
from bastion.spec import TrainJob


def _identifiers() -> list[str]:
    described = describe(
        Loaded(kind="table", frame=patients(seed=0)),
        target="diagnosis",
        subject_id_column="subject_id",
    )
    identifiers: list[str] = described["identifier_columns"]
    return identifiers


def test_raw_identifiers_are_refused_as_features() -> None:
    identifiers = _identifiers()
    assert {"ssn", "email", "subject_id", "card_number"} <= set(identifiers)
    refusal = "ssn, email in patients@1 identify people"
    with pytest.raises(PolicyViolation, match=refusal) as refused:
        check_features(
            ["mean_radius", "ssn", "email"], identifier_columns=identifiers, dataset="patients@1"
        )
    assert "pseudonymize" in str(refused.value) and "override" in str(refused.value)


def test_clean_features_pass_and_an_explicit_override_is_reported() -> None:
    identifiers = _identifiers()
    assert check_features(["mean_radius", "sex"], identifier_columns=identifiers) == []
    overridden = check_features(
        ["mean_radius", "date_of_birth"], identifier_columns=identifiers, allowed=["date_of_birth"]
    )
    assert overridden == ["date_of_birth"]


def test_an_override_naming_a_non_identifier_is_refused() -> None:
    with pytest.raises(PolicyViolation, match="mean_radius"):
        check_features(["mean_radius"], identifier_columns=_identifiers(), allowed=["mean_radius"])


def _clinic() -> tuple[list[str], list[str]]:
    """Identifier and suspect columns as a registration records them: ``contact`` holds a
    phone number in 30% of its rows, a suspect."""
    rows = 60
    frame = pd.DataFrame(
        {
            "subject_id": [f"S{i:04d}" for i in range(rows)],
            "email": [f"patient{i}@example.org" for i in range(rows)],
            "contact": [
                f"+44 20 7946 {i:04d}" if i % 10 < 3 else "ask at reception" for i in range(rows)
            ],
            "age": [20 + i % 50 for i in range(rows)],
            "diagnosis": [i % 2 for i in range(rows)],
        }
    )
    described = describe(
        Loaded(kind="table", frame=frame), target="diagnosis", subject_id_column="subject_id"
    )
    return described["identifier_columns"], described["summaries"]["suspect_columns"]


def test_a_suspected_identifier_is_refused_as_a_feature_and_named_as_suspected() -> None:
    identifiers, suspects = _clinic()
    assert (identifiers, suspects) == (["email", "subject_id"], ["contact"])
    with pytest.raises(PolicyViolation) as refused:
        check_features(
            ["age", "contact"],
            identifier_columns=identifiers,
            suspect_columns=suspects,
            dataset="clinic@1",
        )
    message = str(refused.value)
    assert "contact in clinic@1 are suspected identifiers" in message
    assert "pseudonymize" in message and "override" in message
    with pytest.raises(PolicyViolation, match="email in clinic@1 identify people; contact in"):
        check_features(
            ["email", "contact"],
            identifier_columns=identifiers,
            suspect_columns=suspects,
            dataset="clinic@1",
        )


def test_the_explicit_override_lets_a_suspect_through_and_reports_it() -> None:
    identifiers, suspects = _clinic()
    overridden = check_features(
        ["age", "contact"],
        identifier_columns=identifiers,
        suspect_columns=suspects,
        allowed=["contact"],
    )
    assert overridden == ["contact"]
    # Naming a suspect that is not used is no stale override either.
    unused = check_features(
        ["age"], identifier_columns=identifiers, suspect_columns=suspects, allowed=["contact"]
    )
    assert unused == []


def test_an_override_naming_neither_an_identifier_nor_a_suspect_is_refused() -> None:
    identifiers, suspects = _clinic()
    with pytest.raises(PolicyViolation, match="names age, which clinic@1's scan did not find"):
        check_features(
            ["age"],
            identifier_columns=identifiers,
            suspect_columns=suspects,
            allowed=["age", "contact"],
            dataset="clinic@1",
        )


def _train_job(**fields: object) -> TrainJob:
    return TrainJob.model_validate(
        {
            "type": "train",
            "dataset": "clinic@1",
            "model_name": "clinic-mlp",
            "model": {"builtin": "mlp"},
            **fields,
        }
    )


def test_default_features_leave_identifiers_and_suspects_out() -> None:
    identifiers, suspects = _clinic()
    frame = pd.DataFrame(
        {
            "subject_id": ["S1"],
            "email": ["a@b.org"],
            "contact": ["n/a"],
            "age": [30],
            "sex": ["F"],
            "diagnosis": [1],
        }
    )
    info = {
        "name": "clinic",
        "version": 1,
        "identifier_columns": identifiers,
        "suspect_columns": suspects,
    }
    lines: list[str] = []
    context = cast(JobContext, SimpleNamespace(log=lines.append))
    assert _features(context, _train_job(), info, frame, "diagnosis") == ["age", "sex"]
    assert any("contact (suspected identifiers" in line for line in lines)
    overridden = _train_job(train={"allow_identifier_features": ["contact"]})
    assert _features(context, overridden, info, frame, "diagnosis") == ["contact", "age", "sex"]
    with pytest.raises(PolicyViolation, match="contact in clinic@1 are suspected identifiers"):
        _features(context, _train_job(features=["age", "contact"]), info, frame, "diagnosis")
