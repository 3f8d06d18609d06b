"""The jobs as the fronts see them (trainings and asynchronous predictions): one object,
:class:`Jobs`, over the queue (``queue.py``), the execution of each job
(``execution.py``), the housekeeping of a shared database (``housekeeping.py``), event
feeds (``feed.py``) and result files (``result_files.py``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from deepaas_like.exceptions import DatabaseUnavailable, JobResultMissing
from deepaas_like.jobs.execution import CANCELLED_BY_USER, Execution, Servable
from deepaas_like.jobs.feed import Feed, JobFeeds, Render
from deepaas_like.jobs.hooks import TrainingHook
from deepaas_like.jobs.housekeeping import Housekeeping
from deepaas_like.jobs.queue import Queue
from deepaas_like.jobs.result_files import ResultFiles, remove_uploads
from deepaas_like.jobs.states import ACTIVE, CANCELLED, PENDING, JobView, view
from deepaas_like.jobs.store import JobStore
from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.media import JSON
from deepaas_like.results import FileResult, Prediction
from deepaas_like.settings import Settings

__all__ = ["JobOptions", "Jobs", "JobsStopped"]

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """How this instance (``owner``, its instance name) runs jobs. ``capacity`` maps
    ``(model name, kind)`` to how many of its jobs run at once here. Times are in seconds:
    the queue's ``poll_interval``, how long finished jobs are kept (``retention``, 0:
    forever), the ``heartbeat_interval`` and the ``heartbeat_expiry`` after which a silent
    instance's jobs are reported interrupted, and the ``idempotency_window`` in which an
    ``Idempotency-Key`` maps to its first job.
    """

    owner: str
    capacity: Mapping[tuple[str, str], int]
    poll_interval: float = 0.5
    retention: float = 0.0
    heartbeat_interval: float = 10.0
    heartbeat_expiry: float = 60.0
    idempotency_window: float = 24 * 3600.0

    @classmethod
    def from_settings(cls, settings: Settings, models: Sequence[str]) -> JobOptions:
        """The options ``settings`` give for jobs of ``models`` (their names)."""
        capacity = {}
        for name in models:
            capacity[(name, str(TRAIN))] = settings.for_model(name).train_workers
            capacity[(name, str(PREDICT))] = settings.for_model(name).workers
        return cls(
            owner=settings.instance,
            capacity=capacity,
            poll_interval=settings.job_poll_interval,
            retention=settings.job_retention_hours * 3600,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_expiry=settings.heartbeat_expiry,
            idempotency_window=settings.idempotency_key_hours * 3600,
        )


@dataclasses.dataclass(frozen=True)
class JobsStopped:
    """What :meth:`Jobs.close` left: jobs ``interrupted`` per kind (recorded ``error``),
    ``abandoned`` ones (their end could not be recorded: the next start reports them) and
    the ``pending`` jobs of this instance's models that wait for a server (None: unknown).
    """

    interrupted: dict[str, int]
    abandoned: int
    pending: int | None


class Jobs:
    """Submits, runs, cancels and reads jobs of the ``models`` this instance serves, stored
    in ``store``; binary prediction results are files in ``results``; ``render`` makes the
    document that event streams send of a job (a front's wire format); each training's
    start and end are told to ``hooks`` (model versions, MLflow), in order.

    Every instance on a shared database polls it, so a job posted to one instance may run
    on another, and a cancel recorded by any instance stops the job wherever it runs
    (within ``options.poll_interval`` seconds).
    """

    def __init__(
        self,
        store: JobStore,
        models: Mapping[str, Servable],
        options: JobOptions,
        results: ResultFiles,
        render: Render,
        hooks: Sequence[TrainingHook] = (),
    ) -> None:
        self.store = store
        self.options = options
        self.results = results
        self.feeds = JobFeeds(store, options.poll_interval / 2, render)
        self.execution = Execution(store, self.feeds, results, hooks, options.owner, self._freed)
        self.queue = Queue(
            store, models, self.execution, options.capacity, options.poll_interval, options.idempotency_window
        )
        #: Set by :meth:`close`: what the jobs of this instance were left in.
        self.stopped: JobsStopped | None = None
        self.housekeeping = Housekeeping(
            self.execution, options.heartbeat_interval, options.heartbeat_expiry, options.retention
        )
        self._loops: builtins.list[asyncio.Task[None]] = []
        #: The fronts' face: submit and upload owners come from the parts that own them.
        self.submit = self.queue.submit
        self.upload_owners = self.housekeeping.upload_owners

    @classmethod
    def from_settings(
        cls,
        store: JobStore,
        models: Mapping[str, Servable],
        settings: Settings,
        *,
        results: ResultFiles,
        render: Render,
        hooks: Sequence[TrainingHook] = (),
    ) -> Jobs:
        """The jobs of ``models`` as ``settings`` configure them (see :class:`JobOptions`)."""
        return cls(store, models, JobOptions.from_settings(settings, list(models)), results, render, hooks)

    def _freed(self, model: str, kind: str) -> None:
        self.queue.freed(model, kind)

    async def start(self) -> None:
        """Say this instance is alive, report its own interrupted jobs (it is starting
        again) and those of instances whose heartbeat expired, and start polling for work.
        """
        await self.housekeeping.start()
        self._loops = [
            asyncio.create_task(self.queue.dispatch()),
            asyncio.create_task(self.execution.watch_cancels(self.options.poll_interval)),
            *(asyncio.create_task(loop) for loop in self.housekeeping.loops()),
        ]

    async def close(self) -> None:
        """Stop polling; jobs running here become ``error`` (interrupted), pending ones wait.

        Outcomes still waiting for the database get a few seconds; a job whose outcome
        cannot be written stays ``running`` in the database, owned by this instance, and
        is reported interrupted by the next start (see :meth:`start`).
        """
        for task in self._loops:
            task.cancel()
        await self.execution.close()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self.stopped = JobsStopped(dict(self.execution.interrupted), self.execution.abandoned, await self._pending())
        if not self.execution.abandoned:  # jobs left running stay ours: our heartbeat expires, then they are reported
            with contextlib.suppress(DatabaseUnavailable):
                await self.housekeeping.leave()

    async def _pending(self) -> int | None:
        """Jobs of this instance's models left pending (None: the database did not say within a second)."""
        try:
            counts = await asyncio.wait_for(self.store.counts(), 1.0)
        except Exception:  # noqa: BLE001 - only the shutdown line misses it
            return None
        return sum(n for (model, _, status), n in counts.items() if status == PENDING and model in self.queue.models)

    async def get(self, model: str, uuid: str, kind: str, visible_to: str | None = None) -> JobView:
        """The job (only if the API key hashed as ``visible_to`` created it, when given);
        raises ``JobNotFound``.
        """
        return view(await self.store.get(model, uuid, kind, visible_to))

    async def list(self, model: str, kind: str, **query: Any) -> builtins.list[JobView]:
        """Jobs of ``model`` and ``kind`` as :meth:`JobStore.list` selects them with
        ``query`` (``status``, ``limit``, ``offset``, ``visible_to``: of one API key's hash,
        ``order``: oldest first unless :data:`~deepaas_like.jobs.states.NEWEST_FIRST`).
        """
        return [view(job) for job in await self.store.list(model, kind, **query)]

    async def cancel(self, model: Servable, uuid: str, kind: str, visible_to: str | None = None) -> JobView:
        """Cancel a pending or running job: it is marked ``cancelled`` and, if it runs here,
        its worker is killed (a fresh, warmed one replaces it); an instance running it
        elsewhere notices within ``poll_interval``. An ended job is returned unchanged.
        Raises ``JobNotFound`` (also for a job of another API key than ``visible_to``).
        """
        job = await self.store.get(model.name, uuid, kind, visible_to)
        if job.status in ACTIVE and await self.store.finish(uuid, CANCELLED, message=CANCELLED_BY_USER):
            self.feeds.changed(uuid)
            if uuid in self.execution.running:
                await self.execution.stop(uuid)  # its run logs the cancel once its worker stopped
            elif job.status == PENDING:
                LOG.info("%s job %s of model %s cancelled before it started", kind, uuid, model.name)
                remove_uploads(job.upload_dir)
        return view(await self.store.get(model.name, uuid, kind))

    async def follow(self, model: str, uuid: str, kind: str, visible_to: str | None = None) -> Feed:
        """Follow a job's changes (for an event stream; see :class:`JobFeeds`): one reader
        of the database per job, however many streams follow it. Raises ``JobNotFound``.
        """
        return await self.feeds.follow(model, uuid, kind, visible_to)

    def document(self, job: JobView) -> dict[str, Any]:
        """The job in the wire format the jobs were given (``render``), as its event streams send it."""
        return self.feeds.render(job)

    def end_feeds(self) -> None:
        """End every event stream (the server is stopping)."""
        self.feeds.close()

    async def result(self, job: JobView) -> Prediction | None:
        """The stored result of a finished binary prediction (its file, to be streamed, or
        the bytes of one stored before results became files); None if it has none. Raises
        ``JobResultMissing`` when its file is not in the results directory.
        """
        if not job.has_file:
            data = await self.store.result(job.uuid)
            return None if data is None else Prediction(job.media_type or JSON, data=data)
        stored = (await self.store.get(job.model, job.uuid)).result_file
        assert stored is not None
        path = self.results.path(stored)
        if not path.is_file():
            raise JobResultMissing(
                f"the result of job {job.uuid} is not in the results directory {self.results.directory} "
                "(several servers on one database need a shared --results-dir)"
            )
        return Prediction(job.media_type or JSON, file=FileResult(str(path), job.media_type))

    async def counts(self) -> dict[tuple[str, str, str], int]:
        """Jobs in the database per (model, kind, status), for metrics."""
        return await self.store.counts()

    async def database_problem(self) -> str | None:
        """Why the job database cannot serve now (for readiness), or None."""
        return await self.store.database.check()

    @property
    def database_up(self) -> bool:
        """Whether the job database's last read and last write worked (no I/O)."""
        return self.store.database.problem is None
