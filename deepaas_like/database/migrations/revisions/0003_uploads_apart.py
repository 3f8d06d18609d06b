"""Uploaded files apart from the client's values.

Until now a job's ``kwargs`` held the client's values and its uploads alike, an upload
written as ``{"__uploaded_file__": [name, path, content_type, original_filename]}``; a client
could send that very dict as JSON and have the server open any path. Uploads now live in
their own column, ``files``, which only the server writes.

Old rows are moved over only where the marker is certainly the server's own: its path lies
inside the row's own upload folder (``upload_dir``, made by the server with a random name
for that request). Any other marker was sent by a client and stays a plain value.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import json
import os

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MARKER = "__uploaded_file__"

jobs = sa.table(
    "jobs",
    sa.column("uuid", sa.String),
    sa.column("kwargs", sa.JSON),
    sa.column("files", sa.JSON),
    sa.column("upload_dir", sa.Text),
)


def _inside(path: object, directory: str | None) -> bool:
    if not isinstance(path, str) or not directory:
        return False
    directory = os.path.normpath(directory)
    return os.path.normpath(path).startswith(directory + os.sep)


def _is_upload(value: object, directory: str | None) -> bool:
    if not (isinstance(value, dict) and set(value) == {MARKER}):
        return False
    fields = value[MARKER]
    return (
        isinstance(fields, list)
        and len(fields) == 4
        and all(isinstance(f, str) for f in fields)
        and _inside(fields[1], directory)
    )


def upgrade() -> None:
    op.add_column("jobs", sa.Column("files", sa.JSON(), nullable=True))
    connection = op.get_bind()
    marked = sa.select(jobs.c.uuid, jobs.c.kwargs, jobs.c.upload_dir).where(
        sa.cast(jobs.c.kwargs, sa.Text).like(f"%{MARKER}%")
    )
    for uuid, kwargs, upload_dir in connection.execute(marked).all():
        if isinstance(kwargs, str):  # a JSON column read back as text by some drivers
            kwargs = json.loads(kwargs)
        files = {name: value[MARKER] for name, value in kwargs.items() if _is_upload(value, upload_dir)}
        if files:
            values = {name: value for name, value in kwargs.items() if name not in files}
            connection.execute(sa.update(jobs).where(jobs.c.uuid == uuid).values(kwargs=values, files=files))


def downgrade() -> None:
    connection = op.get_bind()
    rows = sa.select(jobs.c.uuid, jobs.c.kwargs, jobs.c.files).where(jobs.c.files.is_not(None))
    for uuid, kwargs, files in connection.execute(rows).all():
        if files:
            merged = {**kwargs, **{name: {MARKER: value} for name, value in files.items()}}
            connection.execute(sa.update(jobs).where(jobs.c.uuid == uuid).values(kwargs=merged))
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("files")
