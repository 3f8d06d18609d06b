"""Binary prediction results as files.

A binary result is written to the results directory and the job keeps the file's name,
relative to that directory, in ``result_file``; ``job_results`` keeps the bytes of results
stored before, which are still served and expired.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("result_file", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("result_file")
