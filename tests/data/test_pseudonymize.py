"""Pseudonymisation: stable keyed pseudonyms, generalisation, refusals."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from bastion.data.pseudonymize import Generalization, pseudonymize_frame
from bastion.data.reference import patients
from bastion.errors import ConfigurationError, InvalidInput
from bastion.security.keys import Keyring
from tests.conftest import other_keyring


def test_pseudonyms_are_stable_across_datasets_and_keyed(keyring: Keyring, tmp_path: Path) -> None:
    frame = patients(seed=0).head(100)
    first = pseudonymize_frame(frame, prf=keyring.pseudonym_prf(), pseudonymize=["ssn", "email"])
    subset = pseudonymize_frame(
        frame.iloc[::-1].head(10), prf=keyring.pseudonym_prf(), pseudonymize=["ssn"]
    )
    mapping = dict(zip(frame["ssn"], first["ssn"], strict=True))
    assert all(
        mapping[raw] == pseudo
        for raw, pseudo in zip(frame.iloc[::-1].head(10)["ssn"], subset["ssn"], strict=True)
    )
    assert first["ssn"].str.fullmatch(r"psn_[0-9a-f]{20}").all()
    assert first["ssn"].is_unique
    assert not set(frame["ssn"]) & set(first["ssn"])
    assert not set(frame["email"]) & set(first["email"])
    elsewhere = pseudonymize_frame(
        frame, prf=other_keyring(tmp_path / "other").pseudonym_prf(), pseudonymize=["ssn"]
    )
    assert not set(first["ssn"]) & set(elsewhere["ssn"])
    pd.testing.assert_frame_equal(frame, patients(seed=0).head(100))  # input untouched


def test_generalisation_and_dropping(keyring: Keyring) -> None:
    frame = pd.DataFrame(
        {
            "date_of_birth": ["1990-06-01", "1955-01-31", None],
            "address": [
                "1 Main Street, Springfield, IL 62704",
                "PSC 0032, Box 3953, APO AE 84371",
                "nowhere",
            ],
            "name": ["Ann Lee", "Bob Roe", "Cy Doe"],
            "score": [1, 2, 3],
        }
    )
    result = pseudonymize_frame(
        frame,
        prf=keyring.pseudonym_prf(),
        generalize={"date_of_birth": Generalization.AGE_BAND, "address": Generalization.ZIP3},
        drop=["name"],
        today=dt.date(2026, 11, 25),
    )
    assert list(result.columns) == ["date_of_birth", "address", "score"]
    assert result["date_of_birth"].tolist() == ["30-39", "70-79", None]
    assert result["address"].tolist() == ["627**", "843**", None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pseudonymize": ["nope"]}, "unknown column"),
        ({"pseudonymize": ["ssn"], "drop": ["ssn"]}, "more than one treatment"),
        ({}, "at least one column"),
    ],
)
def test_refusals(keyring: Keyring, kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        pseudonymize_frame(patients(seed=0).head(5), prf=keyring.pseudonym_prf(), **kwargs)  # type: ignore[arg-type]


def test_a_capability_computes_the_same_pseudonyms_and_nothing_else(keyring: Keyring) -> None:
    from bastion.security.keys import prf_from_capability

    frame = patients(seed=0).head(20)
    capability = prf_from_capability(keyring.pseudonym_capability())
    direct = pseudonymize_frame(frame, prf=keyring.pseudonym_prf(), pseudonymize=["ssn"])
    handed = pseudonymize_frame(frame, prf=capability, pseudonymize=["ssn"])
    assert direct["ssn"].tolist() == handed["ssn"].tolist()
    text = keyring.pseudonym_capability()
    assert "HmacPrfKey" in text and "AesGcm" not in text and "Ecdsa" not in text
    with pytest.raises(ConfigurationError, match="pseudonym key"):
        prf_from_capability('{"primaryKeyId": 1, "key": []}')
