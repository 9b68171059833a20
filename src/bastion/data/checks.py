"""Inferring a dataset's schema from its data, and checking data against a schema.

Validation returns every violation with the column and the rule, never the offending
values. The schema models are in :mod:`bastion.data.schema`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bastion.data.schema import (
    MAX_CATEGORIES,
    ColumnSchema,
    ColumnType,
    ImageSchema,
    TableSchema,
    Violation,
)

__all__ = [
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
    distinct = series.dropna().astype(str).nunique()
    return ColumnType.CATEGORY if distinct <= MAX_CATEGORIES else ColumnType.STRING


def _infer_column(name: str, series: pd.Series) -> ColumnSchema:
    kind = _column_type(series)
    column = ColumnSchema(name=str(name), type=kind, nullable=bool(series.isna().any()))
    non_null = series.dropna()
    if kind in (ColumnType.INTEGER, ColumnType.FLOAT) and len(non_null):
        column.minimum, column.maximum = float(non_null.min()), float(non_null.max())
    elif kind is ColumnType.CATEGORY:
        column.categories = sorted(non_null.astype(str).unique().tolist())
    elif kind is ColumnType.STRING and len(non_null):
        column.max_length = int(non_null.astype(str).str.len().max())
    return column


def infer_table_schema(frame: pd.DataFrame) -> TableSchema:
    """Infer a schema from a table; column order is kept."""
    return TableSchema(columns=[_infer_column(str(name), frame[name]) for name in frame.columns])


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
    elif column.type is ColumnType.STRING and column.max_length is not None:
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
