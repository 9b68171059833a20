"""Reading data at registration, and describing it for the control plane.

Tables come from CSV or Parquet, images from NPZ (``images`` and ``labels`` arrays;
pickled objects are refused). Each is written in one canonical form (Parquet or NPZ)
before it is sealed: :func:`ingest_source` writes a table a batch at a time
(:mod:`bastion.data.canonical`) and :func:`describe` reads it back from that file
(:mod:`bastion.data.profile`), so registering a table takes memory that does not grow with
its rows. :func:`describe` computes the exact schema (which stays in the compute plane;
:mod:`bastion.data.publish` makes the copy the control plane may learn), the row count and
aggregate scan summaries, never the values.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from bastion.data.canonical import (
    SourceRead,
    changed_while_read,
    csv_batches,
    write_csv,
    write_parquet,
)
from bastion.data.checks import infer_image_schema
from bastion.data.layout import DATA_FILES
from bastion.data.pii import scan_frame
from bastion.data.profile import SCAN_ROWS, TableFile, TableProfile, profile_frame, sample_rows
from bastion.errors import InvalidInput
from bastion.files import atomic_output, sha256_file

__all__ = [
    "Ingested",
    "Loaded",
    "TableFile",
    "describe",
    "ingest_source",
    "read_canonical",
    "read_source",
    "write_canonical",
    "write_table",
]

#: Label scans cross-validate two models; above this many rows they run on a sample.
LABEL_SCAN_ROWS = 20_000


@dataclass
class Loaded:
    """Data read from a source: a table, or images with labels."""

    kind: Literal["table", "images"]
    frame: pd.DataFrame | None = None
    images: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def rows(self) -> int:
        if self.frame is not None:
            return len(self.frame)
        return 0 if self.images is None else len(self.images)

    def table(self) -> pd.DataFrame:
        if self.frame is None:
            raise InvalidInput("this dataset holds images, not a table")
        return self.frame

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.images is None or self.labels is None:
            raise InvalidInput("this dataset holds a table, not images and labels")
        return self.images, self.labels


def _read_npz(path: Path) -> Loaded:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if not {"images", "labels"} <= names:
                raise InvalidInput(
                    f"{path}: an image dataset is an .npz with 'images' and 'labels' arrays "
                    f"(found: {', '.join(sorted(names)) or 'none'})"
                )
            images, labels = archive["images"], archive["labels"]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"{path}: not a readable .npz without pickled objects ({exc})") from None
    if images.ndim < 2 or len(images) != len(labels) or labels.ndim != 1:
        raise InvalidInput(
            f"{path}: need images of shape (n, ...) and n labels; got {images.shape} "
            f"and {labels.shape}"
        )
    if not (np.issubdtype(images.dtype, np.number) and np.issubdtype(labels.dtype, np.integer)):
        raise InvalidInput(f"{path}: images must be numeric and labels integers")
    return Loaded(kind="images", images=images, labels=labels)


def read_source(path: Path) -> Loaded:
    """Read a CSV, Parquet or NPZ file whole; a clear :class:`InvalidInput` for anything else.

    A CSV is read as :func:`ingest_source` reads it (types over the whole file; a repeated
    column name or a row of the wrong length refused, naming the line).
    """
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            schema, batches, _ = csv_batches(path)
            frame = pa.Table.from_batches(batches, schema=schema).to_pandas()
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix == ".npz":
            return _read_npz(path)
        else:
            raise InvalidInput(f"{path}: unsupported format {suffix!r}; use .csv, .parquet or .npz")
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise InvalidInput(f"{path}: cannot read it as {suffix[1:]} ({exc})") from None
    if frame.empty:
        raise InvalidInput(f"{path}: holds no rows")
    frame.columns = [str(c) for c in frame.columns]
    if frame.columns.duplicated().any():
        raise InvalidInput(f"{path}: column names repeat")
    return Loaded(kind="table", frame=frame)


@dataclass(frozen=True)
class Ingested:
    """A source file written in its canonical form, and what reading it saw (its size and
    SHA-256, which the caller compares with what was submitted)."""

    data: Loaded | TableFile
    read: SourceRead


def ingest_source(path: Path, directory: Path) -> Ingested:
    """Write a CSV, Parquet or NPZ file as the canonical data file in ``directory``.

    A table is read and written a batch at a time and left on disk (a :class:`TableFile`);
    images are read whole. A file that changes while it is read is refused
    (:class:`IntegrityError`).
    """
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    suffix = path.suffix.lower()
    out = directory / DATA_FILES["table"]
    try:
        if suffix == ".csv":
            read = write_csv(path, out)
            return Ingested(data=TableFile(out), read=read)
        if suffix in (".parquet", ".pq"):
            read = write_parquet(path, out)
            return Ingested(data=TableFile(out), read=read)
    except pa.ArrowException as exc:
        raise InvalidInput(f"{path}: cannot read it as {suffix[1:]} ({exc})") from None
    if suffix != ".npz":
        raise InvalidInput(f"{path}: unsupported format {suffix!r}; use .csv, .parquet or .npz")
    before = sha256_file(path)
    images = _read_npz(path)
    if sha256_file(path) != before:
        raise changed_while_read(path)
    write_canonical(images, directory)
    return Ingested(
        data=images, read=SourceRead(size=path.stat().st_size, sha256=before, rows=images.rows)
    )


def write_table(frame: pd.DataFrame, out: Path) -> None:
    """Write CSV or Parquet atomically (temp file, fsync, rename), mode 0600."""
    with atomic_output(out, mode=0o600) as handle:
        if out.suffix == ".csv":
            text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
            frame.to_csv(text, index=False)
            text.flush()
            text.detach()
        else:
            frame.to_parquet(handle, index=False)


def write_canonical(data: Loaded, directory: Path) -> Path:
    """Write the canonical data file (``data.parquet`` or ``data.npz``) into ``directory``."""
    out = directory / DATA_FILES[data.kind]
    if data.kind == "table":
        write_table(data.table(), out)
        return out
    with atomic_output(out, mode=0o600) as handle:
        images, labels = data.arrays()
        np.savez(handle, images=images, labels=labels)
    return out


def read_canonical(path: Path) -> Loaded:
    """Read a canonical data file written by :func:`write_canonical`."""
    if path.name == DATA_FILES["images"]:
        return _read_npz(path)
    return Loaded(kind="table", frame=pd.read_parquet(path))


def _numeric_features(
    frame: pd.DataFrame, labels: np.ndarray | None, *, exclude: set[str]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Numeric, non-identifier columns as floats; rows with missing values left out."""
    columns = [
        c
        for c in frame.columns
        if c not in exclude
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    ]
    if not columns:
        return None, labels
    values = frame[columns].to_numpy(dtype=float)
    complete = np.isfinite(values).all(axis=1)
    if labels is not None:
        complete &= pd.notna(labels)
        labels = labels[complete]
    return values[complete], labels


