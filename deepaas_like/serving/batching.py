"""Dynamic batching: concurrent predictions of one model grouped into ``predict_batch`` calls.

A batch is formed only once a worker is free to take it, so requests that arrive while every
worker is busy wait together and leave as one batch. The first request of a batch waits at
most ``wait`` seconds for company; a batch holds at most ``max_size`` requests.

With several workers a batch also holds at most its share of the requests in flight (queued,
being batched or running): ``ceil(in flight / workers)``, in flight counted now or when the
previous batch left, whichever is more. Without that cap, the requests of a burst (or of a
closed loop of clients, whose requests come back together) fill one batch within the wait
while the other workers idle: 32 clients and 2 workers measured one worker doing 91% of the
work. With the cap they split over the workers, and a batch whose share is in need not wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

from deepaas_like.results import FileResult
from deepaas_like.workers import protocol
from deepaas_like.workers.base import WorkerPool

__all__ = ["Batcher"]


class Batcher:
    """Groups ``submit`` calls into batches run on ``pool``: as many at once as its live
    workers (which autoscaling changes) hold, ``pool.depth`` each (pipelining).

    ``sizes`` holds the sizes of the latest 1000 batches; ``on_batch`` is told each one
    (metrics).
    """

    def __init__(
        self,
        pool: WorkerPool,
        max_size: int,
        wait: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_size < 2:
            raise ValueError(f"a batch needs room for two requests, not {max_size}")
        self.pool = pool
        self.max_size = max_size
        self.wait = wait
        self.sizes: collections.deque[int] = collections.deque(maxlen=1000)  # bounded: servers run for weeks
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[Any]]] = asyncio.Queue()
        self._running = 0  # batches running
        self._in_flight = 0  # requests submitted and not answered yet
        self._in_flight_at_dispatch = 0  # ... when the latest batch left
        self._freed = asyncio.Event()  # a batch ended, or there may be more workers
        self._loop_task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()

    async def submit(self, kwargs: dict[str, Any]) -> Any:
        """Predict for one request as part of a batch; raises what ``predict`` would."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._form_batches())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((kwargs, future))
        self._in_flight += 1
        try:
            return await future
        finally:
            self._in_flight -= 1

    @property
    def queued(self) -> int:
        """Requests waiting for a batch to take them."""
        return self._queue.qsize()

    def wake(self) -> None:
        """The pool may have more workers: form batches for them."""
        self._freed.set()

    async def _free(self) -> None:
        """Wait until a worker can take one more batch, and count it as taken."""
        while self._running >= max(1, self.pool.live_workers) * self.pool.depth:
            self._freed.clear()
            await self._freed.wait()
        self._running += 1

    def _release(self) -> None:
        self._running -= 1
        self._freed.set()

    def _share(self) -> int:
        """Most requests the batch being formed may take (see the module's docstring)."""
        workers = self.pool.live_workers
        if workers < 2:
            return self.max_size
        in_flight = max(self._in_flight, self._in_flight_at_dispatch)
        return max(1, min(self.max_size, math.ceil(in_flight / workers)))

    async def _form_batches(self) -> None:
        while True:
            await self._free()
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.wait
            while len(batch) < self._share():
                remaining = deadline - time.monotonic()
                if self._queue.empty() and remaining <= 0:
                    break
                try:
                    batch.append(
                        self._queue.get_nowait()
                        if not self._queue.empty()
                        else await asyncio.wait_for(self._queue.get(), remaining)
                    )
                except TimeoutError:
                    break
            batch = [(kwargs, future) for kwargs, future in batch if not future.done()]
            if not batch:
                self._release()
                continue
            self._in_flight_at_dispatch = self._in_flight
            task = asyncio.create_task(self._run(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run(self, batch: list[tuple[dict[str, Any], asyncio.Future[Any]]]) -> None:
        self.sizes.append(len(batch))
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            outcomes = await self.pool.run("predict_batch", {"batch": [kwargs for kwargs, _ in batch]})
        except Exception as error:  # noqa: BLE001 - the worker died: every request of the batch fails
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        finally:
            self._release()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its request went away
                if isinstance(outcome, protocol.Result) and isinstance(outcome.value, FileResult):
                    outcome.value.discard()
                continue
            try:
                future.set_result(protocol.value(outcome))
            except Exception as error:  # noqa: BLE001 - this request's own failure
                future.set_exception(error)

    async def close(self) -> None:
        tasks = [t for t in (self._loop_task, *self._batches) if t is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
