"""The job tables (SQLAlchemy 2 declarative). Their schema is managed by alembic
(``jobs/migrations``); change a table only together with a new migration.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from deepaas_like.database import Base
from deepaas_like.jobs.states import JobView
from deepaas_like.versions import records

#: Every table of the server's database: the jobs' below, and the model versions' (``records``).
__all__ = ["Base", "Instance", "Job", "JobResult", "records"]


class Job(Base):
    """One training or asynchronous prediction; ``uuid`` is 32 hex characters.

    ``args`` are shown to clients; the hook is called with ``kwargs`` (the client's values)
    and ``files`` (the uploads, which only the server writes; see
    :func:`deepaas_like.jobs.store.encode_kwargs`). ``owner`` names the server instance
    running it; ``events`` holds the latest progress messages.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_queue", "model", "kind", "status", "created"),
        Index("ix_jobs_created", "created"),
        Index("ix_jobs_listing", "model", "kind", "created"),
        Index("ix_jobs_key_listing", "model", "kind", "api_key_hash", "created"),
        Index("ix_jobs_idempotency", "idempotency_scope", unique=True),
    )

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON)
    files: Mapped[dict[str, list[str]] | None] = mapped_column(JSON, nullable=True)
    upload_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created: Mapped[datetime.datetime] = mapped_column(DateTime)
    started: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    media_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: A binary result's file, relative to the results directory (see ``jobs/result_files.py``).
    result_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: SHA-256 (hex) of the API key that created the job; None without API keys.
    api_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: For a POST with an ``Idempotency-Key``: SHA-256 of (key hash, model, kind, that key),
    #: and a fingerprint of the request's arguments (see ``JobRunner.submit``).
    idempotency_scope: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    #: The latest value of each metric the plugin reported (``progress.report(metrics=...)``).
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    #: The model version a training made (``name@n``), and its MLflow run's id.
    version: Mapped[str | None] = mapped_column(String(250), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def to_view(self) -> JobView:
        """The job as its clients may see it."""
        return JobView(
            uuid=self.uuid,
            model=self.model,
            kind=self.kind,
            status=self.status,
            args=self.args,
            created=self.created,
            finished=self.finished,
            duration=self.duration,
            output=self.output,
            media_type=self.media_type,
            message=self.message,
            progress=self.progress,
            events=tuple(self.events or ()),
            has_file=self.result_file is not None,
            metrics=dict(self.metrics or {}),
            version=self.version,
            run_id=self.run_id,
        )


class JobResult(Base):
    """The bytes of a binary prediction (PNG, ZIP, ...) stored before results became files
    (``Job.result_file``); still served, and expired with their job.
    """

    __tablename__ = "job_results"

    uuid: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.uuid", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Instance(Base):
    """A server sharing the job database: ``name`` is its ``instance-name``, ``heartbeat``
    the database clock (seconds since the epoch) when it last said it was alive.
    """

    __tablename__ = "instances"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started: Mapped[float] = mapped_column(Float)
    heartbeat: Mapped[float] = mapped_column(Float)
