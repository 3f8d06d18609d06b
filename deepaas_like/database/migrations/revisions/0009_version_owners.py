"""A model version belongs to the API key that owned the training that made it:
``api_key_hash`` is that key's SHA-256, NULL for versions made without API keys.
Existing versions take it from their training's job while that job is still kept.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("api_key_hash", sa.String(64), nullable=True))
    op.execute(
        "UPDATE model_versions SET api_key_hash = "
        "(SELECT jobs.api_key_hash FROM jobs WHERE jobs.uuid = model_versions.job)"
    )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("api_key_hash")