def _poisoning(
    features: np.ndarray | None, labels: np.ndarray | None, *, seed: int
) -> dict[str, Any]:
    """Counts and rates of suspicious rows (their indices stay in the compute plane)."""
    # scipy and scikit-learn take a second to import; every job reads data, few scan it.
    from bastion.data.poisoning import conflicting_duplicates, label_issues, outliers  # noqa: PLC0415

    if features is None or len(features) < 10:
        return {"skipped": "no numeric features to scan"}
    rows = sample_rows(len(features), SCAN_ROWS, seed)
    x = features[rows]
    found: dict[str, Any] = {"rows_scanned": len(x)}
    found["outliers"] = len(outliers(x, seed=seed))
    if labels is None:
        found["label_issues"] = {"skipped": "no target column named"}
        return found
    y = labels[rows]
    found["conflicting_duplicate_groups"] = len(conflicting_duplicates(x, y))
    subset = sample_rows(len(x), LABEL_SCAN_ROWS, seed)
    try:
        issues = label_issues(x[subset], y[subset], seed=seed)
        # counts per class pair, triggers: never a row index (those stay in this plane)
        found["label_issues"] = issues.summary().model_dump(mode="json")
    except InvalidInput as exc:
        found["label_issues"] = {"skipped": str(exc)}
    return found


