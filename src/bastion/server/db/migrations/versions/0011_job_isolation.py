"""How each cluster's agent isolates jobs, and how each run's attempts were isolated.

``bubblewrap`` (the sandbox) or ``none`` (an agent started with ``--no-sandbox``); null
where nobody said (agents and runs from before the sandbox).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as table:
        table.add_column(sa.Column("isolation", sa.String(length=16), nullable=True))
    with op.batch_alter_table("runs") as table:
        table.add_column(sa.Column("isolation", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as table:
        table.drop_column("isolation")
    with op.batch_alter_table("clusters") as table:
        table.drop_column("isolation")
