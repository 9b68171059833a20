"""Dataset versions sealed by the compute plane: cluster, run, lineage columns; run results.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch_op:
        batch_op.add_column(sa.Column("cluster_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("run_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("parent_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("target", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("subject_id_column", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("schema_edited_by", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            "fk_dataset_versions_cluster_id_clusters", "clusters", ["cluster_id"], ["id"]
        )
        batch_op.create_foreign_key("fk_dataset_versions_run_id_runs", "runs", ["run_id"], ["id"])
        batch_op.create_foreign_key(
            "fk_dataset_versions_schema_edited_by_users", "users", ["schema_edited_by"], ["id"]
        )
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("result", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("result")
    with op.batch_alter_table("dataset_versions") as batch_op:
        batch_op.drop_constraint("fk_dataset_versions_schema_edited_by_users", type_="foreignkey")
        batch_op.drop_constraint("fk_dataset_versions_run_id_runs", type_="foreignkey")
        batch_op.drop_constraint("fk_dataset_versions_cluster_id_clusters", type_="foreignkey")
        for column in (
            "schema_edited_by",
            "subject_id_column",
            "target",
            "parent_version",
            "run_id",
            "cluster_id",
        ):
            batch_op.drop_column(column)
