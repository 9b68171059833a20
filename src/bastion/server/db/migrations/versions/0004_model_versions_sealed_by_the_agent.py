"""Model versions sealed by the compute plane: manifest hash, signature, cluster.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.add_column(sa.Column("manifest_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("signature", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("cluster_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            "fk_model_versions_cluster_id_clusters", "clusters", ["cluster_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.drop_constraint("fk_model_versions_cluster_id_clusters", type_="foreignkey")
        batch_op.drop_column("cluster_id")
        batch_op.drop_column("signature")
        batch_op.drop_column("manifest_hash")
