"""The privacy gate: identifiers are refused as features unless explicitly overridden."""

from __future__ import annotations

import pytest

from bastion.data.feature_gate import check_features
from bastion.data.ingest import Loaded, describe
from bastion.data.reference import patients
from bastion.errors import PolicyViolation


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
