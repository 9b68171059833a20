"""Reference workloads, generated offline under a fixed seed (DESIGN §7).

* ``patients``: scikit-learn's bundled breast-cancer features (the diagnosis is the
  target) joined with synthetic identity columns made by Faker: subject id, name,
  email, SSN, phone, address, date of birth, card number, and a ``sex`` column for
  fairness checks. The identity columns are the PII ground truth.
* ``digits``: scikit-learn's bundled 8x8 digits as an ``.npz`` of ``images`` (uint8,
  0..16) and ``labels``.
* ``table``: a large synthetic table (10^5 to 10^7 rows) for scale benchmarks, generated
  with vectorised numpy: numeric and categorical features, a binary target, and PII
  columns (email, SSN, phone, Luhn-valid card number, IPv4, checksum-valid German IBAN)
  whose values are known.
* ``notes``: synthetic clinical notes with identifiers inside the sentences and a diagnosis
  label; the identifier spans are written beside them (:mod:`bastion.data.notes`).

Nothing is downloaded: scikit-learn ships both datasets inside the package.
"""

from __future__ import annotations

import enum
from pathlib import Path

import numpy as np
import pandas as pd
from faker import Faker
from sklearn.datasets import load_breast_cancer, load_digits

from bastion.data.ingest import write_table
from bastion.errors import InvalidInput
from bastion.files import atomic_output

__all__ = [
    "PATIENT_PII_COLUMNS",
    "TABLE_PII_COLUMNS",
    "Reference",
    "digits",
    "patients",
    "table",
    "write_reference",
]

#: Column -> entity type: the ground truth a PII scan is measured against.
PATIENT_PII_COLUMNS = {
    "subject_id": "subject_id",
    "name": "person",
    "email": "email",
    "ssn": "us_ssn",
    "phone": "phone",
    "address": "address",
    "date_of_birth": "date_of_birth",
    "card_number": "card_number",
}
TABLE_PII_COLUMNS = {
    "email": "email",
    "ssn": "us_ssn",
    "phone": "phone",
    "card_number": "card_number",
    "ip": "ip_address",
    "iban": "iban",
}


class Reference(enum.StrEnum):
    PATIENTS = "patients"
    DIGITS = "digits"
    TABLE = "table"
    NOTES = "notes"


