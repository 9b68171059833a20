"""Published dataset schemas: redact the exact schemas recorded before the data boundary held.

Versions recorded by older agents carry their exact schema (real values of identifier
columns, exact bounds, every category). Each is replaced by its published form, as
``bastion.data.publish`` defined it when this migration was written (a frozen copy, so a
later change there cannot change what this migration did): identifier columns (the
version's ``identifier_columns`` and its subject-id column) redacted, numeric bounds and
string lengths rounded strictly outward to the power of ten below the spread, and every
category withheld, since how many rows hold each was never recorded. The exact schema is
not lost: the compute plane never read it from here.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_versions = sa.table(
    "dataset_versions",
    sa.column("id", sa.String),
    sa.column("schema", sa.JSON),
    sa.column("summaries", sa.JSON),
    sa.column("subject_id_column", sa.String),
)


def _grid(value: Decimal, step: Decimal, rounding: str) -> float:
    on_grid = (value / step).to_integral_value(rounding=rounding) * step
    if on_grid == value:
        on_grid += step if rounding == ROUND_CEILING else -step
    return float(on_grid)


def _round_outward(low: Any, high: Any) -> tuple[float | None, float | None]:
    given = [
        Decimal(repr(float(v))) if isinstance(v, int | float) and math.isfinite(v) else None
        for v in (low, high)
    ]
    present = [v for v in given if v is not None]
    if not present:
        return None, None
    lower, upper = given
    if lower is not None and lower == upper:
        return float(lower), float(lower)
    spread = max(present) - min(present)
    scale = spread if spread else max(abs(v) for v in present)
    step = Decimal(1).scaleb(scale.adjusted()) if scale else Decimal(1)
    return (
        None if lower is None else _grid(lower, step, ROUND_FLOOR),
        None if upper is None else _grid(upper, step, ROUND_CEILING),
    )


def _column(column: dict[str, Any], *, identifier: bool) -> dict[str, Any]:
    kept = {
        "name": column.get("name"),
        "type": column.get("type"),
        "nullable": column.get("nullable", True),
    }
    if identifier:
        return {**kept, "redacted": True}
    low, high = _round_outward(column.get("minimum"), column.get("maximum"))
    length = column.get("max_length")
    categories = column.get("categories")
    return {
        **kept,
        "minimum": low,
        "maximum": high,
        "max_length": None if length is None else int(_round_outward(0, length)[1] or 0),
        "categories": None if categories is None else [],
        "categories_withheld": len(categories or []),
    }


def published(schema: dict[str, Any], summaries: Any, subject: str | None) -> dict[str, Any]:
    """The published form of a recorded schema (unchanged when it already is one)."""
    if schema.get("published"):
        return schema
    if schema.get("kind") == "images":
        low, high = _round_outward(schema.get("minimum"), schema.get("maximum"))
        return {**schema, "minimum": low, "maximum": high, "published": True}
    listed = summaries.get("identifier_columns", []) if isinstance(summaries, dict) else []
    identifiers = {name for name in listed if isinstance(name, str)} | {subject or ""}
    columns = [
        _column(column, identifier=column.get("name") in identifiers)
        for column in schema.get("columns", [])
        if isinstance(column, dict)
    ]
    return {"kind": "table", "columns": columns, "published": True}


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(
            _versions.c.id, _versions.c.schema, _versions.c.summaries, _versions.c.subject_id_column
        )
    ).all()
    for row in rows:
        redacted = published(row.schema, row.summaries, row.subject_id_column)
        if redacted != row.schema:
            conn.execute(_versions.update().where(_versions.c.id == row.id).values(schema=redacted))


def downgrade() -> None:
    """The exact values are gone from the control plane for good; nothing to restore."""
