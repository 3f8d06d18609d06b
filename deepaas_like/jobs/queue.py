"""The job queue: submission (with Idempotency-Key), and the claims that take pending jobs
from the database onto this instance's free workers, first in, first out per model.

Every instance on a shared database polls it, so a job posted to one instance may run on
another (``JobStore.claim`` takes a job with ``SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from deepaas_like.database.tables import Job
from deepaas_like.exceptions import DatabaseUnavailable, HookNotImplemented, IdempotencyKeyReused
from deepaas_like.jobs.execution import Execution, Servable
from deepaas_like.jobs.recording import event
from deepaas_like.jobs.result_files import remove_uploads
from deepaas_like.jobs.states import PENDING, JobView, view
from deepaas_like.jobs.store import IdempotencyScopeTaken, JobStore
from deepaas_like.model.args import UploadedFile, json_arguments
from deepaas_like.workers.base import ServerNote

__all__ = ["Queue"]

LOG = logging.getLogger(__name__)


class Queue:
    """Submits jobs of ``models`` and claims pending ones for ``execution``.

    ``capacity`` maps ``(model name, kind)`` to how many of its jobs run at once here; the
    queue is polled every ``poll_interval`` seconds, and at once when a worker frees up. An
    ``Idempotency-Key`` maps to its first job for ``idempotency_window`` seconds.
    """

    def __init__(
        self,
        store: JobStore,
        models: Mapping[str, Servable],
        execution: Execution,
        capacity: Mapping[tuple[str, str], int],
        poll_interval: float,
        idempotency_window: float,
    ) -> None:
        self.store = store
        self.models = models
        self.execution = execution
        self.capacity = dict(capacity)
        self.poll_interval = poll_interval
        self.idempotency_window = idempotency_window
        self._counts: dict[tuple[str, str], int] = {key: 0 for key in self.capacity}
        self._locks = {key: asyncio.Lock() for key in self.capacity}
        self._wake = asyncio.Event()

    def freed(self, model: str, kind: str) -> None:
        """A job of ``model`` and ``kind`` ended here: its worker takes the next one."""
        self._counts[(model, kind)] -= 1
        self._wake.set()

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
            remove_uploads(upload_dir)
            raise
        scope = fingerprint = None
        try:
            if idempotency_key is not None:
                scope = _digest([api_key_hash or "", model.name, kind, idempotency_key])
                fingerprint = _digest(_request_fingerprint(kwargs))
                first = await self._first_job(scope, fingerprint)
                if first is not None:
                    remove_uploads(upload_dir)
                    return view(first)
            job = await self.store.create(
                model.name, kind, json_arguments(kwargs), kwargs, upload_dir, api_key_hash, scope, fingerprint
            )
        except IdempotencyScopeTaken:
            # A twin request with the same key was recorded first: it is the first job.
            assert scope is not None and fingerprint is not None  # a scope is only taken with a key
            first = await self._first_job(scope, fingerprint)
            remove_uploads(upload_dir)
            if first is None:
                raise DatabaseUnavailable(
                    f"the job of Idempotency-Key {idempotency_key!r} is being recorded; try again"
                ) from None
            return view(first)
        except BaseException:
            remove_uploads(upload_dir)
            raise
        # Recorded: from here on a database hiccup must not fail the request (a client
        # would post the job again); the dispatcher starts it later.
        try:
            await self.fill(model.name, kind)
            job = await self.store.get(model.name, job.uuid)
            if job.status == PENDING and await self._queued(job):
                job = await self.store.get(model.name, job.uuid)
            return view(job)
        except DatabaseUnavailable:
            return view(job)

    async def _queued(self, job: Job) -> bool:
        """Say on ``job`` (left pending: no worker of its model and kind is free here) that
        it waits for one; whether that was recorded."""
        key = (job.model, job.kind)
        running = f"{self._counts[key]} of {self.capacity[key]}"
        message = ServerNote(f"queued: waiting for a free worker ({running} {job.kind} workers busy here)")
        made = event(message)
        assert made is not None
        return await self.store.note_pending(job.uuid, made)

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

    async def dispatch(self) -> None:
        """Forever: claim pending jobs for the workers that are free here."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            free = [key for key, capacity in self.capacity.items() if self._counts[key] < capacity]
            try:
                queues = await self.store.pending_queues(free)
            except DatabaseUnavailable:
                continue  # the database's policy logs when it goes and comes back
            except Exception:  # noqa: BLE001 - a database hiccup must not stop the queue
                LOG.exception("cannot look for pending jobs")
                continue
            for model_name, kind in free:
                if (model_name, kind) not in queues:
                    continue
                try:
                    await self.fill(model_name, kind)
                except DatabaseUnavailable:
                    pass  # logged by the database's policy, as above
                except Exception:  # noqa: BLE001 - as above
                    LOG.exception("cannot claim %s jobs of %s", kind, model_name)

    async def fill(self, model_name: str, kind: str) -> None:
        """Claim pending jobs of ``model_name`` and ``kind`` while it has free workers here."""
        key = (model_name, kind)
        async with self._locks[key]:
            while self._counts[key] < self.capacity[key]:
                job = await self.store.claim(model_name, kind, self.execution.owner)
                if job is None:
                    return
                self._counts[key] += 1
                self.execution.begin(self.models[model_name], job)


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