def patients(*, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The patients table; ``rows`` beyond the 569 originals are resampled with replacement."""
    bundle = load_breast_cancer(as_frame=True)
    features: pd.DataFrame = bundle.data.rename(columns=lambda c: c.replace(" ", "_"))
    features["diagnosis"] = (bundle.target == 0).astype("int64")  # 1 = malignant
    rng = np.random.default_rng(seed)
    if rows is not None:
        if rows < 1:
            raise InvalidInput("rows must be at least 1")
        index = rng.choice(len(features), size=rows, replace=rows > len(features))
        features = features.iloc[np.sort(index)].reset_index(drop=True)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    count = len(features)
    identity = pd.DataFrame(
        {
            "subject_id": [f"S{seed:03d}-{i:07d}" for i in range(count)],
            "name": [fake.name() for _ in range(count)],
            "email": [fake.email() for _ in range(count)],
            "ssn": [fake.ssn() for _ in range(count)],
            "phone": [fake.phone_number() for _ in range(count)],
            "address": [fake.address().replace("\n", ", ") for _ in range(count)],
            "date_of_birth": [
                fake.date_of_birth(minimum_age=18, maximum_age=90).isoformat() for _ in range(count)
            ],
            "card_number": [fake.credit_card_number() for _ in range(count)],
            "sex": rng.choice(["F", "M"], size=count, p=[0.7, 0.3]),
        }
    )
    return pd.concat([identity, features], axis=1)


def digits(*, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 8, 8) uint8 in 0..16 and labels (n,), in a seeded shuffled order."""
    bundle = load_digits()
    order = np.random.default_rng(seed).permutation(len(bundle.target))
    images = bundle.images[order].astype(np.uint8)
    return images, bundle.target[order].astype(np.int64)


def _luhn_complete(body: np.ndarray) -> np.ndarray:
    """Append the Luhn check digit to each row of digits (vectorised)."""
    digits_ = body.copy()
    # Double every second digit from the right of the final number (the check digit is last).
    doubled = digits_[:, ::-1][:, 0::2] * 2
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    rest = digits_[:, ::-1][:, 1::2]
    total = doubled.sum(axis=1) + rest.sum(axis=1)
    check = (10 - total % 10) % 10
    return np.concatenate([digits_, check[:, None]], axis=1)


def _join(digit_rows: np.ndarray) -> np.ndarray:
    """Rows of single digits -> strings, without a Python loop."""
    chars = (digit_rows + ord("0")).astype(np.uint8)
    return np.frombuffer(chars.tobytes(), dtype=f"S{digit_rows.shape[1]}").astype(str)


def table(*, rows: int, seed: int = 0) -> pd.DataFrame:
    """A synthetic table for scale: features, a target and PII columns, fully vectorised."""
    if not 1 <= rows <= 10**7:
        raise InvalidInput("rows must be between 1 and 10^7")
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 8)).astype(np.float32)
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(8)])
    frame.insert(0, "row_id", np.arange(rows, dtype=np.int64))
    codes = rng.integers(0, 5, rows)
    frame["category"] = pd.Categorical.from_codes(codes, pd.Index(["a", "b", "c", "d", "e"]))
    logits = features[:, 0] - 0.5 * features[:, 1] + 0.25 * features[:, 2]
    frame["target"] = (logits + rng.normal(scale=0.5, size=rows) > 0).astype(np.int8)
    users = rng.integers(0, 10**9, rows)
    pool = np.array(["example.com", "mail.test", "corp.example", "clinic.test"])
    domains = pool[rng.integers(0, 4, rows)]
    frame["email"] = _emails(users, domains)
    area = rng.integers(1, 900, rows)
    area = np.where(area == 666, 667, area)
    group, serial = rng.integers(1, 100, rows), rng.integers(1, 10000, rows)
    frame["ssn"] = (
        _digits_text(area, 3) + "-" + _digits_text(group, 2) + "-" + _digits_text(serial, 4)
    )
    exchange, line = rng.integers(200, 1000, rows), rng.integers(0, 10000, rows)
    frame["phone"] = (
        "("
        + _digits_text(rng.integers(200, 1000, rows), 3)
        + ") "
        + _digits_text(exchange, 3)
        + "-"
        + _digits_text(line, 4)
    )
    body = np.concatenate([np.full((rows, 1), 4), rng.integers(0, 10, (rows, 14))], axis=1)
    frame["card_number"] = _join(_luhn_complete(body))
    octets = rng.integers(1, 255, (rows, 4))
    frame["ip"] = pd.Series(octets[:, 0].astype(str))
    for column in range(1, 4):
        frame["ip"] = frame["ip"] + "." + octets[:, column].astype(str)
    frame["iban"] = _german_ibans(rng.integers(0, 10, (rows, 18)))
    return frame


def _german_ibans(bban: np.ndarray) -> np.ndarray:
    """``DE`` + ISO 7064 mod-97 check digits + the 18-digit BBAN, vectorised."""
    # The check is computed over BBAN + "DE00" with letters as numbers (D=13, E=14).
    rearranged = np.concatenate([bban, np.tile([1, 3, 1, 4, 0, 0], (len(bban), 1))], axis=1)
    remainder = np.zeros(len(bban), dtype=np.int64)
    for column in rearranged.T:
        remainder = (remainder * 10 + column) % 97
    check = 98 - remainder
    return np.char.add(np.char.add("DE", np.char.zfill(check.astype(str), 2)), _join(bban))


def _digits_text(values: np.ndarray, width: int) -> pd.Series:
    return pd.Series(values.astype(str)).str.zfill(width)


def _emails(users: np.ndarray, domains: np.ndarray) -> pd.Series:
    return "user" + pd.Series(users.astype(str)) + "@" + pd.Series(domains)


def write_reference(kind: Reference, *, out: Path, rows: int | None = None, seed: int = 0) -> Path:
    """Generate a reference workload and write it atomically (CSV, Parquet or NPZ)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind is Reference.DIGITS:
        if out.suffix != ".npz":
            raise InvalidInput(f"{out}: digits are written as .npz")
        images, labels = digits(seed=seed)
        images, labels = images[:rows], labels[:rows]  # the first rows of the seeded order
        with atomic_output(out, mode=0o600) as handle:
            np.savez(handle, images=images, labels=labels)
        return out
    if kind is Reference.NOTES:
        from bastion.data.notes import write_notes  # noqa: PLC0415

        return write_notes(out, rows=rows, seed=seed)[0]
    if out.suffix not in (".csv", ".parquet"):
        raise InvalidInput(f"{out}: tables are written as .csv or .parquet")
    if kind is Reference.PATIENTS:
        frame = patients(rows=rows, seed=seed)
    else:
        frame = table(rows=rows or 100_000, seed=seed)
    write_table(frame, out)
    return out
