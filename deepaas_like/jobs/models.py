"""The job tables (SQLAlchemy 2 declarative). Their schema is managed by alembic
(``jobs/migrations``); change a model only together with a new migration.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Job states: waiting for a worker, on a worker, and the three ends.
PENDING, RUNNING, DONE, ERROR, CANCELLED = "pending", "running", "done", "error", "cancelled"
STATES = (PENDING, RUNNING, DONE, ERROR, CANCELLED)
ACTIVE = (PENDING, RUNNING)
#: Job kinds.
TRAIN, PREDICT = "train", "predict"


class Base(DeclarativeBase):
    pass


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
    #: A binary result's file, relative to the results directory (see ``jobs/results.py``).
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

    def to_dict(self) -> dict[str, Any]:
        """The DEEPaaS V2 training object (``date``, ``args``, ``uuid``, ``status``, and
        ``finish_date``/``message``/``result`` as the state adds them), plus ``progress``
        and ``events`` when the plugin reported any. Dates print as DEEPaaS prints them
        (``str(datetime)``); ``duration`` is in seconds.
        """
        document: dict[str, Any] = {
            "date": str(self.created),
            "args": self.args,
            "uuid": self.uuid,
            "status": self.status,
        }
        if self.finished is not None:
            document["finish_date"] = str(self.finished)
        if self.status == ERROR or (self.status == CANCELLED and self.message):
            document["message"] = self.message or ""
        if self.progress is not None:
            document["progress"] = self.progress
        if self.events:
            document["events"] = self.events
        if self.status == DONE:
            document["result"] = {"output": self.output, "finish_date": str(self.finished), "duration": self.duration}
            if self.media_type is not None:
                document["result"]["media_type"] = self.media_type
        return document


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
