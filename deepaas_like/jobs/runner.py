"""Runs jobs (trainings and asynchronous predictions) from the database on this
instance's workers: first in, first out per model, as workers free up.

Every instance on a shared database polls it, so a job posted to one instance may run on
another, and a cancel recorded by any instance stops the job wherever it runs (within
``poll_interval`` seconds).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from deepaas_like.exceptions import (
    DatabaseUnavailable,
    DeepaasLikeError,
    HookNotImplemented,
    IdempotencyKeyReused,
    JobResultMissing,
)
from deepaas_like.jobs.feed import Feed, JobFeeds, Render
from deepaas_like.jobs.result_files import ResultFiles
from deepaas_like.jobs.states import ACTIVE, CANCELLED, DONE, ERROR, OLDEST_FIRST, PENDING, JobView
from deepaas_like.jobs.store import (
    INTERRUPTED,
    MAX_EVENTS,
    UNTRACKED,
    IdempotencyScopeTaken,
    JobStore,
    decode_kwargs,
    error_text,
)
from deepaas_like.jobs.tables import Job
from deepaas_like.kinds import TRAIN
from deepaas_like.media import JSON
from deepaas_like.model.args import UploadedFile, json_arguments
from deepaas_like.results import FileResult, Prediction
from deepaas_like.tracking import FAILED, FINISHED, KILLED, Run, Tracker, numbers_of
from deepaas_like.versions.records import VersionRecord, VersionRecords
from deepaas_like.versions.storage import ModelStore
from deepaas_like.workers.base import ProgressCallback

LOG = logging.getLogger(__name__)
CANCELLED_BY_USER = "cancelled by a DELETE request"
#: Pauses between tries of a job state write while the database is away: from the first,
#: doubling (with jitter) up to the last, in seconds.
RETRY_FIRST, RETRY_MAX = 0.05, 1.0
#: Seconds a stopping server keeps trying to record outcomes before it gives up on them
#: (those jobs are then reported interrupted, by this instance's next start or by another).
CLOSE_GRACE = 5.0
T = TypeVar("T")


class Servable(Protocol):
    """What the runner needs of a served model (the serving layer's ``ModelHandle``)."""

    @property
    def name(self) -> str:
        """The model's name."""

    @property
    def makes_versions(self) -> bool:
        """Whether a successful training makes a model version (the plugin has save and load)."""

    def require(self, kind: str) -> None: ...

    async def train(
        self,
        kwargs: dict[str, Any],
        job_id: str,
        on_progress: ProgressCallback | None = None,
        save_to: str | None = None,
    ) -> Any: ...

    async def predict(
        self, kwargs: dict[str, Any], job_id: str | None = None, on_progress: ProgressCallback | None = None
    ) -> Prediction: ...

    async def kill(self, job_id: str) -> bool: ...


class JobRunner:
    """Submits, runs, cancels and reads jobs of the ``models`` this instance serves.

    ``capacity`` maps ``(model name, kind)`` to how many of its jobs run at once here;
    ``retention`` (seconds, 0: keep forever) is how long finished jobs are kept. Every
    ``heartbeat_interval`` seconds this instance records that it is alive, and marks the
    running jobs of instances silent for ``heartbeat_expiry`` seconds as interrupted.
    Binary prediction results are files in ``results`` (see :class:`ResultFiles`). An
    ``Idempotency-Key`` maps to its first job for ``idempotency_window`` seconds. ``render``
    makes the document that event streams send of a job (the HTTP layer's wire format).

    A successful training of a model that :attr:`~Servable.makes_versions` leaves a version
    in ``model_store``, recorded in ``version_records`` (``on_version`` is told of it). With
    a ``tracker``, each training is an MLflow run (see :mod:`deepaas_like.tracking`).

    A job's outcome is written until the database takes it: while the database is away,
    the outcome waits in memory and the write is retried with backoff.
    """

    def __init__(
        self,
        store: JobStore,
        models: dict[str, Servable],
        owner: str,
        capacity: dict[tuple[str, str], int],
        poll_interval: float = 0.5,
        retention: float = 0.0,
        heartbeat_interval: float = 10.0,
        heartbeat_expiry: float = 60.0,
        *,
        results: ResultFiles,
        render: Render,
        idempotency_window: float = 24 * 3600.0,
        model_store: ModelStore | None = None,
        version_records: VersionRecords | None = None,
        on_version: Callable[[VersionRecord], None] | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.owner = owner
        self.capacity = capacity
        self.poll_interval = poll_interval
        self.retention = retention
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_expiry = heartbeat_expiry
        self.results = results
        self.idempotency_window = idempotency_window
        self.model_store = model_store
        self.version_records = version_records
        self.on_version = on_version
        self.tracker = tracker
        self.feeds = JobFeeds(store, poll_interval / 2, render)
        self._host, self._pid = socket.gethostname(), os.getpid()
        self._running: dict[str, tuple[Servable, asyncio.Task[None]]] = {}
        self._counts: dict[tuple[str, str], int] = {key: 0 for key in capacity}
        self._locks = {key: asyncio.Lock() for key in capacity}
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        #: Jobs whose outcome is known and being written (their plugin call has ended).
        self._recording: set[str] = set()
        #: Running jobs this runner is stopping because they were cancelled.
        self._cancelled: set[str] = set()
        self._give_up_at: float | None = None  # set by close(): when retries stop
        self._abandoned = 0  # jobs whose end could not be recorded before the server stopped

    async def start(self) -> None:
        """Say this instance is alive, report its own interrupted jobs (it is starting
        again) and those of instances whose heartbeat expired, and start polling for work.
        """
        await self.store.beat(self.owner, self._host, self._pid)
        interrupted = await self.store.mark_interrupted(self.owner)
        if interrupted:
            LOG.warning("%d job(s) were running when %s last stopped: marked interrupted", interrupted, self.owner)
        await self._sweep()
        self._loops = [
            asyncio.create_task(self._dispatch()),
            asyncio.create_task(self._watch_cancels()),
            asyncio.create_task(self._heartbeat()),
        ]
        if self.retention > 0:
            self._loops.append(asyncio.create_task(self._expire()))

    async def upload_owners(self) -> tuple[set[str], set[tuple[str, int]]]:
        """What keeps an upload folder alive: the folders of pending and running jobs, and
        the ``(host, pid)`` of the live instances (whose requests may be uploading).
        """
        return await self.store.active_upload_dirs(), await self.store.live_processes(self.heartbeat_expiry)

    async def _sweep(self) -> None:
        lost = await self.store.sweep(self.heartbeat_expiry, exclude=self.owner)
        for job in lost:
            LOG.warning(
                "%s job %s of %s was running on %s, whose heartbeat expired: marked interrupted",
                job.kind,
                job.uuid,
                job.model,
                job.owner,
            )
            _remove(job.upload_dir)

    async def _untracked(self) -> None:
        # A claim whose commit landed but whose answer was lost (the connection broke just
        # then) leaves a job "running" here that nothing runs: it must not look alive.
        # Claims take milliseconds; a minute leaves no doubt.
        cutoff = datetime.datetime.now() - datetime.timedelta(seconds=60)
        for uuid in await self.store.running_of(self.owner, cutoff):
            if uuid not in self._running and await self.store.finish(uuid, ERROR, message=UNTRACKED):
                LOG.error("job %s was claimed by this instance but never started: marked interrupted", uuid)
                self.feeds.changed(uuid)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.store.beat(self.owner, self._host, self._pid)
                await self._sweep()
                await self._untracked()
            except DatabaseUnavailable:
                pass  # the store logs when the database goes and comes back
            except Exception:  # noqa: BLE001 - the next beat tries again
                LOG.exception("cannot record this instance's heartbeat")

    async def close(self) -> None:
        """Stop polling; jobs running here become ``error`` (interrupted), pending ones wait.

        Outcomes still waiting for the database get :data:`CLOSE_GRACE` seconds; a job whose
        outcome cannot be written stays ``running`` in the database, owned by this
        instance, and is reported interrupted by the next start (see :meth:`start`).
        """
        self._give_up_at = time.monotonic() + CLOSE_GRACE
        for task in self._loops:
            task.cancel()
        for uuid, (_, task) in list(self._running.items()):
            if uuid in self._recording:
                continue  # its outcome is being written: let it land
            try:
                await self._write(
                    f"the interruption of job {uuid}",
                    functools.partial(self.store.finish, uuid, ERROR, message=INTERRUPTED),
                )
            except DatabaseUnavailable:
                self._abandoned += 1
            task.cancel()
        tasks = [task for _, task in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_GRACE + 1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*self._loops, *tasks, return_exceptions=True)
        if not self._abandoned:  # jobs left running stay ours: our heartbeat expires, then they are reported
            with contextlib.suppress(DatabaseUnavailable):
                await self.store.leave(self.owner)

    async def submit(
        self,
        model: Servable,
        kind: str,
        kwargs: dict[str, Any],
        upload_dir: str | None,
        api_key_hash: str | None = None,
        idempotency_key: str | None = None,
    ) -> JobView:
        """Record a ``pending`` job of the API key hashed as ``api_key_hash`` and start it
        at once if a worker is free here; returns the job.

        ``upload_dir`` (the request's uploads) belongs to the job from now on and is
        deleted when it ends. With an ``idempotency_key`` (the IETF httpapi draft's
        ``Idempotency-Key``) sent again by the same API key for the same model and kind
        within ``idempotency_window``, no job is made: the first one is returned (and these
        uploads deleted). Raises ``IdempotencyKeyReused`` when that first job had other
        arguments, ``DatabaseUnavailable`` when the job could not be recorded.
        """
        try:
            model.require(kind)
        except HookNotImplemented:
            _remove(upload_dir)
            raise
        scope = fingerprint = None
        try:
            if idempotency_key is not None:
                scope = _digest([api_key_hash or "", model.name, kind, idempotency_key])
                fingerprint = _digest(_request_fingerprint(kwargs))
                first = await self._first_job(scope, fingerprint)
                if first is not None:
                    _remove(upload_dir)
                    return first.to_view()
            job = await self.store.create(
                model.name, kind, json_arguments(kwargs), kwargs, upload_dir, api_key_hash, scope, fingerprint
            )
        except IdempotencyScopeTaken:
            # A twin request with the same key was recorded first: it is the first job.
            assert scope is not None and fingerprint is not None  # a scope is only taken with a key
            first = await self._first_job(scope, fingerprint)
            _remove(upload_dir)
            if first is None:
                raise DatabaseUnavailable(
                    f"the job of Idempotency-Key {idempotency_key!r} is being recorded; try again"
                ) from None
            return first.to_view()
        except BaseException:
            _remove(upload_dir)
            raise
        # Recorded: from here on a database hiccup must not fail the request (a client
        # would post the job again); the dispatcher starts it later.
        try:
            await self._fill(model.name, kind)
            return (await self.store.get(model.name, job.uuid)).to_view()
        except DatabaseUnavailable:
            return job.to_view()

    async def _first_job(self, scope: str, fingerprint: str) -> Job | None:
        first = await self.store.find_idempotent(scope)
        if first is None:
            return None
        if first.created < datetime.datetime.now() - datetime.timedelta(seconds=self.idempotency_window):
            await self.store.release_idempotency(first.uuid)  # expired: the key may name a new job
            return None
        if first.request_hash != fingerprint:
            raise IdempotencyKeyReused(
                f"this Idempotency-Key was used for job {first.uuid} with other arguments; "
                "use a new key for a new request"
            )
        return first

    async def get(self, model: str, uuid: str, kind: str, visible_to: str | None = None) -> JobView:
        """The job (only if the API key hashed as ``visible_to`` created it, when given);
        raises ``JobNotFound``.
        """
        return (await self.store.get(model, uuid, kind, visible_to)).to_view()

    def document(self, job: JobView) -> dict[str, Any]:
        """The job in the wire format the runner was given (``render``), as its event streams send it."""
        return self.feeds.render(job)

    async def follow(self, model: str, uuid: str, kind: str, visible_to: str | None = None) -> Feed:
        """Follow a job's changes (for an event stream; see :class:`JobFeeds`): one reader
        of the database per job, however many streams follow it. Raises ``JobNotFound``.
        """
        return await self.feeds.follow(model, uuid, kind, visible_to)

    def end_feeds(self) -> None:
        """End every event stream (the server is stopping)."""
        self.feeds.close()

    async def counts(self) -> dict[tuple[str, str, str], int]:
        """Jobs in the database per (model, kind, status), for metrics."""
        return await self.store.counts()

    async def database_problem(self) -> str | None:
        """Why the job database cannot serve now (for readiness), or None."""
        return await self.store.health()

    @property
    def database_up(self) -> bool:
        """Whether the job database's last read and last write worked (no I/O)."""
        return self.store.problem is None

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

    async def list(
        self,
        model: str,
        kind: str,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        visible_to: str | None = None,
        order: str = OLDEST_FIRST,
    ) -> list[JobView]:
        """Jobs of ``model`` in ``order`` of creation, oldest first unless :data:`NEWEST_FIRST`
        (of one API key when ``visible_to``).
        """
        jobs = await self.store.list(model, kind, status, limit, offset, visible_to, order)
        return [job.to_view() for job in jobs]

    async def cancel(self, model: Servable, uuid: str, kind: str, visible_to: str | None = None) -> JobView:
        """Cancel a pending or running job: it is marked ``cancelled`` and, if it runs here,
        its worker is killed (a fresh, warmed one replaces it); an instance running it
        elsewhere notices within ``poll_interval``. An ended job is returned unchanged.
        Raises ``JobNotFound`` (also for a job of another API key than ``visible_to``).
        """
        job = await self.store.get(model.name, uuid, kind, visible_to)
        if job.status in ACTIVE and await self.store.finish(uuid, CANCELLED, message=CANCELLED_BY_USER):
            self.feeds.changed(uuid)
            if uuid in self._running:
                await self._stop_local(uuid)  # its run logs the cancel once its worker stopped
            elif job.status == PENDING:
                LOG.info("%s job %s of model %s cancelled before it started", kind, uuid, model.name)
                _remove(job.upload_dir)
        return (await self.store.get(model.name, uuid, kind)).to_view()

    async def _stop_local(self, uuid: str) -> None:
        """Stop cancelled job ``uuid`` running here: kill its worker (or cancel its task)."""
        self._cancelled.add(uuid)
        model, task = self._running[uuid]
        if not await model.kill(uuid):
            task.cancel()

    async def _fill(self, model_name: str, kind: str) -> None:
        key = (model_name, kind)
        async with self._locks[key]:
            while self._counts[key] < self.capacity[key]:
                job = await self.store.claim(model_name, kind, self.owner)
                if job is None:
                    return
                self._counts[key] += 1
                task = asyncio.create_task(self._run(self.models[model_name], job))
                task.add_done_callback(_log_failure)
                self._running[job.uuid] = (self.models[model_name], task)

    async def _write(self, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """Run a job state write until the database takes it: while it is away (stopped,
        unreachable, locked) the write is tried again with growing pauses. Raises
        ``DatabaseUnavailable`` only once :meth:`close` has given up waiting.
        """
        pause = RETRY_FIRST
        warned = False
        while True:
            try:
                result = await write()
            except DatabaseUnavailable as error:
                if self._give_up_at is not None and time.monotonic() > self._give_up_at:
                    LOG.error("%s could not be recorded before the server stopped: %s", what, error.message)
                    raise
                if not warned:
                    LOG.warning("%s waits for the job database: %s", what, error.message)
                    warned = True
                await asyncio.sleep(pause * random.uniform(0.5, 1.0))
                pause = min(pause * 2, RETRY_MAX)
                continue
            if warned:
                LOG.info("%s recorded", what)
            return result

    async def _end(self, job: Job, status: str, **outcome: Any) -> bool:
        """Record the end of ``job`` (retried while the database is away). An outcome the
        database refuses for good (a value it cannot store) is recorded as an error.
        """
        what = f"the end of {job.kind} job {job.uuid}"
        try:
            ended = await self._write(what, lambda: self.store.finish(job.uuid, status, reclaim=self.owner, **outcome))
        except DatabaseUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - the database refused this outcome itself
            LOG.error("%s could not be stored: %s", what, error_text(error))
            message = f"the job's outcome could not be stored in the job database: {error_text(error)}"
            ended = await self._write(
                what, lambda: self.store.finish(job.uuid, ERROR, message=message, reclaim=self.owner)
            )
        self.feeds.changed(job.uuid)
        return ended

    async def _run(self, model: Servable, job: Job) -> None:
        run = await self._track(model, job) if job.kind == TRAIN and self.tracker is not None else None
        progress = _ProgressBuffer(self.store, job.uuid, self.feeds.changed, run.metrics if run is not None else None)
        kwargs = decode_kwargs(job.kwargs, job.files)
        version: VersionRecord | None = None
        try:
            try:
                if job.kind == TRAIN:
                    location = self._version_location(model, job)
                    save_to = None if location is None else self.model_store.url_of(location)  # type: ignore[union-attr]
                    output = await model.train(kwargs, job_id=job.uuid, on_progress=progress.add, save_to=save_to)
                    outcome: dict[str, Any] = {"status": DONE, "output": output}
                    if location is not None:
                        version = await self._record_version(model, job, location, output, progress, run)
                        outcome["version"] = version.id
                else:
                    prediction = await model.predict(kwargs, job_id=job.uuid, on_progress=progress.add)
                    outcome = await self._prediction_outcome(job, prediction)
            except DeepaasLikeError as error:
                self._log_failure(job, model.name, error.message)
                outcome = {"status": ERROR, "message": error.message}
            except asyncio.CancelledError:
                await self._task_cancelled(model, job, run)
                raise
            except Exception as error:  # noqa: BLE001 - recorded on the job; the server keeps serving
                self._log_failure(job, model.name, f"{type(error).__name__}: {error}", error)
                outcome = {"status": ERROR, "message": f"{type(error).__name__}: {error}"}
            # The plugin call has ended: from here on the outcome is only written, and a
            # stopping server lets that write land (see close()).
            self._recording.add(job.uuid)
            progress.close()
            # The last progress lands before the job reads as done.
            try:
                await self._write(f"the progress of job {job.uuid}", progress.flush)
            except DatabaseUnavailable:
                raise
            except Exception as error:  # noqa: BLE001 - progress is dropped, the outcome is not
                LOG.error("the progress of job %s could not be stored: %s", job.uuid, error_text(error))
            if run is not None:
                await self._end_run(run, outcome, version)
            ended = await self._end(job, outcome.pop("status"), **outcome)
            if not ended and outcome.get("result_file"):
                self.results.remove(job.uuid)  # the job had ended meanwhile (cancelled)
            if not ended and version is not None:
                await self._forget_version(version)
        except DatabaseUnavailable:
            self._abandoned += 1  # close() gave up; logged by _write. Reported interrupted later.
        finally:
            progress.close()
            self._recording.discard(job.uuid)
            self._cancelled.discard(job.uuid)
            self._running.pop(job.uuid, None)
            self._counts[(model.name, job.kind)] -= 1
            _remove(job.upload_dir)
            self._wake.set()

    async def _task_cancelled(self, model: Servable, job: Job, run: Run | None) -> None:
        """Record the end of ``job`` whose task was cancelled: by a DELETE whose worker could
        not be killed (cancelled), or by :meth:`close` (interrupted).
        """
        self._recording.add(job.uuid)
        ending = (ERROR, INTERRUPTED) if self._give_up_at is not None else (CANCELLED, CANCELLED_BY_USER)
        if ending[0] == CANCELLED:
            self._log_failure(job, model.name, "its task was cancelled")
        if run is not None:
            await asyncio.shield(run.finish(KILLED))
        with contextlib.suppress(DatabaseUnavailable):
            await asyncio.shield(self._end(job, ending[0], message=ending[1]))

    def _log_failure(self, job: Job, model: str, reason: str, error: BaseException | None = None) -> None:
        """Log why ``job``'s call ended without a result: at INFO, as a cancel, for a job this
        runner was stopping because it was cancelled (the "killed by SIGKILL" of its worker
        is the cancel working), else at ERROR (with ``error``'s traceback when given).
        """
        if job.uuid in self._cancelled:
            LOG.info("%s job %s of model %s cancelled: its call was stopped", job.kind, job.uuid, model)
        else:
            LOG.error("%s job %s of model %s failed: %s", job.kind, job.uuid, model, reason, exc_info=error)

    def _version_location(self, model: Servable, job: Job) -> str | None:
        """Where training ``job`` saves the version it makes, relative to the model store;
        None when it makes none.
        """
        if self.model_store is None or self.version_records is None or not model.makes_versions:
            return None
        return self.model_store.location(model.name, job.uuid)

    async def _record_version(
        self, model: Servable, job: Job, location: str, output: Any, progress: _ProgressBuffer, run: Run | None
    ) -> VersionRecord:
        """Record the version training ``job`` saved at ``location`` (retried while the
        database is away): its metrics are the latest reported and the numbers ``train``
        returned; it belongs to the training's API key.
        """
        records = self.version_records
        assert records is not None
        metrics = {**progress.metrics, **numbers_of(output)}
        run_id = run.run_id if run is not None else None
        version = await self._write(
            f"the version made by job {job.uuid}",
            lambda: records.add(
                model.name, job.uuid, location, model.name, job.args, metrics, run_id, job.api_key_hash
            ),
        )
        LOG.info("training %s of %s made version %s", job.uuid, model.name, version.id)
        if self.on_version is not None:
            self.on_version(version)
        return version

    async def _forget_version(self, version: VersionRecord) -> None:
        """Drop the version of a training that was cancelled while it was being recorded."""
        assert self.version_records is not None and self.model_store is not None
        try:
            await self.version_records.delete(version.model, version.number)
            await asyncio.to_thread(self.model_store.remove, version.location)
        except Exception:  # noqa: BLE001 - a left-over version is listed, and can be deleted
            LOG.exception("cannot remove version %s of a cancelled training", version.id)

    async def _track(self, model: Servable, job: Job) -> Run:
        """Start the MLflow run of training ``job``, and record its id on the job."""
        assert self.tracker is not None
        run = await self.tracker.start(model.name, job.uuid, job.args)
        if run.run_id is not None:
            try:
                await self.store.annotate(job.uuid, run.run_id)
            except Exception as error:  # noqa: BLE001 - the run id is also in the job's end
                LOG.warning("cannot record the MLflow run of job %s yet: %s", job.uuid, error_text(error))
        return run

    async def _end_run(self, run: Run, outcome: dict[str, Any], version: VersionRecord | None) -> None:
        """End the MLflow run as the training ended; a tracking problem goes in the job's
        message (a training that worked still succeeds).
        """
        done = outcome["status"] == DONE
        await run.finish(
            FINISHED if done else FAILED,
            version=None if version is None else version.id,
            final=numbers_of(outcome.get("output")) if done else None,
            artifacts=None if version is None else self.model_store.url_of(version.location),  # type: ignore[union-attr]
        )
        if run.problem is not None and done:
            outcome["message"] = run.problem

    async def _prediction_outcome(self, job: Job, prediction: Prediction) -> dict[str, Any]:
        if not prediction.binary:
            return {"status": DONE, "output": prediction.document, "media_type": JSON}
        try:
            name = await self.results.save(job.uuid, prediction.file or prediction.data)  # type: ignore[arg-type]
        except OSError as error:
            LOG.error("cannot store the result of job %s in %s: %s", job.uuid, self.results.directory, error)
            return {"status": ERROR, "message": f"the result could not be stored: {error.strerror or error}"}
        finally:
            prediction.discard()  # a worker's temporary file (moved already when saved)
        return {"status": DONE, "media_type": prediction.media_type, "result_file": name}

    async def _dispatch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            free = [key for key, capacity in self.capacity.items() if self._counts[key] < capacity]
            try:
                queues = await self.store.pending_queues(free)
            except DatabaseUnavailable:
                continue  # the store logs when the database goes and comes back
            except Exception:  # noqa: BLE001 - a database hiccup must not stop the queue
                LOG.exception("cannot look for pending jobs")
                continue
            for model_name, kind in free:
                if (model_name, kind) not in queues:
                    continue
                try:
                    await self._fill(model_name, kind)
                except DatabaseUnavailable:
                    pass  # logged by the store, as above
                except Exception:  # noqa: BLE001 - as above
                    LOG.exception("cannot claim %s jobs of %s", kind, model_name)

    async def _watch_cancels(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                for uuid in await self.store.cancelled_among(list(self._running)):
                    if uuid in self._running:
                        await self._stop_local(uuid)
            except DatabaseUnavailable:
                pass
            except Exception:  # noqa: BLE001
                LOG.exception("cannot check for cancelled jobs")

    def _remove_results(self, uuids: builtins.list[str]) -> None:
        for uuid in uuids:
            self.results.remove(uuid)

    async def _expire(self) -> None:
        while True:
            cutoff = datetime.datetime.now() - datetime.timedelta(seconds=self.retention)
            try:
                removed: builtins.list[str] = []
                while batch := await self.store.delete_finished_before(cutoff):
                    removed += batch
                    await asyncio.to_thread(self._remove_results, batch)
                if removed:
                    LOG.info("removed %d job(s) finished before %s", len(removed), cutoff)
            except DatabaseUnavailable:
                pass
            except Exception:  # noqa: BLE001
                LOG.exception("cannot remove old jobs")
            await asyncio.sleep(min(max(self.retention / 10, 1.0), 60.0))


class _ProgressBuffer:
    """Collects what a running job reports and writes it at most every 0.2 s, one write at
    a time (a late write must never overwrite a newer one). While the database is away,
    reports wait here (the latest :data:`MAX_EVENTS` messages).
    """

    def __init__(
        self,
        store: JobStore,
        uuid: str,
        written: Callable[[str], None],
        on_metrics: Callable[[dict[str, float], int], None] | None = None,
    ) -> None:
        self.store = store
        self.uuid = uuid
        self._written = written  # told after each write
        self._on_metrics = on_metrics  # told each report of metrics, with its step
        self._progress: float | None = None
        self._messages: list[dict[str, Any]] = []
        #: The latest value of each metric reported.
        self.metrics: dict[str, float] = {}
        self._new_metrics: dict[str, float] = {}
        self._next_step = 0
        self._flusher: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        self._closed = False

    def add(
        self,
        progress: float | None,
        message: str | None,
        metrics: dict[str, float] | None = None,
        step: int | None = None,
    ) -> None:
        if progress is not None:
            self._progress = progress
        if message is not None:
            self._messages.append({"time": str(datetime.datetime.now()), "message": message})
        if metrics:
            # Reports without a step are numbered 0, 1, 2, ... after the last step seen.
            step = self._next_step if step is None else step
            self._next_step = max(self._next_step, step + 1)
            self.metrics.update(metrics)
            self._new_metrics.update(metrics)
            if self._on_metrics is not None:
                self._on_metrics(metrics, step)
        if not self._closed and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(0.2)
        try:
            await self.flush()
        except DatabaseUnavailable:
            pass  # kept for the next flush; the job's last flush is retried until it lands
        except Exception as error:  # noqa: BLE001 - a report the database refuses is dropped
            LOG.error("the progress of job %s could not be stored: %s", self.uuid, error_text(error))

    async def flush(self) -> None:
        """Write what was reported; while the database is away it is kept for the next flush."""
        async with self._writing:
            if self._progress is None and not self._messages and not self._new_metrics:
                return
            progress, messages, metrics = self._progress, self._messages, self._new_metrics
            self._progress, self._messages, self._new_metrics = None, [], {}
            try:
                await self.store.report(self.uuid, progress, messages, metrics)
            except (DatabaseUnavailable, asyncio.CancelledError):
                self._messages = (messages + self._messages)[-MAX_EVENTS:]
                self._new_metrics = {**metrics, **self._new_metrics}
                if self._progress is None:
                    self._progress = progress
                raise
            self._written(self.uuid)

    def close(self) -> None:
        """No more timed flushes. One waiting for its turn is dropped; one writing goes on
        (cancelling it would not stop the database from applying it later).
        """
        self._closed = True
        if self._flusher is not None and not self._writing.locked():
            self._flusher.cancel()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _request_fingerprint(kwargs: dict[str, Any]) -> dict[str, Any]:
    """What makes two requests "the same" for an Idempotency-Key: the argument values, and
    of each upload its name, media type and size (its bytes are not read again).
    """

    def size(path: str) -> int | None:
        try:
            return os.path.getsize(path)
        except OSError:
            return None

    return {
        name: [value.original_filename, value.content_type, size(value.filename)]
        if isinstance(value, UploadedFile)
        else value
        for name, value in kwargs.items()
    }


def _remove(directory: str | None) -> None:
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def _log_failure(task: asyncio.Task[Any]) -> None:
    # A job task never raises but to be cancelled; should one, say so now rather than as
    # asyncio's "Task exception was never retrieved" at exit.
    if not task.cancelled() and task.exception() is not None:
        LOG.error("a job task failed", exc_info=task.exception())
