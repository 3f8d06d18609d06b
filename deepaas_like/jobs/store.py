"""Job rows in a SQL database through SQLAlchemy's asyncio engine (SQLite by default)."""

from __future__ import annotations

import datetime
import json
import os
import uuid as uuid_module
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from deepaas_like.exceptions import JobNotFound
from deepaas_like.jobs.models import ERROR, RUNNING, Base, Job

INTERRUPTED = "interrupted: the server stopped while this job was running"


class JobStore:
    """Create, read and finish jobs; one instance per server process."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._session = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str) -> "JobStore":
        """Connect to ``url`` (an SQLAlchemy async URL), creating the tables and, for
        SQLite, the database's directory. Jobs left ``running`` become ``error``.
        """
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_async_engine(url, json_serializer=lambda obj: json.dumps(obj, default=str))
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        store = cls(engine)
        await store.mark_interrupted()
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    async def mark_interrupted(self) -> int:
        """Turn every ``running`` job into ``error`` with an "interrupted" message."""
        async with self._session.begin() as session:
            result = await session.execute(
                update(Job)
                .where(Job.status == RUNNING)
                .values(status=ERROR, message=INTERRUPTED, finished=_now())
            )
            return result.rowcount

    async def create(self, model: str, args: dict[str, Any], kind: str = "train") -> Job:
        """Insert a ``running`` job for ``model`` and return it."""
        job = Job(uuid=uuid_module.uuid4().hex, model=model, kind=kind, status=RUNNING, args=args, created=_now())
        async with self._session.begin() as session:
            session.add(job)
        return job

    async def get(self, model: str, uuid: str) -> Job:
        """The job ``uuid`` of ``model``; raises :class:`JobNotFound`."""
        async with self._session() as session:
            job = await session.get(Job, uuid)
        if job is None or job.model != model:
            raise JobNotFound(f"no training {uuid!r} for model {model!r}")
        return job

    async def list(self, model: str, kind: str = "train") -> list[Job]:
        """Every job of ``model``, oldest first (as DEEPaaS lists them)."""
        async with self._session() as session:
            rows = await session.scalars(
                select(Job).where(Job.model == model, Job.kind == kind).order_by(Job.created)
            )
            return list(rows)

    async def finish(self, uuid: str, status: str, output: Any = None, message: str | None = None) -> Job | None:
        """Record the end of a job if it is still ``running``; returns the job, or None
        when it had already ended (a cancel raced the finish).
        """
        async with self._session.begin() as session:
            job = await session.get(Job, uuid, with_for_update=True)
            if job is None or job.status != RUNNING:
                return None
            job.status = status
            job.finished = _now()
            job.duration = (job.finished - job.created).total_seconds()
            job.output = output
            job.message = message
            return job


def _now() -> datetime.datetime:
    return datetime.datetime.now()
