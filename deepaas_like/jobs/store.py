"""Job rows of the server's database (:mod:`deepaas_like.database`): create, claim,
update and read jobs, and the heartbeats of the instances that run them.
"""

from __future__ import annotations

import builtins
import datetime
import uuid as uuid_module
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Float, and_, delete, func, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from deepaas_like.database import Database, guarded
from deepaas_like.database.tables import Instance, Job, JobResult
from deepaas_like.exceptions import JobNotFound
from deepaas_like.jobs import metric_history
from deepaas_like.jobs.states import ACTIVE, CANCELLED, ERROR, NEWEST_FIRST, OLDEST_FIRST, PENDING, RUNNING
from deepaas_like.model.args import UploadedFile

__all__ = [
    "INTERRUPTED",
    "LOST",
    "MAX_EVENTS",
    "UNTRACKED",
    "IdempotencyScopeTaken",
    "JobStore",
    "decode_kwargs",
    "encode_kwargs",
]

INTERRUPTED = "interrupted: the server stopped while this job was running"
#: The message of a job whose server stopped answering: its heartbeat expired.
LOST = "interrupted: the server running this job stopped answering (its heartbeat expired)"
#: The message of a job its server claimed but does not run (the claim's answer was lost).
UNTRACKED = "interrupted: the server that took this job lost track of it (a database error while starting it)"
MAX_EVENTS = 50  # progress messages kept per job


def encode_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Hook arguments as two JSON documents: the client's values, and the uploads
    (``{name: [name, path, content_type, original_filename]}``, an :class:`UploadedFile`'s
    fields).

    They are stored apart (``Job.kwargs`` and ``Job.files``) so that no value a client sends
    can ever be read back as a file path on the server.
    """
    values = {k: v for k, v in kwargs.items() if not isinstance(v, UploadedFile)}
    files = {k: list(v) for k, v in kwargs.items() if isinstance(v, UploadedFile)}
    return values, files


def decode_kwargs(values: dict[str, Any], files: dict[str, list[str]] | None) -> dict[str, Any]:
    """The inverse of :func:`encode_kwargs`: the hook's keyword arguments."""
    return {**values, **{name: UploadedFile(*fields) for name, fields in (files or {}).items()}}


class database_clock(FunctionElement):  # noqa: N801 - named like the SQL functions it stands for
    """The database server's clock in seconds since the epoch (a float): heartbeats are
    written and compared on one clock, whatever the clocks of the hosts say.
    """

    type = Float()
    inherit_cache = True


@compiles(database_clock)
def _clock(element: Any, compiler: Any, **kw: Any) -> str:
    return "EXTRACT(EPOCH FROM CLOCK_TIMESTAMP())"


