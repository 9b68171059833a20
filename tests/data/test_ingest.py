"""Reading a file to register: what pandas would quietly repair is refused, naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.data.ingest import read_source
from bastion.errors import InvalidInput


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
    from bastion.agent.data_jobs import _unchanged
    from bastion.errors import IntegrityError
    from bastion.files import sha256_file
    from bastion.spec import IngestJob

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
    from types import SimpleNamespace
    from typing import cast

    from bastion.agent.data_jobs import run_ingest
    from bastion.agent.job import JobContext
    from bastion.errors import IntegrityError
    from bastion.files import sha256_file
    from bastion.spec import IngestJob

    path = _csv(tmp_path, "a,b\n1,2\n")
    job = IngestJob.model_validate(
        {"type": "ingest", "source": str(path), "dataset": "d", "sha256": sha256_file(path)}
    )
    path.write_text("a,b\n9,9\n")
    context = cast(JobContext, SimpleNamespace(log=lambda _line: None, workdir=tmp_path))
    with pytest.raises(IntegrityError, match="changed since it was submitted"):
        run_ingest(context, job)
