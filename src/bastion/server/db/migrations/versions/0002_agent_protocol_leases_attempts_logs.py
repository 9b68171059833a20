"""Agent protocol: cluster agents, run leases and attempts (fencing), run logs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("run_logs") as batch_op:
        batch_op.create_index("ix_run_logs_run_id", ["run_id"], unique=False)
    with op.batch_alter_table("clusters") as batch_op:
        batch_op.add_column(sa.Column("agent_user_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            "fk_clusters_agent_user_id_users", "users", ["agent_user_id"], ["id"]
        )
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(
            sa.Column("status_reason", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("max_retries", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("leased_by", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_foreign_key("fk_runs_leased_by_users", "users", ["leased_by"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_constraint("fk_runs_leased_by_users", type_="foreignkey")
        for column in ("lease_expires_at", "leased_by", "max_retries", "attempt", "status_reason"):
            batch_op.drop_column(column)
    with op.batch_alter_table("clusters") as batch_op:
        batch_op.drop_constraint("fk_clusters_agent_user_id_users", type_="foreignkey")
        batch_op.drop_column("agent_user_id")
    op.drop_table("run_logs")
