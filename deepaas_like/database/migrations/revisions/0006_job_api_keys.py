"""Jobs belong to the API key that created them.

``api_key_hash`` is the SHA-256 of the key (never the key); NULL for jobs created without
API keys configured.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("api_key_hash", sa.String(64), nullable=True))
    op.create_index("ix_jobs_key_listing", "jobs", ["model", "kind", "api_key_hash", "created"])


def downgrade() -> None:
    op.drop_index("ix_jobs_key_listing", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("api_key_hash")
