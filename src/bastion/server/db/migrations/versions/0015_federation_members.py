"""What the participants of a federated run tell each other through the control plane: the
aggregator's address and CA certificate, each site's SuperNode public key.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_members",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("member", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "member"),
    )
    op.create_index("ix_federation_members_run_id", "federation_members", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_federation_members_run_id", "federation_members")
    op.drop_table("federation_members")
