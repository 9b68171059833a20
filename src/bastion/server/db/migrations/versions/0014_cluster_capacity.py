"""What each cluster's agent advertises: CPUs, memory and GPUs of its host (placement).

Null where the agent has not said (agents from before placement, or not yet heartbeated).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as table:
        table.add_column(sa.Column("capacity", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clusters") as table:
        table.drop_column("capacity")
