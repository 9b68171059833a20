"""Dataset schemas: inferred at registration, editable by a data steward, enforced twice
(before training and, later, on inference requests).

A schema lists each column's type, whether it may be null, the numeric range and the
allowed categories; for image data it records the shape and value range. This module holds
only the models, so the control plane and the inference guards read and write schemas
without importing pandas; inferring and enforcing them on data is :mod:`bastion.data.checks`.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_CATEGORIES",
    "ColumnSchema",
    "ColumnType",
    "ImageSchema",
    "TableSchema",
    "Violation",
]

#: At most this many distinct strings make a column categorical.
MAX_CATEGORIES = 50


class ColumnType(enum.StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    CATEGORY = "category"
    STRING = "string"
    DATETIME = "datetime"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnSchema(_Strict):
    name: str
    type: ColumnType
    nullable: bool
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None
    max_length: int | None = Field(default=None, ge=0)


class TableSchema(_Strict):
    kind: Literal["table"] = "table"
    columns: list[ColumnSchema]

    def column(self, name: str) -> ColumnSchema | None:
        return next((c for c in self.columns if c.name == name), None)


class ImageSchema(_Strict):
    kind: Literal["images"] = "images"
    shape: list[int]
    dtype: str
    minimum: float
    maximum: float
    classes: list[int]


class Violation(_Strict):
    """One broken rule: where, which rule, how many rows."""

    column: str
    rule: str
    rows: int = 0

    def __str__(self) -> str:
        return f"{self.column}: {self.rule}" + (f" ({self.rows} rows)" if self.rows else "")
