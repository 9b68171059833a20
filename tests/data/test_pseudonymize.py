"""Pseudonymisation: stable keyed pseudonyms, canonical spellings, generalisation, the
columns treated by default (identifiers and suspects), refusals."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pandas as pd
import pytest

from bastion.agent.data_jobs import run_pseudonymize
from bastion.agent.job import JobContext
from bastion.agent.staging import INPUTS, OUTPUTS, REQUEST
from bastion.data.ingest import Loaded, TableFile, describe, read_canonical, write_table
from bastion.data.layout import DATA_FILES
from bastion.data.pii import Entity, scan_frame
from bastion.data.pseudonymize import (
    Generalization,
    plan_columns,
    pseudonym,
    pseudonymize_frame,
)
from bastion.data.reference import patients
from bastion.errors import ConfigurationError, InvalidInput
from bastion.security.keys import Keyring
from bastion.spec import PseudonymizeJob
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


def _clinic(rows: int = 60) -> pd.DataFrame:
    """A table with identifiers (subject_id, email) and one suspect: ``contact`` holds a
    phone number in 30% of its rows, too few for the scan to call it a phone column."""
    return pd.DataFrame(
        {
            "subject_id": [f"S{i:04d}" for i in range(rows)],
            "email": [f"patient{i}@example.org" for i in range(rows)],
            "contact": [
                f"+44 20 7946 {i:04d}" if i % 10 < 3 else "ask at reception" for i in range(rows)
            ],
            "age": [20 + i % 50 for i in range(rows)],
            "mean_radius": [10.0 + i / 10 for i in range(rows)],
            "diagnosis": [i % 2 for i in range(rows)],
        }
    )


def _recorded(frame: pd.DataFrame, *, subject: str = "subject_id") -> dict[str, Any]:
    """What the control plane hands a job about the version (``_version_info``)."""
    described = describe(
        Loaded(kind="table", frame=frame), target="diagnosis", subject_id_column=subject
    )
    return {
        "name": "clinic",
        "version": 1,
        "kind": "table",
        "manifest_hash": "0" * 64,
        "target": "diagnosis",
        "subject_id_column": subject,
        "identifier_columns": described["identifier_columns"],
        "suspect_columns": described["summaries"]["suspect_columns"],
        "pii": described["summaries"]["pii"],
    }


def test_the_scan_records_a_weak_column_as_a_suspect_apart_from_the_identifiers(
    tmp_path: Path,
) -> None:
    frame = _clinic()
    report = scan_frame(frame, suspects=True)
    assert report.suspected() == {"contact": "phone"}
    assert report.entities() == {"email": "email"}
    recorded = _recorded(frame)
    assert recorded["identifier_columns"] == ["email", "subject_id"]
    assert recorded["suspect_columns"] == ["contact"]
    # A registered file is described from disk, column by column: the same names.
    write_table(frame, tmp_path / "data.parquet")
    on_disk = describe(TableFile(tmp_path / "data.parquet"), subject_id_column="subject_id")
    assert on_disk["summaries"]["suspect_columns"] == ["contact"]
    # A suspect that is an identifier anyway (here the subject id) is listed once, there.
    as_subject = _recorded(frame, subject="contact")
    assert as_subject["identifier_columns"] == ["contact", "email"]
    assert as_subject["suspect_columns"] == []


def test_by_default_identifiers_and_suspects_are_pseudonymised_and_the_rest_listed(
    keyring: Keyring,
) -> None:
    frame = _clinic()
    recorded = _recorded(frame)
    plan = plan_columns(
        list(frame.columns),
        identifiers=recorded["identifier_columns"],
        suspects=recorded["suspect_columns"],
        target="diagnosis",
    )
    assert plan.default
    assert plan.pseudonymize == ["subject_id", "email", "contact"]
    assert plan.untouched == ["age", "mean_radius", "diagnosis"]
    assert plan.lines() == [
        "pseudonymised (by default: every identifier and suspected identifier): "
        "subject_id, email, contact",
        "left untouched: age, mean_radius, diagnosis",
    ]
    result = pseudonymize_frame(frame, prf=keyring.pseudonym_prf(), pseudonymize=plan.pseudonymize)
    assert result["contact"].str.fullmatch(r"psn_[0-9a-f]{20}").all()
    pd.testing.assert_frame_equal(
        result[["age", "mean_radius", "diagnosis"]], frame[["age", "mean_radius", "diagnosis"]]
    )
    # The target is never replaced, even when the scan suspects it.
    kept_target = plan_columns(
        list(frame.columns),
        identifiers=recorded["identifier_columns"],
        suspects=recorded["suspect_columns"],
        target="contact",
    )
    assert kept_target.pseudonymize == ["subject_id", "email"]
    assert kept_target.untouched == ["contact", "age", "mean_radius", "diagnosis"]


def test_named_columns_keep_their_treatment_and_the_rest_is_listed_untouched() -> None:
    frame = _clinic()
    recorded = _recorded(frame)
    plan = plan_columns(
        list(frame.columns),
        pseudonymize=["email"],
        drop=["subject_id"],
        identifiers=recorded["identifier_columns"],
        suspects=recorded["suspect_columns"],
        target="diagnosis",
    )
    assert not plan.default
    assert plan.pseudonymize == ["email"] and plan.drop == ["subject_id"]
    assert plan.untouched == ["contact", "age", "mean_radius", "diagnosis"]
    assert plan.lines()[-1] == "left untouched: contact, age, mean_radius, diagnosis"


def test_a_default_with_nothing_to_treat_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no identifier or suspected identifier"):
        plan_columns(["age", "diagnosis"], identifiers=[], suspects=[], target="diagnosis")


@pytest.mark.parametrize(
    ("entity", "spellings"),
    [
        (
            Entity.PHONE,
            [
                "+44 20 7946 0958",
                "0044 20 7946 0958",
                "+44 (0)20 7946 0958",
                "+442079460958",
                "020 7946 0958",  # national: read in the column's region
            ],
        ),
        (Entity.EMAIL, ["Ann@Example.com ", "ann@example.com", " ANN@EXAMPLE.COM"]),
        (Entity.US_SSN, ["123-45-6789", "123 45 6789", "123456789"]),
        (Entity.CARD_NUMBER, ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111"]),
        (Entity.IBAN, ["GB82 WEST 1234 5698 7654 32", "gb82-west-1234-5698-7654-32"]),
    ],
)
def test_one_subject_written_several_ways_gets_one_pseudonym(
    keyring: Keyring, entity: Entity, spellings: list[str]
) -> None:
    frame = pd.DataFrame({"value": spellings})
    prf = keyring.pseudonym_prf()
    spelled = pseudonymize_frame(frame, prf=prf, pseudonymize=["value"], entities={"value": entity})
    assert spelled["value"].nunique() == 1
    as_written = pseudonymize_frame(frame, prf=prf, pseudonymize=["value"])
    assert as_written["value"].nunique() > 1  # the canonical spelling is what made them one


def test_a_value_without_a_canonical_form_is_pseudonymised_as_written(keyring: Keyring) -> None:
    frame = pd.DataFrame({"contact": ["+44 20 7946 0958", " ask at reception "]})
    prf = keyring.pseudonym_prf()
    result = pseudonymize_frame(
        frame, prf=prf, pseudonymize=["contact"], entities={"contact": "phone"}
    )
    assert result["contact"].tolist() == [
        pseudonym("+442079460958", prf),
        pseudonym("ask at reception", prf),
    ]


def _job_context(workdir: Path, lines: list[str]) -> JobContext:
    return cast(JobContext, SimpleNamespace(log=lines.append, workdir=workdir))


def _staged(tmp_path: Path, frame: pd.DataFrame, info: dict[str, Any] | None = None) -> Path:
    workdir = tmp_path / "work"
    folder = workdir / INPUTS / "input"
    folder.mkdir(parents=True)
    write_table(frame, folder / DATA_FILES["table"])
    (folder / "version.json").write_text(json.dumps(info or _recorded(frame)))
    return workdir


def test_the_job_pseudonymises_suspects_by_default_and_records_what_it_left(
    keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_PSEUDONYM_KEY", keyring.pseudonym_capability())
    frame = _clinic()
    frame.loc[1, "email"] = "  PATIENT0@Example.ORG"  # subject 0 again, written otherwise
    workdir, lines = _staged(tmp_path, frame), list[str]()
    job = PseudonymizeJob.model_validate({"type": "pseudonymize", "dataset": "clinic@1"})
    run_pseudonymize(_job_context(workdir, lines), job)
    request = json.loads((workdir / OUTPUTS / REQUEST).read_text())
    summaries = request["summaries"]
    assert summaries["pseudonymization"] == {
        "default": True,
        "pseudonymized": ["subject_id", "email", "contact"],
        "generalized": {},
        "dropped": [],
        "untouched": ["age", "mean_radius", "diagnosis"],
    }
    assert "left untouched: age, mean_radius, diagnosis" in lines
    # A pseudonymised suspect is personal data still: an identifier of the new version.
    assert summaries["identifier_columns"] == ["contact", "email", "subject_id"]
    assert summaries["suspect_columns"] == []
    made = read_canonical(workdir / OUTPUTS / DATA_FILES["table"]).table()
    prf = keyring.pseudonym_prf()
    first, second = made["email"].tolist()[:2]
    assert first == second == pseudonym("patient0@example.org", prf)
    # The subject id keeps its spelling: an erasure finds the pseudonym of the id as written.
    assert made["subject_id"].tolist() == [pseudonym(s, prf) for s in frame["subject_id"]]
    assert not set(frame["contact"]) & set(made["contact"])


def test_the_subject_column_keeps_its_spelling_so_that_erasure_finds_it(
    keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_PSEUDONYM_KEY", keyring.pseudonym_capability())
    frame = _clinic()
    frame.loc[1, "email"] = "PATIENT0@Example.ORG"
    workdir = _staged(tmp_path, frame, _recorded(frame, subject="email"))
    job = PseudonymizeJob.model_validate({"type": "pseudonymize", "dataset": "clinic@1"})
    run_pseudonymize(_job_context(workdir, []), job)
    made = read_canonical(workdir / OUTPUTS / DATA_FILES["table"]).table()
    prf = keyring.pseudonym_prf()
    # An erasure request matches pseudonym(subject id as written): no canonical spelling here.
    assert made["email"].tolist() == [pseudonym(v, prf) for v in frame["email"]]
    first, second = made["email"].tolist()[:2]
    assert first != second


def test_the_job_keeps_named_columns_and_a_suspect_left_untouched_stays_one(
    keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_PSEUDONYM_KEY", keyring.pseudonym_capability())
    frame = _clinic()
    # A suspect the version recorded stays one even where the scan of the result, which
    # samples, would not find it again.
    info = {**_recorded(frame), "suspect_columns": ["contact", "mean_radius"]}
    workdir, lines = _staged(tmp_path, frame, info), list[str]()
    job = PseudonymizeJob.model_validate(
        {"type": "pseudonymize", "dataset": "clinic@1", "pseudonymize": ["email"]}
    )
    run_pseudonymize(_job_context(workdir, lines), job)
    summaries = json.loads((workdir / OUTPUTS / REQUEST).read_text())["summaries"]
    assert summaries["pseudonymization"]["pseudonymized"] == ["email"]
    assert summaries["pseudonymization"]["untouched"] == [
        "subject_id",
        "contact",
        "age",
        "mean_radius",
        "diagnosis",
    ]
    assert "left untouched: subject_id, contact, age, mean_radius, diagnosis" in lines
    assert summaries["suspect_columns"] == ["contact", "mean_radius"]
