"""Following jobs as they change, for event streams: one reader per followed job, however
many clients follow it.

A job followed by a thousand Server-Sent Events clients is read from the database by one
task (every ``interval`` seconds, or at once when this instance wrote it), and each new
state is serialised once and handed to every client. Without this, each client polled the
database on its own, and a thousand of them kept the server's CPU busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from deepaas_like import json_text
from deepaas_like.database.tables import Job
from deepaas_like.exceptions import DatabaseUnavailable, JobNotFound
from deepaas_like.jobs.states import ACTIVE, JobView, view
from deepaas_like.jobs.store import JobStore

__all__ = ["Feed", "JobFeeds", "Render"]

#: Turns a job into the document its event streams send (the HTTP layer's wire format).
Render = Callable[[JobView], dict[str, Any]]

LOG = logging.getLogger(__name__)


class _Watch:
    """The latest state of one followed job, and who follows it."""

    def __init__(self, job: Job, render: Render) -> None:
        self.render = render
        self.model, self.kind, self.uuid = job.model, job.kind, job.uuid
        self.api_key_hash = job.api_key_hash
        self.document: dict[str, Any] = {}
        self.text = ""
        self.status = job.status
        self.version = 0
        self.closed = False  # the server is stopping: streams end without an "end" event
        self.followers = 0
        self.changed = asyncio.Event()  # replaced at each change; the old one is set
        self.poke = asyncio.Event()  # set when this instance wrote the job
        self.reader: asyncio.Task[None] | None = None
        self.update(job)

    @property
    def ended(self) -> bool:
        return self.status not in ACTIVE

    def update(self, job: Job) -> None:
        document = self.render(view(job))
        text = json_text.dumps(document)
        if text == self.text:  # the text: a NaN in a stored row never equals itself
            return
        self.document, self.text, self.status = document, text, job.status
        self.version += 1
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class Feed:
    """One client's view of a followed job: iterate it for ``(event, data)`` pairs, a
    ``job`` event with the job object (JSON text) at each change, then ``end`` with
    ``{"status": ...}`` once the job has ended. Use it as an async context manager.
    """

    def __init__(self, feeds: "JobFeeds", watch: _Watch) -> None:
        self._feeds = feeds
        self._watch = watch

    async def __aenter__(self) -> "Feed":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._feeds._unfollow(self._watch)

    async def __aiter__(self) -> AsyncIterator[tuple[str, str]]:
        watch, sent = self._watch, 0
        while True:
            changed = watch.changed  # taken before reading: a change from here on wakes us
            if watch.closed:
                return
            if watch.version != sent:
                sent = watch.version
                yield "job", watch.text
            if watch.ended:
                yield "end", json.dumps({"status": watch.status})
                return
            await changed.wait()


class JobFeeds:
    """Followed jobs of this instance. ``interval`` is in seconds (the job poll interval's
    half, as clients polled before), the longest a change made by another instance takes
    to reach followers; ``render`` makes the document a stream sends of a job.
    """

    def __init__(self, store: JobStore, interval: float, render: Render) -> None:
        self.store = store
        self.interval = interval
        self.render = render
        self._watches: dict[str, _Watch] = {}
        self._loading: dict[tuple[str, str, str], asyncio.Future[Job]] = {}
        self._closed = False

    async def follow(self, model: str, uuid: str, kind: str, visible_to: str | None = None) -> Feed:
        """Follow job ``uuid``. Raises ``JobNotFound`` (as :meth:`JobStore.get` does, also
        for a job of another API key than ``visible_to``) and ``DatabaseUnavailable``.
        """
        watch = self._watches.get(uuid)
        if watch is None:
            # Streams opened together for a job not yet followed wait for one read of it.
            key = (model, uuid, kind)
            loading = self._loading.get(key)
            if loading is None:
                loading = self._loading[key] = asyncio.ensure_future(self.store.get(model, uuid, kind))
                loading.add_done_callback(lambda done: self._loaded(key, done))
            job = await asyncio.shield(loading)
            watch = self._watches.get(uuid)
            if watch is None:
                watch = self._watches[uuid] = _Watch(job, self.render)
                if self._closed:
                    watch.close()
        if watch.model != model or watch.kind != kind or (visible_to is not None and watch.api_key_hash != visible_to):
            raise JobNotFound(f"no {kind} {uuid!r} for model {model!r}")
        watch.followers += 1
        if watch.reader is None and not watch.ended and not watch.closed:
            watch.reader = asyncio.create_task(self._read(watch))
        return Feed(self, watch)

    def _loaded(self, key: tuple[str, str, str], done: asyncio.Future[Job]) -> None:
        self._loading.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: every stream that waited may be gone

    def changed(self, uuid: str) -> None:
        """This instance wrote job ``uuid``: its followers get the change now."""
        watch = self._watches.get(uuid)
        if watch is not None:
            watch.poke.set()

    def close(self) -> None:
        """The server is stopping: every stream ends (clients reconnect elsewhere)."""
        self._closed = True
        for watch in self._watches.values():
            watch.close()

    def _unfollow(self, watch: _Watch) -> None:
        watch.followers -= 1
        if watch.followers <= 0 and self._watches.get(watch.uuid) is watch:
            del self._watches[watch.uuid]
            if watch.reader is not None:
                watch.reader.cancel()

    async def _read(self, watch: _Watch) -> None:
        while not watch.ended and not watch.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.poke.wait(), self.interval)
            watch.poke.clear()
            try:
                job = await self.store.get(watch.model, watch.uuid, watch.kind)
            except DatabaseUnavailable:
                continue  # followers keep the last state; the store logs the outage
            except JobNotFound:
                watch.close()  # deleted (retention) while followed
                return
            except Exception:  # noqa: BLE001 - a reader that dies would freeze its streams
                LOG.exception("cannot read job %s for its event streams", watch.uuid)
                continue
            watch.update(job)
