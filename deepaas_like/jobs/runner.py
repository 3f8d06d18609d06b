"""Runs jobs (trainings and asynchronous predictions) from the database on this
instance's workers: first in, first out per model, as workers free up.

Every instance on a shared database polls it, so a job posted to one instance may run on
another, and a cancel recorded by any instance stops the job wherever it runs (within
``poll_interval`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import shutil

from pathlib import Path
from typing import Any

from deepaas_like.exceptions import DeepaasLikeError, HookNotImplemented
from deepaas_like.media import JSON, result_media_type
from deepaas_like.jobs.models import ACTIVE, CANCELLED, DONE, ERROR, PENDING, TRAIN, Job
from deepaas_like.jobs.store import INTERRUPTED, JobStore, decode_kwargs
from deepaas_like.model.args import json_arguments
from deepaas_like.model.plugin import FileResult
from deepaas_like.model.wrapper import ModelWrapper

LOG = logging.getLogger(__name__)
CANCELLED_BY_USER = "cancelled by a DELETE request"


class JobRunner:
    """Submits, runs, cancels and reads jobs of the ``models`` this instance serves.

    ``capacity`` maps ``(model name, kind)`` to how many of its jobs run at once here;
    ``retention`` (seconds, 0: keep forever) is how long finished jobs are kept.
    """

    def __init__(
        self,
        store: JobStore,
        models: dict[str, ModelWrapper],
        owner: str,
        capacity: dict[tuple[str, str], int],
        poll_interval: float = 0.5,
        retention: float = 0.0,
    ) -> None:
        self.store = store
        self.models = models
        self.owner = owner
        self.capacity = capacity
        self.poll_interval = poll_interval
        self.retention = retention
        self._running: dict[str, tuple[ModelWrapper, asyncio.Task[None]]] = {}
        self._counts: dict[tuple[str, str], int] = {key: 0 for key in capacity}
        self._locks = {key: asyncio.Lock() for key in capacity}
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Report this instance's interrupted jobs and start polling for work."""
        interrupted = await self.store.mark_interrupted(self.owner)
        if interrupted:
            LOG.warning("%d job(s) were running when %s last stopped: marked interrupted", interrupted, self.owner)
        self._loops = [asyncio.create_task(self._dispatch()), asyncio.create_task(self._watch_cancels())]
        if self.retention > 0:
            self._loops.append(asyncio.create_task(self._expire()))

    async def close(self) -> None:
        """Stop polling; jobs running here become ``error`` (interrupted), pending ones wait."""
        for task in self._loops:
            task.cancel()
        for uuid, (_, task) in list(self._running.items()):
            await self.store.finish(uuid, ERROR, message=INTERRUPTED)
            task.cancel()
        await asyncio.gather(*self._loops, *(task for _, task in self._running.values()), return_exceptions=True)

    async def submit(self, model: ModelWrapper, kind: str, kwargs: dict[str, Any], upload_dir: str | None) -> dict[str, Any]:
        """Record a ``pending`` job and start it at once if a worker is free here.

        ``upload_dir`` (the request's uploads) belongs to the job from now on and is
        deleted when it ends. Returns the job object.
        """
        if (model.train_schema if kind == TRAIN else model.predict_schema) is None:
            _remove(upload_dir)
            raise HookNotImplemented(f"model {model.name!r} does not implement {kind}()")
        job = await self.store.create(model.name, kind, json_arguments(kwargs), kwargs, upload_dir)
        await self._fill(model.name, kind)
        return (await self.store.get(model.name, job.uuid)).to_dict()

    async def get(self, model: str, uuid: str, kind: str) -> Job:
        """The job; raises ``JobNotFound``."""
        return await self.store.get(model, uuid, kind)

    async def counts(self) -> dict[tuple[str, str, str], int]:
        """Jobs in the database per (model, kind, status), for metrics."""
        return await self.store.counts()

    async def result(self, uuid: str) -> bytes | None:
        """The stored bytes of a finished binary prediction, or None."""
        return await self.store.result(uuid)

    async def list(self, model: str, kind: str, status: str | None = None, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Job objects of ``model``, newest first."""
        return [job.to_dict() for job in await self.store.list(model, kind, status, limit, offset)]

    async def cancel(self, model: ModelWrapper, uuid: str, kind: str) -> dict[str, Any]:
        """Cancel a pending or running job: it is marked ``cancelled`` and, if it runs here,
        its worker is killed (a fresh, warmed one replaces it); an instance running it
        elsewhere notices within ``poll_interval``. An ended job is returned unchanged.
        """
        job = await self.store.get(model.name, uuid, kind)
        if job.status in ACTIVE and await self.store.finish(uuid, CANCELLED, message=CANCELLED_BY_USER):
            if uuid in self._running:
                await self._stop_local(uuid)
            elif job.status == PENDING:
                _remove(job.upload_dir)
        return (await self.store.get(model.name, uuid, kind)).to_dict()

    async def _stop_local(self, uuid: str) -> None:
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
                self._running[job.uuid] = (self.models[model_name], task)

    async def _run(self, model: ModelWrapper, job: Job) -> None:
        progress = _ProgressBuffer(self.store, job.uuid)
        kwargs = decode_kwargs(job.kwargs)
        try:
            if job.kind == TRAIN:
                output = await model.train(kwargs, job_id=job.uuid, on_progress=progress.add)
                await progress.flush()  # the last progress lands before the job reads as done
                await self.store.finish(job.uuid, DONE, output=output)
            else:
                result = await model.predict(kwargs, job_id=job.uuid, on_progress=progress.add)
                await progress.flush()
                await self._finish_prediction(job, kwargs, result)
        except DeepaasLikeError as error:
            LOG.error("%s job %s of model %s failed: %s", job.kind, job.uuid, model.name, error.message)
            await self.store.finish(job.uuid, ERROR, message=error.message)
        except asyncio.CancelledError:
            await asyncio.shield(self.store.finish(job.uuid, CANCELLED, message=CANCELLED_BY_USER))
            raise
        except Exception as error:  # noqa: BLE001 - recorded on the job; the server keeps serving
            LOG.exception("%s job %s of %s failed", job.kind, job.uuid, model.name)
            await self.store.finish(job.uuid, ERROR, message=f"{type(error).__name__}: {error}")
        finally:
            progress.close()
            with contextlib.suppress(Exception):
                await asyncio.shield(progress.flush())
            self._running.pop(job.uuid, None)
            self._counts[(model.name, job.kind)] -= 1
            _remove(job.upload_dir)
            self._wake.set()

    async def _finish_prediction(self, job: Job, kwargs: dict[str, Any], result: Any) -> None:
        if isinstance(result, bytes):
            media_type = result_media_type(result, kwargs.get("accept"))
            await self.store.finish(job.uuid, DONE, media_type=media_type, data=result)
        elif isinstance(result, FileResult):
            try:
                media_type = result_media_type(result.path, kwargs.get("accept"), result.media_type)
                data = await asyncio.to_thread(Path(result.path).read_bytes)
            finally:
                result.discard()  # a worker's temporary file
            await self.store.finish(job.uuid, DONE, media_type=media_type, data=data)
        else:
            await self.store.finish(job.uuid, DONE, output=result, media_type=JSON)

    async def _dispatch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            for model_name, kind in self.capacity:
                try:
                    await self._fill(model_name, kind)
                except Exception:  # noqa: BLE001 - a database hiccup must not stop the queue
                    LOG.exception("cannot claim %s jobs of %s", kind, model_name)

    async def _watch_cancels(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                for uuid in await self.store.cancelled_among(list(self._running)):
                    if uuid in self._running:
                        await self._stop_local(uuid)
            except Exception:  # noqa: BLE001
                LOG.exception("cannot check for cancelled jobs")

    async def _expire(self) -> None:
        while True:
            cutoff = datetime.datetime.now() - datetime.timedelta(seconds=self.retention)
            try:
                removed = await self.store.delete_finished_before(cutoff)
                if removed:
                    LOG.info("removed %d job(s) finished before %s", removed, cutoff)
            except Exception:  # noqa: BLE001
                LOG.exception("cannot remove old jobs")
            await asyncio.sleep(min(max(self.retention / 10, 1.0), 60.0))


class _ProgressBuffer:
    """Collects what a running job reports and writes it at most every 0.2 s."""

    def __init__(self, store: JobStore, uuid: str) -> None:
        self.store = store
        self.uuid = uuid
        self._progress: float | None = None
        self._messages: list[dict[str, Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    def add(self, progress: float | None, message: str | None) -> None:
        if progress is not None:
            self._progress = progress
        if message is not None:
            self._messages.append({"time": str(datetime.datetime.now()), "message": message})
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(0.2)
        await self.flush()

    async def flush(self) -> None:
        if self._progress is None and not self._messages:
            return
        progress, messages = self._progress, self._messages
        self._progress, self._messages = None, []
        await self.store.report(self.uuid, progress, messages)

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()


def _remove(directory: str | None) -> None:
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


