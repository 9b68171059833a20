"""Promotions: gate results and required approvers on approvals, each reviewer's decision,
and the stage history of model versions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch_op:
        batch_op.add_column(
            sa.Column("policy", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("required_approvals", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column("gate_results", sa.JSON(), nullable=False, server_default="[]")
        )
    op.create_table(
        "approval_decisions",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "approval_id",
            sa.String(length=32),
            sa.ForeignKey("approvals.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("approval_id", "user_id"),
    )
    op.create_index("ix_approval_decisions_approval_id", "approval_decisions", ["approval_id"])
    op.create_table(
        "stage_transitions",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "model_version_id",
            sa.String(length=32),
            sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("from_stage", sa.String(length=16), nullable=False),
        sa.Column("to_stage", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "approval_id", sa.String(length=32), sa.ForeignKey("approvals.id"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_stage_transitions_model_version_id", "stage_transitions", ["model_version_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_stage_transitions_model_version_id", table_name="stage_transitions")
    op.drop_table("stage_transitions")
    op.drop_index("ix_approval_decisions_approval_id", table_name="approval_decisions")
    op.drop_table("approval_decisions")
    with op.batch_alter_table("approvals") as batch_op:
        batch_op.drop_column("gate_results")
        batch_op.drop_column("required_approvals")
        batch_op.drop_column("policy")
