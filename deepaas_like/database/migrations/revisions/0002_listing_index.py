"""Index for listings: a model's jobs of one kind, newest first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_listing", "jobs", ["model", "kind", "created"])


def downgrade() -> None:
    op.drop_index("ix_jobs_listing", table_name="jobs")
