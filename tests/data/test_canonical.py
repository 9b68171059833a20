"""A source table read a block at a time: the same table pandas reads whole, types settled over
the whole file, malformed rows and changed files refused."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bastion.data import canonical
from bastion.data.canonical import write_csv, write_parquet
from bastion.errors import IntegrityError, InvalidInput
from bastion.files import sha256_file

#: Small enough that the tables below span many blocks (and their types drift between them).
TINY_BLOCK = 256


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canonical, "BLOCK_BYTES", TINY_BLOCK)
    monkeypatch.setattr(canonical, "ROW_GROUP_ROWS", 7)


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "table.csv"
    path.write_text(text)
    return path


def _stream(path: Path) -> pd.DataFrame:
    out = path.with_suffix(".parquet")
    write_csv(path, out)
    return pd.read_parquet(out)


def _drifting(rows: int = 400) -> str:
    """Columns whose first blocks say one type and later ones another."""
    late = rows - 3
    lines = ["id,int_then_float,int_then_text,int_late_gap,bool_then_gap,empty_then_int,mixed"]
    for i in range(rows):
        lines.append(
            ",".join(
                [
                    str(i),
                    "2.5" if i == late else str(i),
                    "n/a-ish" if i == late else str(i % 7),
                    "" if i == late else str(i * 3),
                    "" if i == late else ("True" if i % 2 else "false"),
                    str(i) if i >= late else "",
                    f" {i}" if i % 3 else f"+{i}",
                ]
            )
        )
    return "\n".join(lines) + "\n"


def test_types_drifting_between_blocks_are_settled_over_the_whole_file(
    tmp_path: Path, small_blocks: None
) -> None:
    path = _csv(tmp_path, _drifting())
    streamed = _stream(path)
    whole = pd.read_csv(path, low_memory=False)
    pd.testing.assert_frame_equal(streamed, whole, check_exact=True)
    assert pq.ParquetFile(path.with_suffix(".parquet")).metadata.num_row_groups > 10
    kinds = streamed.dtypes.astype(str).to_dict()
    assert kinds["int_then_float"] == "float64" and kinds["int_then_text"] == "str"
    assert kinds["int_late_gap"] == "float64"  # an integer column with a gap, as pandas holds it
    assert kinds["bool_then_gap"] == "object" and kinds["empty_then_int"] == "float64"
    assert kinds["mixed"] == "int64"  # " 3" and "+3" are numbers to pandas


def test_values_read_as_pandas_reads_them(tmp_path: Path, small_blocks: None) -> None:
    markers = ["", "NA", "N/A", "null", "NULL", "nan", "NaN", "None", "<NA>", "#N/A", "-nan"]
    text = "\n".join(
        ["missing,number,special,text,flag,quoted"]
        + [
            f'{markers[i % len(markers)]},{value},{special},{word},{flag},"{quoted}"'
            for i, (value, special, word, flag, quoted) in enumerate(
                [
                    ("1e3", "inf", "0x1A", "TRUE", "a, b"),
                    ("-0.5", "-Infinity", "nan(1)", "false", "two\nlines"),
                    (".25", "INF", "+nan", "tRUE", 'say ""hi""'),
                    ("007", "1.", "1_000", "False", ""),
                ]
                * 20
            )
        ]
    )
    path = _csv(tmp_path, text + "\n")
    pd.testing.assert_frame_equal(
        _stream(path), pd.read_csv(path, low_memory=False), check_exact=True
    )


def test_floats_are_parsed_to_the_same_bits_as_pandas_parses_them(tmp_path: Path) -> None:
    values = np.random.default_rng(0).normal(scale=1e3, size=5000)
    frame = pd.DataFrame({"x": values, "y": values.astype(np.float32), "z": values * 1e-300})
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    path = _csv(tmp_path, buffer.getvalue())
    pd.testing.assert_frame_equal(
        _stream(path), pd.read_csv(path, low_memory=False), check_exact=True
    )


def test_an_integer_past_64_bits_is_kept_as_written_not_rounded(tmp_path: Path) -> None:
    path = _csv(tmp_path, "id,n\n1,99999999999999999999\n2,1\n")
    streamed = _stream(path)
    assert streamed["n"].tolist() == ["99999999999999999999", "1"]
    assert streamed["id"].dtype == np.int64


def test_a_short_row_in_a_late_block_is_refused_naming_its_line(
    tmp_path: Path, small_blocks: None
) -> None:
    lines = ["a,b,c", '"two\nlines",1,2'] + [f"{i},{i},{i}" for i in range(200)]
    lines.insert(150, "7,8")
    path = _csv(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(InvalidInput, match=r"line 152 has 2 fields, the header 3"):
        write_csv(path, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_what_is_not_a_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no header line"):
        write_csv(_csv(tmp_path, ""), tmp_path / "out.parquet")
    with pytest.raises(InvalidInput, match="holds no rows"):
        write_csv(_csv(tmp_path, "a,b\n"), tmp_path / "out.parquet")
    path = tmp_path / "latin1.csv"
    path.write_bytes("name\nJos\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match="cannot read it as csv"):
        write_csv(path, tmp_path / "out.parquet")


def test_what_was_read_is_hashed_as_it_was_read(tmp_path: Path, small_blocks: None) -> None:
    path = _csv(tmp_path, _drifting())
    read = write_csv(path, tmp_path / "out.parquet")
    assert (read.sha256, read.size, read.rows) == (sha256_file(path), path.stat().st_size, 400)


def test_a_file_changed_between_the_two_passes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _csv(tmp_path, "a,b\n1,2\n3,4\n")
    settle = canonical._settle_types

    def then_rewrite(source: Path, header: list[str]) -> tuple[pa.Schema, canonical.SourceRead]:
        settled = settle(source, header)
        source.write_text("a,b\n1,2\n3,5\n")  # same size, other bytes
        return settled

    monkeypatch.setattr(canonical, "_settle_types", then_rewrite)
    with pytest.raises(IntegrityError, match="changed while it was read"):
        write_csv(path, tmp_path / "out.parquet")
    path.write_text("a,b\n1,2\n3,4\n")

    def then_widen(source: Path, header: list[str]) -> tuple[pa.Schema, canonical.SourceRead]:
        settled = settle(source, header)
        source.write_text("a,b\n1,2\n3,x\n")  # a value the first pass did not see
        return settled

    monkeypatch.setattr(canonical, "_settle_types", then_widen)
    with pytest.raises(IntegrityError, match="changed while it was read"):
        write_csv(path, tmp_path / "out.parquet")


def test_a_parquet_source_is_copied_without_its_index(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "ward": pd.Categorical(["a", "b", "a", "c"]),
            "age": pd.array([30, None, 41, 52], dtype="Int64"),
            "score": [0.5, 1.5, np.nan, 2.0],
        },
        index=pd.Index([10, 11, 12, 13], name="row"),
    )
    source = tmp_path / "in.parquet"
    frame.to_parquet(source)
    read = write_parquet(source, tmp_path / "out.parquet")
    copied = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(copied, frame.reset_index(drop=True))
    assert (read.rows, read.sha256) == (4, sha256_file(source))


def test_a_parquet_source_with_a_repeated_column_name_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table([pa.array([1]), pa.array([2])], names=["a", "a"]), source)
    with pytest.raises(InvalidInput, match="column names repeat"):
        write_parquet(source, tmp_path / "out.parquet")
