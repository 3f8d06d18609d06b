"""The execution of jobs this instance claimed: one task per job calls the plugin on a
worker, buffers its progress, writes its outcome until the database takes it, and stops
it when it is cancelled, here or on any instance sharing the database.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from deepaas_like.database import error_text
from deepaas_like.database.tables import Job
from deepaas_like.exceptions import DatabaseUnavailable, DeepaasLikeError
from deepaas_like.jobs.feed import JobFeeds
from deepaas_like.jobs.hooks import Training, TrainingHook
from deepaas_like.jobs.recording import CLOSE_GRACE, ProgressBuffer, RetriedWrites
from deepaas_like.jobs.result_files import ResultFiles, remove_uploads
from deepaas_like.jobs.states import CANCELLED, DONE, ERROR
from deepaas_like.jobs.store import INTERRUPTED, JobStore, decode_kwargs
from deepaas_like.kinds import TRAIN
from deepaas_like.media import JSON
from deepaas_like.results import Prediction
from deepaas_like.workers.base import ProgressCallback

__all__ = ["CANCELLED_BY_USER", "Execution", "Servable"]

LOG = logging.getLogger(__name__)
CANCELLED_BY_USER = "cancelled by a DELETE request"


class Servable(Protocol):
    """What the jobs need of a served model (the serving layer's ``ModelHandle``)."""

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


class Execution:
    """Runs the jobs this instance (``owner``) claimed, each in its own task.

    Outcomes and progress go to ``store`` (``feeds`` are told of each write); binary
    prediction results to ``results``; each training's start and end are told to
    ``hooks``, in order. ``on_end(model name, kind)`` is called when a job's task ends
    (its worker is free again). A job's outcome is written until the database takes it:
    while the database is away, it waits in memory and the write is retried with backoff.
    """

    def __init__(
        self,
        store: JobStore,
        feeds: JobFeeds,
        results: ResultFiles,
        hooks: Sequence[TrainingHook],
        owner: str,
        on_end: Callable[[str, str], None],
    ) -> None:
        self.store = store
        self.feeds = feeds
        self.results = results
        self.hooks = tuple(hooks)
        self.owner = owner
        self._on_end = on_end
        self.write = RetriedWrites()
        #: The jobs running here: uuid -> (model, task).
        self.running: dict[str, tuple[Servable, asyncio.Task[None]]] = {}
        #: Jobs whose outcome is known and being written (their plugin call has ended).
        self._recording: set[str] = set()
        self._kinds: dict[str, str] = {}  # the kind of each job running here
        #: Running jobs this instance is stopping because they were cancelled.
        self._cancelled: set[str] = set()
        #: Jobs whose end could not be recorded before the server stopped.
        self.abandoned = 0
        #: Jobs :meth:`close` recorded as interrupted, per kind (``train``, ``predict``).
        self.interrupted: collections.Counter[str] = collections.Counter()

    def begin(self, model: Servable, job: Job) -> None:
        """Start running ``job`` (claimed: ``running``, owned by this instance)."""
        task = asyncio.create_task(self._run(model, job))
        task.add_done_callback(_log_task_failure)
        self.running[job.uuid] = (model, task)
        self._kinds[job.uuid] = job.kind

    async def stop(self, uuid: str) -> None:
        """Stop cancelled job ``uuid`` running here: kill its worker (or cancel its task)."""
        self._cancelled.add(uuid)
        model, task = self.running[uuid]
        if not await model.kill(uuid):
            task.cancel()

    async def watch_cancels(self, interval: float) -> None:
        """Every ``interval`` seconds, stop the jobs running here that any instance cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                for uuid in await self.store.cancelled_among(list(self.running)):
                    if uuid in self.running:
                        await self.stop(uuid)
            except DatabaseUnavailable:
                pass
            except Exception:  # noqa: BLE001
                LOG.exception("cannot check for cancelled jobs")

    async def close(self) -> None:
        """Jobs running here become ``error`` (interrupted). Outcomes still waiting for the
        database get :data:`CLOSE_GRACE` seconds; a job whose outcome cannot be written
        stays ``running``, owned by this instance, and counts in :attr:`abandoned`.
        """
        self.write.give_up()
        for uuid, (_, task) in list(self.running.items()):
            if uuid in self._recording:
                continue  # its outcome is being written: let it land
            try:
                interrupted = await self.write(
                    f"the interruption of job {uuid}",
                    functools.partial(self.store.finish, uuid, ERROR, message=INTERRUPTED),
                )
                if interrupted:
                    self.interrupted[self._kinds.get(uuid, "job")] += 1
            except DatabaseUnavailable:
                self.abandoned += 1
            task.cancel()
        tasks = [task for _, task in self.running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_GRACE + 1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, model: Servable, job: Job) -> None:
        training = await self._start_training(model, job) if job.kind == TRAIN else None
        progress = ProgressBuffer(
            self.store, job.uuid, self.feeds.changed, training.reported if training is not None else None
        )
        if training is not None:
            training.metrics = progress.metrics
        try:
            try:
                outcome = await self._call(model, job, progress, training)
            except DeepaasLikeError as error:
                self._log_failure(job, model.name, error.message)
                outcome = {"status": ERROR, "message": error.message}
            except asyncio.CancelledError:
                await self._task_cancelled(model, job, training)
                raise
            except Exception as error:  # noqa: BLE001 - recorded on the job; the server keeps serving
                self._log_failure(job, model.name, f"{type(error).__name__}: {error}", error)
                outcome = {"status": ERROR, "message": f"{type(error).__name__}: {error}"}
            # The plugin call has ended: from here on the outcome is only written, and a
            # stopping server lets that write land (see close()).
            self._recording.add(job.uuid)
            await self._last_progress(job, progress)
            if training is not None:
                outcome = await self._end_training(training, outcome)
            ended = await self._end(job, outcome.pop("status"), **outcome)
            if not ended and outcome.get("result_file"):
                self.results.remove(job.uuid)  # the job had ended meanwhile (cancelled)
            if not ended and training is not None:
                for hook in self.hooks:
                    await hook.discarded(training)
        except DatabaseUnavailable:
            self.abandoned += 1  # close() gave up; logged by the write. Reported interrupted later.
        finally:
            progress.close()
            self._recording.discard(job.uuid)
            self._cancelled.discard(job.uuid)
            self.running.pop(job.uuid, None)
            self._kinds.pop(job.uuid, None)
            remove_uploads(job.upload_dir)
            self._on_end(model.name, job.kind)

    async def _call(
        self, model: Servable, job: Job, progress: ProgressBuffer, training: Training | None
    ) -> dict[str, Any]:
        """Call the plugin for ``job``: its outcome, as :meth:`JobStore.finish` takes it."""
        kwargs = decode_kwargs(job.kwargs, job.files)
        if training is not None:
            output = await model.train(kwargs, job_id=job.uuid, on_progress=progress.add, save_to=training.save_to)
            return {"status": DONE, "output": output}
        prediction = await model.predict(kwargs, job_id=job.uuid, on_progress=progress.add)
        return await self._prediction_outcome(job, prediction)

    async def _last_progress(self, job: Job, progress: ProgressBuffer) -> None:
        """Write what ``job`` reported last: it lands before the job reads as done."""
        progress.close()
        try:
            await self.write(f"the progress of job {job.uuid}", progress.flush)
        except DatabaseUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - progress is dropped, the outcome is not
            LOG.error("the progress of job %s could not be stored: %s", job.uuid, error_text(error))

    async def _start_training(self, model: Servable, job: Job) -> Training:
        """Tell the hooks that training ``job`` starts; record its MLflow run on the job."""
        training = Training(model.name, model.makes_versions, job, self.write)
        for hook in self.hooks:
            await hook.started(training)
        if training.run_id is not None:
            try:
                await self.store.annotate(job.uuid, training.run_id)
            except Exception as error:  # noqa: BLE001 - the run id is also in the job's end
                LOG.warning("cannot record the MLflow run of job %s yet: %s", job.uuid, error_text(error))
        return training

    async def _end_training(self, training: Training, outcome: dict[str, Any]) -> dict[str, Any]:
        """Tell the hooks, in order, how the training ended; a hook that fails makes the
        outcome an error (its database writes wait for the database, as the job's do).
        """
        for hook in self.hooks:
            try:
                await hook.ended(training, outcome)
            except DatabaseUnavailable:
                raise
            except Exception as error:  # noqa: BLE001 - recorded on the job, as a failing training
                reason = error.message if isinstance(error, DeepaasLikeError) else f"{type(error).__name__}: {error}"
                self._log_failure(training.job, training.model, reason, error)
                outcome = {"status": ERROR, "message": reason}
        return outcome

    async def _task_cancelled(self, model: Servable, job: Job, training: Training | None) -> None:
        """Record the end of ``job`` whose task was cancelled: by a DELETE whose worker could
        not be killed (cancelled), or by :meth:`close` (interrupted).
        """
        self._recording.add(job.uuid)
        ending = (ERROR, INTERRUPTED) if self.write.give_up_at is not None else (CANCELLED, CANCELLED_BY_USER)
        if ending[0] == CANCELLED:
            self._log_failure(job, model.name, "its task was cancelled")
        if training is not None:
            for hook in self.hooks:
                await asyncio.shield(hook.ended(training, {"status": CANCELLED}))
        with contextlib.suppress(DatabaseUnavailable):
            await asyncio.shield(self._end(job, ending[0], message=ending[1]))

    def _log_failure(self, job: Job, model: str, reason: str, error: BaseException | None = None) -> None:
        """Log why ``job``'s call ended without a result: at INFO, as a cancel, for a job this
        instance was stopping because it was cancelled (the "killed by SIGKILL" of its worker
        is the cancel working), else at ERROR (with ``error``'s traceback when given).
        """
        if job.uuid in self._cancelled:
            LOG.info("%s job %s of model %s cancelled: its call was stopped", job.kind, job.uuid, model)
        else:
            LOG.error("%s job %s of model %s failed: %s", job.kind, job.uuid, model, reason, exc_info=error)

    async def _end(self, job: Job, status: str, **outcome: Any) -> bool:
        """Record the end of ``job`` (retried while the database is away). An outcome the
        database refuses for good (a value it cannot store) is recorded as an error.
        """
        what = f"the end of {job.kind} job {job.uuid}"
        try:
            ended = await self.write(what, lambda: self.store.finish(job.uuid, status, reclaim=self.owner, **outcome))
        except DatabaseUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - the database refused this outcome itself
            LOG.error("%s could not be stored: %s", what, error_text(error))
            message = f"the job's outcome could not be stored in the job database: {error_text(error)}"
            ended = await self.write(
                what, lambda: self.store.finish(job.uuid, ERROR, message=message, reclaim=self.owner)
            )
        self.feeds.changed(job.uuid)
        return ended

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


def _log_task_failure(task: asyncio.Task[Any]) -> None:
    # A job task never raises but to be cancelled; should one, say so now rather than as
    # asyncio's "Task exception was never retrieved" at exit.
    if not task.cancelled() and task.exception() is not None:
        LOG.error("a job task failed", exc_info=task.exception())
