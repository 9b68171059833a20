"""A table described from its canonical file a batch at a time: what describing it whole says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bastion.data import profile
from bastion.data.canonical import write_csv, write_parquet
from bastion.data.checks import category_rows, infer_table_schema
from bastion.data.ingest import Loaded, TableFile, describe, read_canonical
from bastion.data.pii import scan_frame
from bastion.data.reference import patients
from bastion.data.schema import ColumnType


def _file(tmp_path: Path, frame: pd.DataFrame, name: str = "table") -> TableFile:
    source = tmp_path / f"{name}.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / f"{name}.parquet"
    write_csv(source, out)
    return TableFile(out)


def _late_surprises(rows: int = 300) -> pd.DataFrame:
    """Columns whose last rows change what their schema says."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "count": np.arange(rows),
            "gap": np.arange(rows, dtype=float),
            "flag": rng.integers(0, 2, rows).astype(bool),
            "ward": rng.choice(["a", "b", "c"], rows),
            "label": rng.choice(["x", "y"], rows),
            "note": [f"note {i % 40}" for i in range(rows)],
            "score": rng.normal(size=rows),
        }
    )
    frame.loc[rows - 1, "count"] = 10_000  # the maximum, in the last batch
    frame.loc[rows - 2, "gap"] = np.nan  # the only gap: integers with a gap
    frame["flag"] = frame["flag"].astype(object)
    frame.loc[rows - 3, "flag"] = None  # a boolean column with a gap becomes categorical
    frame.loc[rows - 4, "ward"] = "z"  # a category seen last
    frame.loc[rows - 20 :, "note"] = [f"late note {i}" for i in range(20)]  # 60 distinct
    return frame


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "BATCH_ROWS", 16)
    monkeypatch.setattr(profile, "SCAN_ROWS", 50)


def test_the_schema_and_category_counts_are_those_of_the_whole_table(
    tmp_path: Path, small_batches: None
) -> None:
    table = _file(tmp_path, _late_surprises())
    whole = read_canonical(table.path).table()
    found = table.profile()
    assert found.rows == len(whole) == 300
    assert found.schema == infer_table_schema(whole)
    assert found.category_rows == category_rows(whole, found.schema)
    by_name = {c.name: c for c in found.schema.columns}
    assert by_name["count"].maximum == 10_000
    assert by_name["gap"].type is ColumnType.INTEGER and by_name["gap"].nullable
    assert by_name["flag"].type is ColumnType.CATEGORY
    assert by_name["ward"].categories == ["a", "b", "c", "z"]
    assert by_name["note"].type is ColumnType.STRING


def test_the_sample_is_a_uniform_draw_in_row_order_with_the_whole_columns_dtypes(
    tmp_path: Path, small_batches: None
) -> None:
    table = _file(tmp_path, _late_surprises())
    whole = read_canonical(table.path).table()
    sample = table.profile(seed=3).sample
    assert len(sample) == 50
    rows = profile.sample_rows(300, 50, 3)
    pd.testing.assert_frame_equal(sample, whole.iloc[rows].reset_index(drop=True))
    assert table.profile(seed=4).sample["count"].tolist() != sample["count"].tolist()


def test_a_small_table_is_its_own_sample(tmp_path: Path) -> None:
    table = _file(tmp_path, _late_surprises())
    pd.testing.assert_frame_equal(table.profile().sample, read_canonical(table.path).table())


def test_the_pii_scan_counts_on_whole_columns(tmp_path: Path, small_batches: None) -> None:
    frame = patients(rows=400, seed=1)
    frame.loc[::7, "email"] = None
    table = _file(tmp_path, frame)
    assert table.scan_pii().summary() == scan_frame(read_canonical(table.path).table()).summary()
    emails = next(f for f in table.scan_pii().columns if f.column == "email")
    assert emails.rows == frame["email"].notna().sum() > profile.SCAN_ROWS


def test_a_file_is_described_as_the_table_in_memory_is(tmp_path: Path) -> None:
    current = patients(rows=900, seed=2)
    previous = patients(rows=700, seed=3)
    table, baseline = _file(tmp_path, current), _file(tmp_path, previous, "baseline")
    streamed = describe(
        table, target="diagnosis", subject_id_column="subject_id", baseline=baseline
    )
    in_memory = describe(
        read_canonical(table.path),
        target="diagnosis",
        subject_id_column="subject_id",
        baseline=read_canonical(baseline.path),
    )
    assert json.dumps(streamed, sort_keys=True) == json.dumps(in_memory, sort_keys=True)
    assert streamed["summaries"]["drift"]["columns"]
    assert isinstance(read_canonical(table.path), Loaded)


def test_a_parquet_source_keeps_its_dtypes_through_the_sample_and_the_chunks(
    tmp_path: Path, small_batches: None
) -> None:
    frame = patients(rows=200, seed=7)
    frame["card_number"] = pd.array(
        [
            None if i % 9 == 0 else int(c.replace(" ", ""))
            for i, c in enumerate(frame["card_number"])
        ],
        dtype="Int64",
    )
    frame["ward"] = pd.Categorical(np.where(frame.index % 3 == 0, "north", "south"))
    source = tmp_path / "source.parquet"
    frame.to_parquet(source)
    out = tmp_path / "out.parquet"
    write_parquet(source, out)
    table, whole = TableFile(out), pd.read_parquet(out)
    assert str(table.profile().sample["card_number"].dtype) == "Int64"
    assert table.profile().schema == infer_table_schema(whole)
    assert table.scan_pii().summary() == scan_frame(whole).summary()
    assert table.scan_pii().entities()["card_number"] == "card_number"