@compiles(database_clock, "sqlite")
def _sqlite_clock(element: Any, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


class IdempotencyScopeTaken(Exception):
    """A job with this ``idempotency_scope`` exists already (a concurrent twin request)."""


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (``execute`` of one returns a ``CursorResult``)."""
    assert isinstance(result, CursorResult)
    return result.rowcount


class JobStore:
    """Create, claim, update and read jobs of ``database``; one instance per server process.

    Every method raises :class:`DatabaseUnavailable` when the database is away or busy
    (stopped, unreachable, locked): the database's one policy
    (:func:`deepaas_like.database.guarded`); ``database.problem`` says why until it
    answers again.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._session = database.sessions

    @property
    def engine(self) -> AsyncEngine:
        return self.database.engine

    @classmethod
    async def open(cls, url: str) -> "JobStore":
        """The jobs of the database at ``url``, opened (and migrated) by
        :meth:`Database.open`; raises :class:`StartupError` as it does.
        """
        return cls(await Database.open(url))

    async def close(self) -> None:
        await self.database.close()

    @guarded(write=True)
    async def mark_interrupted(self, owner: str) -> int:
        """Turn the ``running`` jobs of ``owner`` into ``error`` with an "interrupted" message."""
        async with self._session.begin() as session:
            result = await session.execute(
                update(Job)
                .where(Job.status == RUNNING, Job.owner == owner)
                .values(status=ERROR, message=INTERRUPTED, finished=_now())
            )
            return _rowcount(result)

    @guarded(write=True)
    async def beat(self, name: str, host: str, pid: int) -> None:
        """Record that instance ``name`` (process ``pid`` on ``host``) is alive now."""
        async with self._session.begin() as session:
            beaten = await session.execute(
                update(Instance).where(Instance.name == name).values(host=host, pid=pid, heartbeat=database_clock())
            )
            if _rowcount(beaten) == 0:
                await session.execute(
                    insert(Instance).values(
                        name=name, host=host, pid=pid, started=database_clock(), heartbeat=database_clock()
                    )
                )

    @guarded(write=True)
    async def leave(self, name: str) -> None:
        """Forget instance ``name`` (it stops cleanly)."""
        async with self._session.begin() as session:
            await session.execute(delete(Instance).where(Instance.name == name))

    @guarded(write=True)
    async def sweep(self, expiry: float, exclude: str) -> list[Job]:
        """Mark as ``error`` (:data:`LOST`) the running jobs of every instance other than
        ``exclude`` whose heartbeat is more than ``expiry`` seconds old, and of owners
        that have no heartbeat at all (servers from before heartbeats) once they have run
        that long; forget those instances. Returns the jobs marked.
        """
        async with self._session.begin() as session:
            expired = select(Instance.name).where(
                Instance.heartbeat < database_clock() - expiry, Instance.name != exclude
            )
            unknown = and_(
                Job.owner.not_in(select(Instance.name)), Job.started < _now() - datetime.timedelta(seconds=expiry)
            )
            lost = or_(Job.owner.in_(expired), unknown)
            jobs = list(await session.scalars(select(Job).where(Job.status == RUNNING, Job.owner != exclude, lost)))
            if jobs:
                await session.execute(
                    update(Job)
                    .where(Job.uuid.in_([job.uuid for job in jobs]), Job.status == RUNNING)
                    .values(status=ERROR, message=LOST, finished=_now())
                    .execution_options(synchronize_session=False)
                )
            await session.execute(
                delete(Instance).where(Instance.heartbeat < database_clock() - expiry, Instance.name != exclude)
            )
            return jobs

    @guarded(write=False)
    async def running_of(self, owner: str, started_before: datetime.datetime) -> list[str]:
        """Uuids of the jobs ``owner`` claimed before ``started_before`` that still run."""
        query = select(Job.uuid).where(Job.status == RUNNING, Job.owner == owner, Job.started < started_before)
        async with self._session() as session:
            return list(await session.scalars(query))

    @guarded(write=False)
    async def live_processes(self, expiry: float) -> set[tuple[str, int]]:
        """``(host, pid)`` of the instances whose heartbeat is at most ``expiry`` seconds old."""
        query = select(Instance.host, Instance.pid).where(Instance.heartbeat >= database_clock() - expiry)
        async with self._session() as session:
            return {(host, pid) for host, pid in await session.execute(query)}

    @guarded(write=False)
    async def active_upload_dirs(self) -> set[str]:
        """Upload folders of the pending and running jobs."""
        query = select(Job.upload_dir).where(Job.status.in_(ACTIVE), Job.upload_dir.is_not(None))
        async with self._session() as session:
            return set(await session.scalars(query))

    @guarded(write=True)
    async def create(
        self,
        model: str,
        kind: str,
        args: dict[str, Any],
        kwargs: dict[str, Any],
        upload_dir: str | None = None,
        api_key_hash: str | None = None,
        idempotency_scope: str | None = None,
        request_hash: str | None = None,
    ) -> Job:
        """Insert a ``pending`` job (of the API key hashed as ``api_key_hash``) and return it.
        Raises :class:`IdempotencyScopeTaken` when ``idempotency_scope`` is another job's.
        """
        values, files = encode_kwargs(kwargs)
        job = Job(
            uuid=uuid_module.uuid4().hex,
            model=model,
            kind=kind,
            status=PENDING,
            args=args,
            kwargs=values,
            files=files,
            upload_dir=upload_dir,
            api_key_hash=api_key_hash,
            idempotency_scope=idempotency_scope,
            request_hash=request_hash,
            created=_now(),
            events=[],
        )
        try:
            async with self._session.begin() as session:
                session.add(job)
        except sa_exc.IntegrityError as error:
            if idempotency_scope is None:
                raise
            raise IdempotencyScopeTaken(idempotency_scope) from error
        return job

    @guarded(write=False)
    async def find_idempotent(self, scope: str) -> Job | None:
        """The job created under idempotency ``scope``, if any."""
        async with self._session() as session:
            return (await session.scalars(select(Job).where(Job.idempotency_scope == scope))).first()

    @guarded(write=True)
    async def release_idempotency(self, uuid: str) -> None:
        """Free job ``uuid``'s idempotency key (it expired): the next request makes a new job."""
        async with self._session.begin() as session:
            await session.execute(update(Job).where(Job.uuid == uuid).values(idempotency_scope=None))

    @guarded(write=False)
    async def pending_queues(self, queues: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``queues`` ((model, kind) pairs) hold a ``pending`` job: one read for all
        of them (the ``ix_jobs_queue`` index), so that an instance serving many models asks
        once per poll rather than trying a claim per model and kind.
        """
        wanted = list(queues)
        if not wanted:
            return set()
        query = (
            select(Job.model, Job.kind)
            .where(Job.status == PENDING, or_(*(and_(Job.model == model, Job.kind == kind) for model, kind in wanted)))
            .distinct()
        )
        async with self._session() as session:
            return {(model, kind) for model, kind in await session.execute(query)}

    @guarded(write=False)  # most claims find nothing and write nothing
    async def claim(self, model: str, kind: str, owner: str) -> Job | None:
        """Take the oldest ``pending`` job of ``model`` and ``kind`` for ``owner`` (it becomes
        ``running``); None when there is none. Safe with several instances on one database.
        """
        oldest = (
            select(Job.uuid)
            .where(Job.model == model, Job.kind == kind, Job.status == PENDING)
            .order_by(Job.created, Job.uuid)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        while True:
            async with self._session.begin() as session:
                uuid = (await session.execute(oldest)).scalar()
                if uuid is None:
                    return None
                claimed = await session.execute(
                    update(Job)
                    .where(Job.uuid == uuid, Job.status == PENDING)
                    .values(status=RUNNING, owner=owner, started=_now())
                )
                if _rowcount(claimed) == 1:
                    return await session.get(Job, uuid, populate_existing=True)
            # Another instance took that job between our read and our update: try the next.

    @guarded(write=False)
    async def get(self, model: str, uuid: str, kind: str | None = None, visible_to: str | None = None) -> Job:
        """The job ``uuid`` of ``model`` (and ``kind``); with ``visible_to`` (an API key's
        hash), only if that key created it. Raises :class:`JobNotFound`, also for a job of
        another key: others cannot even learn that it exists.
        """
        async with self._session() as session:
            job = await session.get(Job, uuid)
        if (
            job is None
            or job.model != model
            or (kind is not None and job.kind != kind)
            or (visible_to is not None and job.api_key_hash != visible_to)
        ):
            raise JobNotFound(f"no {kind or 'job'} {uuid!r} for model {model!r}")
        return job

    @guarded(write=False)
    async def list(
        self,
        model: str,
        kind: str,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        visible_to: str | None = None,
        order: str = OLDEST_FIRST,
    ) -> builtins.list[Job]:
        """Jobs of ``model`` and ``kind`` in ``order`` of creation (:data:`OLDEST_FIRST` or
        :data:`NEWEST_FIRST`; ties by uuid, so that pages never overlap), optionally of one
        ``status``; with ``visible_to`` (an API key's hash), only those that key created.
        """
        query = select(Job).where(Job.model == model, Job.kind == kind)
        if visible_to is not None:
            query = query.where(Job.api_key_hash == visible_to)
        if status is not None:
            query = query.where(Job.status == status)
        keys = (Job.created.desc(), Job.uuid.desc()) if order == NEWEST_FIRST else (Job.created, Job.uuid)
        query = query.order_by(*keys).offset(offset).limit(limit)
        async with self._session() as session:
            return list(await session.scalars(query))

    @guarded(write=True)
    async def finish(
        self,
        uuid: str,
        status: str,
        output: Any = None,
        message: str | None = None,
        media_type: str | None = None,
        result_file: str | None = None,
        reclaim: str | None = None,
        version: str | None = None,
    ) -> bool:
        """End a job that is still ``pending`` or ``running``: its status, output, message
        and, for a binary prediction, its result's file (relative to the results
        directory), and for a training the model ``version`` it made. Returns False when it
        had already ended.

        One conditional UPDATE decides: of a cancel and a "done" landing together, from
        one instance or two, exactly one wins, and the other leaves the row as it is.
        ``reclaim`` (an instance name) also lets the outcome replace a :data:`LOST` mark
        on a job that instance ran: it was alive after all (the database was away longer
        than the heartbeat expiry), and its real outcome is worth more than the guess.
        """
        async with self._session.begin() as session:
            times = (await session.execute(select(Job.started, Job.created).where(Job.uuid == uuid))).first()
            if times is None:
                return False
            finished = _now()
            endable: ColumnElement[bool] = Job.status.in_(ACTIVE)
            if reclaim is not None:
                endable = or_(endable, and_(Job.status == ERROR, Job.message == LOST, Job.owner == reclaim))
            ended = await session.execute(
                update(Job)
                .where(Job.uuid == uuid, endable)
                .values(
                    status=status,
                    finished=finished,
                    duration=(finished - (times.started or times.created)).total_seconds(),
                    output=output,
                    message=message,
                    media_type=media_type,
                    result_file=result_file,
                    version=version,
                )
                .execution_options(synchronize_session=False)
            )
            return _rowcount(ended) == 1

    @guarded(write=True)
    async def report(
        self,
        uuid: str,
        progress: float | None,
        messages: builtins.list[dict[str, Any]],
        metrics: dict[str, float] | None = None,
        history: Mapping[str, builtins.list[builtins.list[Any]]] | None = None,
    ) -> None:
        """Record progress (0..1, or None to keep it), append log ``messages``
        (``{"time", "message"}``), keeping the latest :data:`MAX_EVENTS`, set the latest
        value of each of ``metrics``, and add the points of ``history`` (``{metric: [[step,
        value], ...]}``, every report since the last write) to the job's ``metric_history``
        (:func:`~deepaas_like.jobs.metric_history.merge`, bounded per metric). Nothing is
        written once the job has ended: a report that arrives after a cancel must not change
        what the client was answered.
        """
        async with self._session.begin() as session:
            job = await session.get(Job, uuid, with_for_update=True, populate_existing=True)
            if job is None or job.status not in ACTIVE:
                return
            values: dict[str, Any] = {}
            if progress is not None:
                values["progress"] = progress
            if messages:
                values["events"] = (list(job.events or []) + messages)[-MAX_EVENTS:]
            if metrics:
                values["metrics"] = {**(job.metrics or {}), **metrics}
            if history:
                values["metric_history"] = metric_history.merge(job.metric_history, history)
            if values:
                # Conditional as finish() is: an end that landed since the read wins.
                await session.execute(
                    update(Job)
                    .where(Job.uuid == uuid, Job.status.in_(ACTIVE))
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )

    @guarded(write=True)
    async def note_pending(self, uuid: str, event: dict[str, Any]) -> bool:
        """Append ``event`` (``{"time", "message", ...}``) to job ``uuid`` if it is still
        ``pending`` (a job claimed meanwhile has newer events); whether it was appended.
        """
        async with self._session.begin() as session:
            job = await session.get(Job, uuid, with_for_update=True, populate_existing=True)
            if job is None or job.status != PENDING:
                return False
            events = (list(job.events or []) + [event])[-MAX_EVENTS:]
            updated = await session.execute(
                update(Job)
                .where(Job.uuid == uuid, Job.status == PENDING)
                .values(events=events)
                .execution_options(synchronize_session=False)
            )
            return _rowcount(updated) == 1

    @guarded(write=True)
    async def annotate(self, uuid: str, run_id: str) -> None:
        """Record the MLflow run of job ``uuid`` (unless it has ended)."""
        async with self._session.begin() as session:
            await session.execute(update(Job).where(Job.uuid == uuid, Job.status.in_(ACTIVE)).values(run_id=run_id))

    @guarded(write=False)
    async def result(self, uuid: str) -> bytes | None:
        """The bytes of a binary prediction stored in the database (before results became
        files), or None.
        """
        async with self._session() as session:
            stored = await session.get(JobResult, uuid)
        return None if stored is None else stored.data

    @guarded(write=False)
    async def cancelled_among(self, uuids: builtins.list[str]) -> set[str]:
        """Which of ``uuids`` are ``cancelled`` (by any instance)."""
        if not uuids:
            return set()
        async with self._session() as session:
            rows = await session.scalars(select(Job.uuid).where(Job.uuid.in_(uuids), Job.status == CANCELLED))
            return set(rows)

    @guarded(write=True)
    async def delete_finished_before(self, cutoff: datetime.datetime, batch: int = 1000) -> builtins.list[str]:
        """Delete up to ``batch`` jobs that ended before ``cutoff``, with the results stored
        in the database; returns their uuids (whose result files the caller deletes).
        """
        old = select(Job.uuid).where(Job.status.not_in(ACTIVE), Job.finished < cutoff).limit(batch)
        async with self._session.begin() as session:
            uuids = list(await session.scalars(old))
            if uuids:
                await session.execute(delete(JobResult).where(JobResult.uuid.in_(uuids)))
                await session.execute(delete(Job).where(Job.uuid.in_(uuids)))
            return uuids

    @guarded(write=False)
    async def counts(self) -> dict[tuple[str, str, str], int]:
        """Number of jobs per (model, kind, status)."""
        query = select(Job.model, Job.kind, Job.status, func.count()).group_by(Job.model, Job.kind, Job.status)
        async with self._session() as session:
            return {(model, kind, status): count for model, kind, status, count in await session.execute(query)}


def _now() -> datetime.datetime:
    return datetime.datetime.now()
