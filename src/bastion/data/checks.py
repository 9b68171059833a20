"""Inferring a dataset's schema from its data, and checking data against a schema.

A schema is inferred from a whole column as pandas holds it (:func:`infer_table_schema`), or
batch by batch from Arrow arrays (:class:`ColumnSummary`) with the same result, for a table
too large to hold. Validation returns every violation with the column and the rule, never
the offending values. The schema models are in :mod:`bastion.data.schema`.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bastion.data.schema import (
    MAX_CATEGORIES,
    PROSE_WORDS,
    ColumnSchema,
    ColumnType,
    ImageSchema,
    TableSchema,
    Violation,
)

__all__ = [
    "ColumnSummary",
    "category_rows",
    "infer_image_schema",
    "infer_table_schema",
    "validate_images",
    "validate_table",
]


def _column_type(series: pd.Series) -> ColumnType:  # noqa: PLR0911 - one return per type
    if pd.api.types.is_bool_dtype(series):
        return ColumnType.BOOLEAN
    if pd.api.types.is_integer_dtype(series):
        return ColumnType.INTEGER
    if pd.api.types.is_float_dtype(series):
        non_null = series.dropna()
        if len(non_null) and np.all(np.mod(non_null, 1) == 0) and series.isna().any():
            return ColumnType.INTEGER  # integers with gaps read as floats
        return ColumnType.FLOAT
    if pd.api.types.is_datetime64_any_dtype(series):
        return ColumnType.DATETIME
    if isinstance(series.dtype, pd.CategoricalDtype):
        return ColumnType.CATEGORY
    present = series.dropna().astype(str)
    words = float(present.str.count(r"\S+").mean()) if len(present) else 0.0
    if words >= PROSE_WORDS:  # sentences, however few distinct ones
        return ColumnType.TEXT
    return ColumnType.CATEGORY if present.nunique() <= MAX_CATEGORIES else ColumnType.STRING


def _words(values: pa.Array) -> int:
    """How many whitespace-separated words the strings hold, together."""
    return int(pc.sum(pc.list_value_length(pc.utf8_split_whitespace(values))).as_py() or 0)


def _infer_column(name: str, series: pd.Series) -> ColumnSchema:
    kind = _column_type(series)
    column = ColumnSchema(name=str(name), type=kind, nullable=bool(series.isna().any()))
    non_null = series.dropna()
    if kind in (ColumnType.INTEGER, ColumnType.FLOAT) and len(non_null):
        column.minimum, column.maximum = float(non_null.min()), float(non_null.max())
    elif kind is ColumnType.CATEGORY:
        column.categories = sorted(non_null.astype(str).unique().tolist())
    elif kind in (ColumnType.STRING, ColumnType.TEXT) and len(non_null):
        column.max_length = int(non_null.astype(str).str.len().max())
    return column


def infer_table_schema(frame: pd.DataFrame) -> TableSchema:
    """Infer a schema from a table; column order is kept."""
    return TableSchema(columns=[_infer_column(str(name), frame[name]) for name in frame.columns])


class _Family(enum.Enum):
    """How pandas holds a column of each Arrow type, which decides its schema type."""

    BOOLEAN = "boolean"
    INTEGER = "integer"
    FLOAT = "float"
    DATETIME = "datetime"
    CATEGORICAL = "categorical"
    TEXT = "text"
    OTHER = "other"  # objects pandas turns into text for the schema (dates, decimals, ...)


def _family(kind: pa.DataType) -> _Family:  # noqa: PLR0911 - one return per family
    if pa.types.is_boolean(kind):
        return _Family.BOOLEAN
    if pa.types.is_integer(kind):
        return _Family.INTEGER
    if pa.types.is_floating(kind):
        return _Family.FLOAT
    if pa.types.is_timestamp(kind):
        return _Family.DATETIME
    if pa.types.is_dictionary(kind):
        return _Family.CATEGORICAL
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _Family.TEXT
    return _Family.OTHER


class ColumnSummary:
    """One column's schema and category counts, built batch by batch from Arrow arrays.

    The result is what :func:`infer_table_schema` and :func:`category_rows` give for the
    whole column as pandas reads it from the same file: an integer column with a gap is
    held as floats (so it stays an integer column only while it has values), a boolean
    column with a gap as objects (so it becomes a category), NaN is missing. Memory is
    bounded by the batch: at most :data:`MAX_CATEGORIES` distinct strings are counted (a
    categorical column's categories are all counted, as they are all listed).
    """

    def __init__(self, name: str, kind: pa.DataType) -> None:
        self.name = name
        self._family = _family(kind)
        self._nulls = 0
        self._present = 0
        self._low: float | None = None
        self._high: float | None = None
        self._whole = True
        self._values: Counter[str] | None = Counter()
        self._longest = 0
        self._words = 0  # whitespace-separated words of the present string values

    def add(self, values: pa.Array) -> None:
        """Take in one batch of the column's values."""
        if self._family is _Family.FLOAT:
            values = pc.if_else(pc.is_nan(values), None, values)
        self._nulls += values.null_count
        present = values.drop_null()
        self._present += len(present)
        if len(present) == 0:
            return
        if self._family in (_Family.INTEGER, _Family.FLOAT):
            self._add_numbers(present)
        elif self._family is _Family.BOOLEAN:
            true = int(pc.sum(present).as_py() or 0)
            counts = (("True", true), ("False", len(present) - true))
            self._count(Counter({value: n for value, n in counts if n}))
        elif self._family is _Family.CATEGORICAL:
            decoded = present.dictionary_decode()
            if pa.types.is_string(decoded.type) or pa.types.is_large_string(decoded.type):
                self._count_text(decoded, limit=None)
            else:
                self._count(Counter(decoded.to_pandas().astype(str).value_counts().to_dict()))
        elif self._family is _Family.TEXT:
            self._count_text(present, limit=MAX_CATEGORIES)
            self._longest = max(self._longest, int(pc.max(pc.utf8_length(present)).as_py() or 0))
            self._words += _words(present)
        elif self._family is _Family.OTHER:
            text = present.to_pandas().astype(str)
            if self._values is not None:
                self._count(Counter(text.value_counts().to_dict()), limit=MAX_CATEGORIES)
            self._longest = max(self._longest, int(text.str.len().max()))
            self._words += int(text.str.count(r"\S+").sum())

    def _add_numbers(self, present: pa.Array) -> None:
        bounds = pc.min_max(present)
        low, high = float(bounds["min"].as_py()), float(bounds["max"].as_py())
        self._low = low if self._low is None else min(self._low, low)
        self._high = high if self._high is None else max(self._high, high)
        if self._family is _Family.FLOAT and self._whole:
            whole = pc.and_(pc.is_finite(present), pc.equal(pc.floor(present), present))
            self._whole = bool(pc.all(whole).as_py())

    def _count_text(self, present: pa.Array, *, limit: int | None) -> None:
        if self._values is None:
            return
        counts = pc.value_counts(present)
        if limit is not None and len(counts) > limit:
            self._values = None  # too many distinct values for a category; not counted
            return
        found = zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        )
        self._count(Counter({str(value): int(n) for value, n in found}), limit=limit)

    def _count(self, found: Counter[str], *, limit: int | None = None) -> None:
        if self._values is None:
            return
        self._values.update(found)
        if limit is not None and len(self._values) > limit:
            self._values = None

    def _type(self) -> ColumnType:  # noqa: PLR0911 - one return per type
        if self._family is _Family.BOOLEAN:
            return ColumnType.BOOLEAN if self._nulls == 0 else ColumnType.CATEGORY
        if self._family is _Family.INTEGER:
            return ColumnType.INTEGER if self._present or not self._nulls else ColumnType.FLOAT
        if self._family is _Family.FLOAT:
            gaps_in_integers = self._present and self._whole and self._nulls
            return ColumnType.INTEGER if gaps_in_integers else ColumnType.FLOAT
        if self._family is _Family.DATETIME:
            return ColumnType.DATETIME
        if self._family is _Family.CATEGORICAL:
            return ColumnType.CATEGORY
        if self._present and self._words >= PROSE_WORDS * self._present:
            return ColumnType.TEXT  # sentences, however few distinct ones
        return ColumnType.CATEGORY if self._values is not None else ColumnType.STRING

    def column(self) -> ColumnSchema:
        """The column's schema, as :func:`infer_table_schema` infers it."""
        kind = self._type()
        column = ColumnSchema(name=self.name, type=kind, nullable=self._nulls > 0)
        if kind in (ColumnType.INTEGER, ColumnType.FLOAT) and self._present:
            column.minimum, column.maximum = self._low, self._high
        elif kind is ColumnType.CATEGORY:
            column.categories = sorted(self._values or {})
        elif kind in (ColumnType.STRING, ColumnType.TEXT) and self._present:
            column.max_length = self._longest
        return column

    def category_rows(self) -> dict[str, int] | None:
        """Rows per category (:func:`category_rows`), or None for a column of another type."""
        if self._type() is not ColumnType.CATEGORY:
            return None
        return dict(self._values or {})


