"""Users' code packages: names, versions (file lists and hashes, never text) and reviews.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "code_packages",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("project_id", sa.String(length=32), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_index("ix_code_packages_project_id", "code_packages", ["project_id"])
    op.create_table(
        "code_versions",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "package_id",
            sa.String(length=32),
            sa.ForeignKey("code_packages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.String(length=32), sa.ForeignKey("clusters.id"), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("sealed_archive", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=32), sa.ForeignKey("runs.id"), nullable=True),
        sa.Column("manifest_hash", sa.String(length=64), nullable=True),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("pushed_by", sa.String(length=32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("package_id", "version"),
    )
    op.create_table(
        "code_reviews",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "code_version_id",
            sa.String(length=32),
            sa.ForeignKey("code_versions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("reviewer_id", sa.String(length=32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_code_reviews_code_version_id", "code_reviews", ["code_version_id"])


def downgrade() -> None:
    op.drop_index("ix_code_reviews_code_version_id", table_name="code_reviews")
    op.drop_table("code_reviews")
    op.drop_table("code_versions")
    op.drop_index("ix_code_packages_project_id", table_name="code_packages")
    op.drop_table("code_packages")
