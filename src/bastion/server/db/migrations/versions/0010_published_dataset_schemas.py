"""Published dataset schemas: redact the exact schemas recorded before the data boundary held.

Versions recorded by older agents carry their exact schema (real values of identifier
columns, exact bounds, every category). Each is replaced by its published form
(:func:`bastion.data.publish.publish_schema`): identifier columns (the version's
``identifier_columns`` and its subject-id column) redacted, bounds rounded outward, and
every category withheld, since how many rows hold each was never recorded. The exact
schema is not lost: the compute plane never read it from here.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from bastion.data.publish import publish_schema
from bastion.data.schema import parse_schema

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


def published(schema: dict[str, Any], summaries: dict[str, Any], subject: str | None) -> Any:
    """The published form of a recorded schema (unchanged when it already is one)."""
    if schema.get("published"):
        return schema
    listed = summaries.get("identifier_columns", []) if isinstance(summaries, dict) else []
    identifiers = {str(name) for name in listed if isinstance(name, str)} | {subject or ""}
    exact = parse_schema(schema)
    return publish_schema(exact, identifiers=identifiers, category_rows={}).model_dump(mode="json")


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