def category_rows(frame: pd.DataFrame, schema: TableSchema) -> dict[str, dict[str, int]]:
    """How many rows hold each category of each categorical column (publishing withholds
    the rare ones)."""
    return {
        column.name: {
            str(value): int(count)
            for value, count in frame[column.name].dropna().astype(str).value_counts().items()
        }
        for column in schema.columns
        if column.categories is not None and column.name in frame.columns
    }


def validate_table(frame: pd.DataFrame, schema: TableSchema) -> list[Violation]:
    """Check a table against a schema; an empty list means it conforms."""
    violations: list[Violation] = []
    expected = {c.name for c in schema.columns}
    for name in frame.columns:
        if str(name) not in expected:
            violations.append(Violation(column=str(name), rule="column not in the schema"))
    for column in schema.columns:
        if column.name not in frame.columns:
            violations.append(Violation(column=column.name, rule="missing column"))
            continue
        violations += _check_column(frame[column.name], column)
    return violations


def _check_column(series: pd.Series, column: ColumnSchema) -> list[Violation]:
    found: list[Violation] = []
    nulls = int(series.isna().sum())
    if nulls and not column.nullable:
        found.append(Violation(column=column.name, rule="null values not allowed", rows=nulls))
    values = series.dropna()
    if column.type in (ColumnType.INTEGER, ColumnType.FLOAT):
        found += _check_numeric(values, column)
    elif column.type is ColumnType.CATEGORY and column.categories is not None:
        unknown = int((~values.astype(str).isin(column.categories)).sum())
        if unknown:
            found.append(Violation(column=column.name, rule="unknown category", rows=unknown))
    elif column.type in (ColumnType.STRING, ColumnType.TEXT) and column.max_length is not None:
        too_long = int((values.astype(str).str.len() > column.max_length).sum())
        if too_long:
            found.append(
                Violation(
                    column=column.name,
                    rule=f"longer than {column.max_length} characters",
                    rows=too_long,
                )
            )
    return found


