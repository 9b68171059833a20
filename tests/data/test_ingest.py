"""Reading a file to register: what pandas would quietly repair is refused, naming the line;
what the job leaves for sealing is the table pandas reads, with its schema."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pandas as pd
import pytest

from bastion.agent.data_jobs import _unchanged, run_ingest
from bastion.agent.job import JobContext
from bastion.agent.staging import INPUTS, OUTPUTS, REQUEST
from bastion.data.checks import infer_table_schema
from bastion.data.ingest import read_canonical, read_source, write_table
from bastion.data.layout import DATA_FILES, SCHEMA_FILE
from bastion.data.publish import KeptSchema
from bastion.data.reference import patients
from bastion.errors import IntegrityError, InvalidInput
from bastion.files import sha256_file
from bastion.spec import IngestJob


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "table.csv"
    path.write_text(text)
    return path


def test_a_repeated_column_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"column names repeat: a$"):
        read_source(_csv(tmp_path, "a,b,a\n1,2,3\n"))


def test_a_short_row_is_refused_not_padded(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"line 3 has 2 fields, the header 3"):
        read_source(_csv(tmp_path, "a,b,c\n1,2,3\n4,5\n6,7,8\n"))


def test_a_long_row_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"line 2 has 4 fields, the header 3"):
        read_source(_csv(tmp_path, "a,b,c\n1,2,3,4\n"))


def test_quoted_fields_blank_lines_and_empty_values_read_as_before(tmp_path: Path) -> None:
    text = 'name,note,n\n"Smith, J","two\nlines",1\n\nLee,,2\n'
    loaded = read_source(_csv(tmp_path, text))
    assert loaded.frame is not None
    assert list(loaded.frame.columns) == ["name", "note", "n"]
    assert loaded.frame["name"].tolist() == ["Smith, J", "Lee"]
    assert loaded.frame["note"].isna().tolist() == [False, True]
    assert loaded.frame["n"].tolist() == [1, 2]


def test_a_file_changed_after_it_was_submitted_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b\n1,2\n")
    pinned = {"type": "ingest", "source": str(path), "dataset": "d"}
    job = IngestJob.model_validate(
        {**pinned, "sha256": sha256_file(path), "size": path.stat().st_size}
    )
    _unchanged(path, job)  # as submitted: accepted
    path.write_text("a,b\n1,3\n")  # same size, other bytes
    with pytest.raises(IntegrityError, match=r"changed since it was submitted \(its SHA-256"):
        _unchanged(path, job)
    path.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(IntegrityError, match=r"\(8 bytes then, 12 now\)"):
        _unchanged(path, job)
    _unchanged(path, IngestJob.model_validate(pinned))  # not pinned: read as found
    with pytest.raises(ValueError, match="sha256"):
        IngestJob.model_validate({**pinned, "sha256": "not-a-digest"})


def test_the_ingest_job_refuses_a_file_changed_since_submission(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b\n1,2\n")
    submitted = {"type": "ingest", "source": str(path), "dataset": "d"}
    by_hash = IngestJob.model_validate({**submitted, "sha256": sha256_file(path)})
    by_size = IngestJob.model_validate({**submitted, "size": path.stat().st_size})
    path.write_text("a,b\n9,9\n")
    with pytest.raises(IntegrityError, match=r"changed since it was submitted \(its SHA-256"):
        run_ingest(_context(tmp_path), by_hash)
    path.write_text("a,b\n9,9\n10,10\n")
    with pytest.raises(IntegrityError, match=r"\(8 bytes then, 14 now\)"):
        run_ingest(_context(tmp_path), by_size)


def _context(workdir: Path) -> JobContext:
    return cast(JobContext, SimpleNamespace(log=lambda _line: None, workdir=workdir))


def test_the_ingest_job_leaves_the_table_pandas_reads_with_its_schema(tmp_path: Path) -> None:
    frame = patients(rows=300, seed=4)
    source = tmp_path / "patients.csv"
    frame.to_csv(source, index=False)
    job = IngestJob.model_validate(
        {
            "type": "ingest",
            "source": str(source),
            "dataset": "patients",
            "target": "diagnosis",
            "sha256": sha256_file(source),
            "size": source.stat().st_size,
        }
    )
    workdir = tmp_path / "work"
    run_ingest(_context(workdir), job)
    outputs = workdir / OUTPUTS
    whole = pd.read_csv(source, low_memory=False)
    left = read_canonical(outputs / DATA_FILES["table"]).table()
    pd.testing.assert_frame_equal(left, whole, check_exact=True)
    kept = KeptSchema.model_validate_json((outputs / SCHEMA_FILE).read_bytes())
    assert kept.exact == infer_table_schema(whole)
    request = json.loads((outputs / REQUEST).read_text())
    assert request["rows"] == 300 and "email" in request["summaries"]["identifier_columns"]
    assert request["schema"]["published"] is True


def test_a_registration_against_a_previous_version_reports_drift(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    previous = workdir / INPUTS / "baseline"
    previous.mkdir(parents=True)
    write_table(patients(rows=400, seed=5), previous / DATA_FILES["table"])
    info = {"kind": "table", "name": "patients", "version": 1}
    (previous / "version.json").write_text(json.dumps(info))
    source = tmp_path / "patients.csv"
    patients(rows=400, seed=6).to_csv(source, index=False)
    job = IngestJob.model_validate({"type": "ingest", "source": str(source), "dataset": "p"})
    run_ingest(_context(workdir), job)
    request = json.loads((workdir / OUTPUTS / REQUEST).read_text())
    drifted = {c["column"] for c in request["summaries"]["drift"]["columns"]}
    assert "mean_radius" in drifted and "email" not in drifted  # identifiers are not compared
