"""Jobs keep the history of their metrics: ``metric_history`` holds every value the plugin
reported of each metric by step, ``{metric: [[step, value], ...]}``, bounded per metric.
Existing jobs have none (NULL).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("metric_history", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("metric_history")