def _check_numeric(values: pd.Series, column: ColumnSchema) -> list[Violation]:
    found: list[Violation] = []
    numeric = pd.to_numeric(values, errors="coerce")
    bad_type = int(numeric.isna().sum())
    if bad_type:
        found.append(Violation(column=column.name, rule=f"not {column.type.value}", rows=bad_type))
    finite = numeric.dropna()
    infinite = int((~np.isfinite(finite.to_numpy(dtype=float))).sum())
    if infinite:
        found.append(Violation(column=column.name, rule="NaN or infinite values", rows=infinite))
    if column.type is ColumnType.INTEGER:
        fractional = int((np.mod(finite[np.isfinite(finite)], 1) != 0).sum())
        if fractional:
            found.append(Violation(column=column.name, rule="not an integer", rows=fractional))
    for bound, rule, outside in (
        (column.minimum, "below minimum", finite < (column.minimum or 0)),
        (column.maximum, "above maximum", finite > (column.maximum or 0)),
    ):
        count = int(outside.sum()) if bound is not None else 0
        if count:
            found.append(Violation(column=column.name, rule=f"{rule} {bound}", rows=count))
    return found


def infer_image_schema(images: np.ndarray, labels: np.ndarray) -> ImageSchema:
    return ImageSchema(
        shape=[int(d) for d in images.shape[1:]],
        dtype=str(images.dtype),
        minimum=float(images.min()),
        maximum=float(images.max()),
        classes=sorted(int(c) for c in np.unique(labels)),
    )


def validate_images(images: np.ndarray, schema: ImageSchema, labels: Any = None) -> list[Violation]:
    found: list[Violation] = []
    if list(images.shape[1:]) != schema.shape:
        found.append(
            Violation(column="images", rule=f"shape {list(images.shape[1:])} is not {schema.shape}")
        )
        return found
    as_float = images.astype(float)
    not_finite = int((~np.isfinite(as_float)).reshape(len(images), -1).any(axis=1).sum())
    if not_finite:
        found.append(Violation(column="images", rule="NaN or infinite pixels", rows=not_finite))
    outside = ((as_float < schema.minimum) | (as_float > schema.maximum)).reshape(len(images), -1)
    if int(outside.any(axis=1).sum()):
        found.append(
            Violation(
                column="images",
                rule=f"pixels outside [{schema.minimum}, {schema.maximum}]",
                rows=int(outside.any(axis=1).sum()),
            )
        )
    if labels is not None:
        unknown = int((~np.isin(np.asarray(labels), schema.classes)).sum())
        if unknown:
            found.append(Violation(column="labels", rule="unknown class", rows=unknown))
    return found
