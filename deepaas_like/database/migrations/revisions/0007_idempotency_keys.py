"""Idempotency keys of job-creating POSTs.

``idempotency_scope`` is the SHA-256 of (API key hash, model, kind, Idempotency-Key), unique:
one job per key and client. ``request_hash`` fingerprints the request's arguments, so that
a key sent again with other arguments is refused.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("idempotency_scope", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("request_hash", sa.String(64), nullable=True))
    op.create_index("ix_jobs_idempotency", "jobs", ["idempotency_scope"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_idempotency", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_scope")
