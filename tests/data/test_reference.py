"""Reference workloads: deterministic, offline, with known PII ground truth."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bastion.data.reference import (
    PATIENT_PII_COLUMNS,
    TABLE_PII_COLUMNS,
    Reference,
    digits,
    patients,
    table,
    write_reference,
)
from bastion.errors import InvalidInput
from tests.conftest import Cli


def _luhn_ok(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def test_patients_join_breast_cancer_features_with_identities() -> None:
    frame = patients(seed=3)
    assert len(frame) == 569
    assert set(PATIENT_PII_COLUMNS) <= set(frame.columns)
    assert {"mean_radius", "diagnosis", "sex"} <= set(frame.columns)
    assert frame["diagnosis"].sum() == 212  # malignant cases in the bundled data
    assert frame["subject_id"].is_unique
    assert frame["email"].str.contains("@").all()
    assert frame["ssn"].str.fullmatch(r"\d{3}-\d{2}-\d{4}").all()
    assert frame["card_number"].map(_luhn_ok).all()


def test_generation_is_deterministic_per_seed() -> None:
    pd.testing.assert_frame_equal(patients(seed=1), patients(seed=1))
    assert not patients(seed=1)["name"].equals(patients(seed=2)["name"])
    pd.testing.assert_frame_equal(table(rows=1000, seed=5), table(rows=1000, seed=5))
    first, labels = digits(seed=0)
    again, labels_again = digits(seed=0)
    assert np.array_equal(first, again) and np.array_equal(labels, labels_again)


def test_patients_can_be_resampled_to_more_rows() -> None:
    frame = patients(rows=2000, seed=0)
    assert len(frame) == 2000 and frame["subject_id"].is_unique


def test_table_has_valid_pii_columns_and_a_learnable_target() -> None:
    frame = table(rows=20_000, seed=0)
    assert set(TABLE_PII_COLUMNS) <= set(frame.columns)
    assert frame["card_number"].map(_luhn_ok).all()
    assert frame["ip"].map(lambda ip: all(0 < int(p) < 256 for p in ip.split("."))).all()
    assert frame["phone"].str.fullmatch(r"\(\d{3}\) \d{3}-\d{4}").all()
    assert not frame["ssn"].str.startswith(("000", "666")).any()
    assert 0.3 < frame["target"].mean() < 0.7
    correlation = np.corrcoef(frame["f0"], frame["target"])[0, 1]
    assert correlation > 0.3


def test_digits_are_8x8_images() -> None:
    images, labels = digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 16
    assert set(np.unique(labels)) == set(range(10))


def test_write_refuses_wrong_formats_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"\.npz"):
        write_reference(Reference.DIGITS, out=tmp_path / "d.csv")
    with pytest.raises(InvalidInput, match=r"csv or \.parquet"):
        write_reference(Reference.PATIENTS, out=tmp_path / "p.json")
    with pytest.raises(InvalidInput, match="10\\^7"):
        table(rows=10**7 + 1)


def test_cli_writes_each_reference(cli: Cli, tmp_path: Path) -> None:
    csv, parquet, npz = tmp_path / "p.csv", tmp_path / "t.parquet", tmp_path / "d.npz"
    assert cli("data", "reference", "patients", "--out", csv, "--seed", "7").code == 0
    assert cli("data", "reference", "table", "--out", parquet, "--rows", "5000").code == 0
    assert cli("data", "reference", "digits", "--out", npz).code == 0
    assert len(pd.read_csv(csv)) == 569
    assert len(pd.read_parquet(parquet)) == 5000
    with np.load(npz, allow_pickle=False) as loaded:
        assert loaded["images"].shape == (1797, 8, 8)
    assert csv.stat().st_mode & 0o077 == 0
    assert not list(tmp_path.glob(".*partial"))
    unknown = cli("data", "reference", "faces", "--out", tmp_path / "x.csv")
    assert unknown.code == 2 and "unknown reference" in unknown.stderr
    assert re.search(
        r"wrote patients reference data", cli("data", "reference", "patients", "--out", csv).stdout
    )


def test_digits_rows_are_the_first_of_the_seeded_order(tmp_path: Path) -> None:
    images, labels = digits(seed=0)
    out = write_reference(Reference.DIGITS, out=tmp_path / "d.npz", rows=100)
    with np.load(out) as written:
        assert written["images"].shape == (100, 8, 8)
        assert np.array_equal(written["images"], images[:100])
        assert np.array_equal(written["labels"], labels[:100])
