"""What describing a table needs, read from its canonical file a batch at a time.

One pass over a canonical Parquet file gives its profile: the exact schema and the rows of
each category (:class:`bastion.data.checks.ColumnSummary`) and a uniform sample of at most
:data:`SCAN_ROWS` rows, which the poisoning and drift scans read. The PII scan decides on the
sample and counts on whole columns, each read again on its own. Memory is bounded by a batch
and the sample, whatever the number of rows; a table of at most :data:`SCAN_ROWS` rows is
its own sample, so what it is told is what reading it whole would tell.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from bastion.data.canonical import open_parquet
from bastion.data.checks import ColumnSummary, category_rows, infer_table_schema
from bastion.data.pii import PiiReport, scan_chunks
from bastion.data.schema import TableSchema

__all__ = ["BATCH_ROWS", "SCAN_ROWS", "TableFile", "TableProfile", "profile_frame", "sample_rows"]

#: Rows read from a canonical file at a time.
BATCH_ROWS = 65_536
#: Outlier, duplicate and drift scans run on at most this many rows.
SCAN_ROWS = 200_000


def sample_rows(count: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of ``limit`` of ``count`` rows drawn at random (all of them if fewer)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


@dataclass(frozen=True)
class TableProfile:
    """A table's exact schema, its rows per category and row count, and a sample of its
    rows (every row when there are at most :data:`SCAN_ROWS`), in their order."""

    rows: int
    schema: TableSchema
    category_rows: dict[str, dict[str, int]]
    sample: pd.DataFrame


def profile_frame(frame: pd.DataFrame) -> TableProfile:
    """The profile of a table held in memory: all of it is the sample."""
    schema = infer_table_schema(frame)
    return TableProfile(
        rows=len(frame),
        schema=schema,
        category_rows=category_rows(frame, schema),
        sample=frame,
    )


def _as_whole(part: pa.Table, schema: TableSchema) -> pd.DataFrame:
    """Some rows of a table with the dtypes pandas gives the whole columns: a column with a
    gap holds integers as floats and booleans as objects, even where these rows have none
    (pandas' own dtypes, such as nullable integers, come from the file's metadata)."""
    frame: pd.DataFrame = part.to_pandas()
    for column in schema.columns:
        series = frame[column.name]
        if column.nullable and series.dtype == np.bool_:
            frame[column.name] = series.astype(object)
        elif column.nullable and isinstance(series.dtype, np.dtype) and series.dtype.kind in "iu":
            frame[column.name] = series.astype(np.float64)
    return frame


class TableFile:
    """A table in its canonical Parquet file, read a batch at a time, never whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open_parquet(path) as parquet:
            self.schema = parquet.schema_arrow
            self.rows = parquet.metadata.num_rows
        self._profiles: dict[int, TableProfile] = {}

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        with open_parquet(self.path) as parquet:
            yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)

    def profile(self, *, seed: int = 0) -> TableProfile:
        """The profile, in one pass over the file (kept for later calls)."""
        if seed not in self._profiles:
            self._profiles[seed] = self._read_profile(seed)
        return self._profiles[seed]

    def _read_profile(self, seed: int) -> TableProfile:
        summaries = [ColumnSummary(field.name, field.type) for field in self.schema]
        chosen = sample_rows(self.rows, SCAN_ROWS, seed)
        taken: list[pa.RecordBatch] = []
        start = 0
        for batch in self.batches():
            for summary, values in zip(summaries, batch.columns, strict=True):
                summary.add(values)
            low, high = np.searchsorted(chosen, [start, start + batch.num_rows])
            if high > low:
                taken.append(batch.take(pa.array(chosen[low:high] - start)))
            start += batch.num_rows
        schema = TableSchema(columns=[summary.column() for summary in summaries])
        sample = _as_whole(pa.Table.from_batches(taken, schema=self.schema), schema)
        counts = {s.name: rows for s in summaries if (rows := s.category_rows()) is not None}
        return TableProfile(rows=start, schema=schema, category_rows=counts, sample=sample)

    def column_chunks(self, name: str) -> Iterator[pd.Series]:
        """One column, a batch at a time, with the dtype pandas gives the whole column."""
        profile = self._profiles[min(self._profiles)] if self._profiles else self.profile()
        column = TableSchema(columns=[c for c in profile.schema.columns if c.name == name])
        for batch in self.batches(columns=[name]):
            yield _as_whole(pa.Table.from_batches([batch]), column)[name]

    def scan_pii(self, *, seed: int = 0, suspects: bool = False) -> PiiReport:
        """:func:`bastion.data.pii.scan_frame` of the whole table: decided on the sample,
        counted on each column read again (``suspects``: the weak findings too)."""
        profile = self.profile(seed=seed)
        report = PiiReport(rows=self.rows)
        for name in self.columns:
            chunks = functools.partial(self.column_chunks, name)
            report.add(
                scan_chunks(name, chunks, sample=profile.sample[name], seed=seed, suspects=suspects)
            )
        return report
