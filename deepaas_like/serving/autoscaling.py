"""Autoscaling by queue length: a model's predict workers between a minimum and a maximum.

While requests keep waiting for a worker (``queued() > 0`` at every look) for ``up_delay``
seconds, the pool gains one worker; while a worker keeps idling and nothing waits for
``down_delay`` seconds, it loses one. One step at a time, each waiting for the previous one
to finish (a new worker is warmed first), so that a burst does not start every worker at
once. The executor places the workers (local processes, or Ray actors anywhere in a
cluster); this module only decides how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable

from deepaas_like.exceptions import DeepaasLikeError
from deepaas_like.workers.base import WorkerPool

__all__ = ["Autoscaler", "Autoscaling", "TICK"]

LOG = logging.getLogger(__name__)
#: Seconds between looks at the queue.
TICK = 0.1


@dataclasses.dataclass(frozen=True)
class Autoscaling:
    """Between ``minimum`` and ``maximum`` workers; delays in seconds (see the module's doc)."""

    minimum: int
    maximum: int
    up_delay: float
    down_delay: float


class Autoscaler:
    """Resizes ``pool`` as :class:`Autoscaling` says, reading ``queued()``: the requests
    that wait for a worker. ``on_resize`` is called after each change.
    """

    def __init__(
        self,
        pool: WorkerPool,
        queued: Callable[[], int],
        autoscaling: Autoscaling,
        on_resize: Callable[[], None] | None = None,
        name: str = "",
    ) -> None:
        self.pool = pool
        self.queued = queued
        self.autoscaling = autoscaling
        self.on_resize = on_resize
        self.name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wanted(self, waiting_for: float, idle_for: float) -> int:
        """The number of workers the pool should have, given for how long (seconds)
        requests have kept waiting and a worker has kept idling.
        """
        size, settings = self.pool.size, self.autoscaling
        if waiting_for >= settings.up_delay and size < settings.maximum:
            return size + 1
        if idle_for >= settings.down_delay and size > settings.minimum:
            return size - 1
        return size

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        waiting_since: float | None = None
        idle_since: float | None = None
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            waiting = self.queued() > 0
            idle = not waiting and self.pool.busy_workers < self.pool.live_workers
            waiting_since = (waiting_since or now) if waiting else None
            idle_since = (idle_since or now) if idle else None
            size = self.pool.size
            wanted = self.wanted(
                now - waiting_since if waiting_since is not None else 0.0,
                now - idle_since if idle_since is not None else 0.0,
            )
            if wanted == size:
                continue
            LOG.info(
                "model %s: %s to %d worker(s)", self.name, "scaling up" if wanted > size else "scaling down", wanted
            )
            try:
                await self.pool.resize(wanted)
            except DeepaasLikeError as error:
                LOG.error("model %s: scaling to %d worker(s) failed: %s", self.name, wanted, error.message)
                self.pool.size = size
                await asyncio.sleep(self.autoscaling.up_delay)
            if self.on_resize is not None:
                self.on_resize()
            waiting_since = idle_since = None
