"""What a running job writes, and how: its outcome written until the database takes it
(:class:`RetriedWrites`), its progress buffered and written at most every 0.2 s
(:class:`ProgressBuffer`): an event per message and per report of metrics (:func:`event`),
the server's own messages (a worker starting, a call waiting) among them.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from deepaas_like.database import error_text
from deepaas_like.exceptions import DatabaseUnavailable
from deepaas_like.jobs import metric_history
from deepaas_like.jobs.store import MAX_EVENTS, JobStore
from deepaas_like.workers.base import ServerNote

__all__ = ["CLOSE_GRACE", "RETRY_FIRST", "RETRY_MAX", "ProgressBuffer", "RetriedWrites", "event"]

LOG = logging.getLogger(__name__)
#: Pauses between tries of a job state write while the database is away: from the first,
#: doubling (with jitter) up to the last, in seconds.
RETRY_FIRST, RETRY_MAX = 0.05, 1.0
#: Seconds a stopping server keeps trying to record outcomes before it gives up on them
#: (those jobs are then reported interrupted, by this instance's next start or by another).
CLOSE_GRACE = 5.0
T = TypeVar("T")


class RetriedWrites:
    """Job state writes that wait out an absent database, until :meth:`give_up` is called
    (the server is stopping) and :data:`CLOSE_GRACE` seconds have passed.
    """

    def __init__(self) -> None:
        self.give_up_at: float | None = None  # set by give_up(): when retries stop

    def give_up(self) -> None:
        """Stop retrying :data:`CLOSE_GRACE` seconds from now."""
        self.give_up_at = time.monotonic() + CLOSE_GRACE

    async def __call__(self, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """Run a job state write until the database takes it: while it is away (stopped,
        unreachable, locked) the write is tried again with growing pauses. ``what`` names
        it in the log. Raises ``DatabaseUnavailable`` only once :meth:`give_up` has run out.
        """
        pause = RETRY_FIRST
        warned = False
        while True:
            try:
                result = await write()
            except DatabaseUnavailable as error:
                if self.give_up_at is not None and time.monotonic() > self.give_up_at:
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


def event(
    message: str | None,
    metrics: dict[str, float] | None = None,
    step: int | None = None,
    progress: float | None = None,
) -> dict[str, Any] | None:
    """The job event of one report, or None for a report of progress alone:
    ``{"time", "message"}``, with ``"metrics"`` and ``"step"`` for a report of metrics (its
    message, else one naming them: ``"step 3: loss=0.31 accuracy=0.9"``) and ``"source":
    "server"`` for a :class:`~deepaas_like.workers.base.ServerNote`, and ``"progress"`` (0..1)
    when the report gave one, so a burst keeps each step's fraction. Every report of metrics
    makes an event of its own, so per-step values survive a burst of reports.
    """
    if message is None and not metrics:
        return None
    if message is None:
        assert metrics
        message = f"step {step}: " + " ".join(f"{name}={value:.6g}" for name, value in metrics.items())
    made: dict[str, Any] = {"time": str(datetime.datetime.now()), "message": str(message)}
    if metrics:
        made["metrics"] = dict(metrics)
        made["step"] = step
    if isinstance(message, ServerNote):
        made["source"] = "server"
    if progress is not None:
        made["progress"] = progress
    return made


class ProgressBuffer:
    """Collects what a running job reports and writes it at most every 0.2 s, one write at
    a time (a late write must never overwrite a newer one). While the database is away,
    reports wait here (the latest :data:`MAX_EVENTS` messages, and every report of metrics
    by step, bounded as :mod:`~deepaas_like.jobs.metric_history` bounds it).
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
        # Every report of metrics since the last write, {metric: [[step, value], ...]}:
        # none is lost between two writes (bounded as the stored history is).
        self._history: metric_history.History = {}
        self._next_step = 0
        self._last: dict[str, Any] | None = None  # the latest event made
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
        """Take one report (the plugin's, or a :class:`~deepaas_like.workers.base.ServerNote`
        of the server's): see :func:`event` for the event it makes, if any.
        """
        if progress is not None:
            self._progress = progress
        if metrics:
            # Reports without a step are numbered 0, 1, 2, ... after the last step seen.
            step = self._next_step if step is None else step
            self._next_step = max(self._next_step, step + 1)
            self.metrics.update(metrics)
            self._new_metrics.update(metrics)
            metric_history.add(self._history, step, metrics)
            if self._on_metrics is not None:
                self._on_metrics(metrics, step)
        made = event(message, metrics, step if metrics else None, progress)
        if made is not None and not self._repeats(made):
            self._messages.append(made)
            self._last = made
            if len(self._messages) > MAX_EVENTS:  # a burst between two writes: the latest are kept
                del self._messages[:-MAX_EVENTS]
        if not self._closed and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_later())

    def _repeats(self, made: dict[str, Any]) -> bool:
        """Whether ``made`` says again what the previous event said (same message, metrics
        and step): a plugin reporting in a loop does not fill the job's events with copies."""
        last = self._last
        return last is not None and all(
            last.get(key) == made.get(key) for key in ("message", "metrics", "step", "source")
        )

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
            progress, messages, metrics, history = self._progress, self._messages, self._new_metrics, self._history
            self._progress, self._messages, self._new_metrics, self._history = None, [], {}, {}
            try:
                await self.store.report(self.uuid, progress, messages, metrics, history)
            except (DatabaseUnavailable, asyncio.CancelledError):
                self._messages = (messages + self._messages)[-MAX_EVENTS:]
                self._new_metrics = {**metrics, **self._new_metrics}
                self._history = metric_history.merge(history, self._history)
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
