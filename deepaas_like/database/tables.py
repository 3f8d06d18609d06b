"""Every table of the server's database (SQLAlchemy 2 declarative): jobs, their stored
results, the server instances sharing it, model versions and promotions. Their schema is
managed by alembic (``database/migrations``); change a table only together with a new
migration (a revision in ``database/migrations/revisions``).
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Instance", "Job", "JobResult", "ModelVersion", "Promotion"]


class Base(DeclarativeBase):
    """Base of every table of the server's database (jobs, instances, model versions)."""


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
    #: and a fingerprint of the request's arguments (see ``jobs.queue.Queue.submit``).
    idempotency_scope: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    #: The latest value of each metric the plugin reported (``progress.report(metrics=...)``).
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    #: Every reported value of each metric by step, ``{metric: [[step, value], ...]}`` in step
    #: order, bounded per metric (see ``jobs.metric_history``).
    metric_history: Mapped[dict[str, list[list[Any]]] | None] = mapped_column(JSON, nullable=True)
    #: The model version a training made (``name@n``), and its MLflow run's id.
    version: Mapped[str | None] = mapped_column(String(250), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


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


class ModelVersion(Base):
    """One version: made by training job ``job``, stored at ``location`` (relative to the
    model store), with the training's ``arguments`` and ``metrics`` (numbers); it belongs
    to the API key hashed as ``api_key_hash`` (the training's; NULL without API keys).
    """

    __tablename__ = "model_versions"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    job: Mapped[str] = mapped_column(String(32))
    location: Mapped[str] = mapped_column(Text)
    parent: Mapped[str] = mapped_column(String(250))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    api_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[datetime.datetime] = mapped_column(DateTime)
    deleted: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)


class Promotion(Base):
    """``model``'s name serves version ``number`` (None: the plugin itself) from ``created``
    on, until a later promotion.
    """

    __tablename__ = "model_promotions"
    __table_args__ = (Index("ix_model_promotions_model", "model", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[datetime.datetime] = mapped_column(DateTime)
