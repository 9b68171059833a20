"""GDPR erasure: erasure requests, shredded and held dataset versions, model flags.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch_op:
        batch_op.add_column(sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("retention_hold", sa.Text(), nullable=False, server_default="")
        )
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.add_column(sa.Column("flags", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "erasure_requests",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("project_id", sa.String(length=32), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("subject_pseudonym", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False, server_default="erase"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(length=32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("run_ids", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_erasure_requests_project_id", "erasure_requests", ["project_id"])
    op.create_index(
        "ix_erasure_requests_subject_pseudonym", "erasure_requests", ["subject_pseudonym"]
    )


def downgrade() -> None:
    op.drop_index("ix_erasure_requests_subject_pseudonym", table_name="erasure_requests")
    op.drop_index("ix_erasure_requests_project_id", table_name="erasure_requests")
    op.drop_table("erasure_requests")
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.drop_column("flags")
    with op.batch_alter_table("dataset_versions") as batch_op:
        batch_op.drop_column("retention_hold")
        batch_op.drop_column("shredded_at")