def _profile(data: Loaded | TableFile, *, seed: int) -> TableProfile:
    return data.profile(seed=seed) if isinstance(data, TableFile) else profile_frame(data.table())


def describe(
    data: Loaded | TableFile,
    *,
    target: str | None = None,
    subject_id_column: str | None = None,
    baseline: Loaded | TableFile | None = None,
    transformed: Collection[str] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """Exact schema, row count and scan summaries: what registration reports once the schema
    is published (:func:`bastion.data.publish.publish_schema`, by the identifier columns).

    A table in memory is scanned whole (the poisoning scans sample its rows); a table in
    its canonical file is described from one pass and a sample of at most
    :data:`~bastion.data.profile.SCAN_ROWS` rows, which the poisoning and drift scans read
    (the PII scan counts on whole columns). The summaries name the columns the PII scan
    only suspects (``suspect_columns``: names, none of them an identifier column).
    ``transformed`` names columns changed on purpose against ``baseline`` (pseudonymised or
    generalised): their change is the point, not drift, so they are left out of the drift
    comparison and listed as such.
    """
    if isinstance(data, Loaded) and data.kind == "images":
        if target is not None or subject_id_column is not None:
            raise InvalidInput("image datasets take no --target or --subject-id-column")
        images, labels = data.arrays()
        flat = images.reshape(len(images), -1).astype(float)
        return {
            "kind": "images",
            "rows": len(images),
            "schema": infer_image_schema(images, labels).model_dump(mode="json"),
            "summaries": {"poisoning": _poisoning(flat, labels, seed=seed)},
        }
    profile = _profile(data, seed=seed)
    frame = profile.sample
    for label, column in (("target", target), ("subject id column", subject_id_column)):
        if column is not None and column not in frame.columns:
            raise InvalidInput(f"{label} {column!r} is not a column of this table")
    pii = (
        data.scan_pii(seed=seed, suspects=True)
        if isinstance(data, TableFile)
        else scan_frame(frame, seed=seed, suspects=True)
    )
    identifiers = set(pii.entities()) | {c for c in (subject_id_column,) if c}
    features, target_labels = _numeric_features(
        frame,
        frame[target].to_numpy() if target is not None else None,
        exclude=identifiers | {target or ""},
    )
    summaries: dict[str, Any] = {
        "pii": pii.summary(),
        "poisoning": _poisoning(features, target_labels, seed=seed),
        # Names only: a pseudonymisation treats them by default, the privacy gate refuses them.
        "suspect_columns": sorted(set(pii.suspected()) - identifiers),
    }
    if baseline is not None and (isinstance(baseline, TableFile) or baseline.kind == "table"):
        previous = _profile(baseline, seed=seed).sample
        skipped = identifiers | set(transformed)
        shared = [c for c in frame.columns if c in previous.columns and c not in skipped]
        from bastion.data.poisoning import drift  # noqa: PLC0415 - see _poisoning

        results = drift(previous[shared], frame[shared])
        summaries["drift"] = {
            "columns": [
                {
                    "column": r.column,
                    "test": r.test,
                    "statistic": round(r.statistic, 6),
                    "p_value": round(r.p_value, 6),
                    "psi": round(r.psi, 6),
                    "drifted": r.drifted,
                }
                for r in results
            ],
            "drifted": sum(r.drifted for r in results),
            "transformed": sorted(set(transformed) & set(frame.columns)),
        }
    return {
        "kind": "table",
        "rows": profile.rows,
        "schema": profile.schema.model_dump(mode="json"),
        "summaries": summaries,
        "target": target,
        "subject_id_column": subject_id_column,
        "identifier_columns": sorted(identifiers),
    }
