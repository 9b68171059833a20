"""Dataset schemas: inferred at registration, editable by a data steward, enforced twice
(before training and, later, on inference requests).

A schema lists each column's type, whether it may be null, the numeric range and the
allowed categories; for image data it records the shape and value range. The exact schema
stays in the compute plane (sealed with the version, copied into each model package); the
control plane holds the *published* one (``published: true``), which names no value of a
row: see :mod:`bastion.data.publish`. This module holds only the models, so the control
plane and the inference guards read and write schemas without importing pandas; inferring
and enforcing them on data is :mod:`bastion.data.checks`.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.errors import InvalidInput

__all__ = [
    "MAX_CATEGORIES",
    "PROSE_WORDS",
    "ColumnSchema",
    "ColumnType",
    "ImageSchema",
    "TableSchema",
    "Violation",
    "parse_schema",
]

#: At most this many distinct strings make a column categorical.
MAX_CATEGORIES = 50
#: A string column whose values hold this many words on average is free text (an address
#: or a full name holds fewer; a note, a ticket or a comment more).
PROSE_WORDS = 12


class ColumnType(enum.StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    CATEGORY = "category"
    STRING = "string"
    #: Free text (notes, tickets): a string column whose values are sentences; a text model
    #: (``model.builtin: transformer``) reads one. Inferred for prose (:data:`PROSE_WORDS`),
    #: or declared by a data steward (``bastion data schema``).
    TEXT = "text"
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
    #: Published schemas only: an identifier column, so no bound, category or length.
    redacted: bool = False
    #: Published schemas only: how many categories were left out of ``categories`` because
    #: too few rows hold them (the compute plane keeps them all).
    categories_withheld: int = Field(default=0, ge=0)


class TableSchema(_Strict):
    kind: Literal["table"] = "table"
    columns: list[ColumnSchema]
    #: The control plane's copy: identifiers redacted, bounds rounded outward, rare
    #: categories withheld (:mod:`bastion.data.publish`); the exact schema is False.
    published: bool = False

    def column(self, name: str) -> ColumnSchema | None:
        return next((c for c in self.columns if c.name == name), None)


class ImageSchema(_Strict):
    kind: Literal["images"] = "images"
    shape: list[int]
    dtype: str
    minimum: float
    maximum: float
    classes: list[int]
    #: The control plane's copy (value range rounded outward); the exact schema is False.
    published: bool = False


class Violation(_Strict):
    """One broken rule: where, which rule, how many rows."""

    column: str
    rule: str
    rows: int = 0

    def __str__(self) -> str:
        return f"{self.column}: {self.rule}" + (f" ({self.rows} rows)" if self.rows else "")


def parse_schema(raw: Any) -> TableSchema | ImageSchema:
    """A table or image schema from its JSON form; :class:`InvalidInput` naming the field."""
    kind = raw.get("kind", "table") if isinstance(raw, dict) else None
    model: type[TableSchema | ImageSchema] = ImageSchema if kind == "images" else TableSchema
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "schema"
        raise InvalidInput(f"schema.{where}: {first['msg']}") from None
