"""Model versions: a row per version a training made, the promotions that say
what a model's name serves, and on each job the metrics it reported, the version it made
and its MLflow run.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("number", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("job", sa.String(32), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("parent", sa.String(250), nullable=False),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("deleted", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "model_promotions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_model_promotions_model", "model_promotions", ["model", "id"])
    op.add_column("jobs", sa.Column("metrics", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("version", sa.String(250), nullable=True))
    op.add_column("jobs", sa.Column("run_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("run_id")
        batch.drop_column("version")
        batch.drop_column("metrics")
    op.drop_index("ix_model_promotions_model", table_name="model_promotions")
    op.drop_table("model_promotions")
    op.drop_table("model_versions")
