"""The bookkeeping every executor's pool shares: warmed workers that each run one call at a
time and hold up to ``depth`` calls (the running one and those sent behind it: pipelining);
calls that wait, in order, for room on a worker (up to a bound); dead workers replaced, with
up to ``max_start_failures`` tries in a row before the model is unavailable; resizing; a
cancel that kills the worker running a job.

An executor says how to start, call, kill and close one of its workers
(:class:`QueuedPool`'s four abstract methods); its workers have ``alive`` and ``calls``.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import logging
from typing import Any, Generic, Protocol, TypeVar

from deepaas_like.exceptions import ModelUnavailable, PluginLoadError, QueueFull
from deepaas_like.model import deepaas_compat
from deepaas_like.model.plugin import ModelDescription
from deepaas_like.results import FileResult
from deepaas_like.workers.base import ProgressCallback, WorkerPool, note
from deepaas_like.workers.protocol import BatchResult, Outcome, Result

__all__ = ["TIMED_HOOKS", "CallNotDelivered", "QueuedPool", "Worker", "discard", "discard_result"]

LOG = logging.getLogger(__name__)
#: The hooks a model's timeout bounds (``--predict-timeout``), and the only ones that may wait
#: on a worker behind another call (a training holds its worker alone).
TIMED_HOOKS = ("predict", "predict_batch")


class Worker(Protocol):
    #: The calls it holds, each from the moment it is taken until it is released; a call
    #: that may not share its worker holds all ``depth`` of them.
    calls: int
    #: When it was last taken, in the pool's count of takes (0: never).
    taken: int

    @property
    def alive(self) -> bool:
        """Not (known to be) dead."""


W = TypeVar("W", bound=Worker)


class CallNotDelivered(Exception):
    """The worker was gone before it received the call: plugin code never saw it, so it
    goes to another worker.
    """


class QueuedPool(WorkerPool, Generic[W]):
    """``size`` workers of model ``name``. At most ``max_queue`` calls wait for a worker
    (0: no bound); more raise :class:`QueueFull`. A worker that fails to start
    ``max_start_failures`` times in a row leaves the model unavailable rather than
    restarting in a tight loop.

    A worker holds up to ``depth`` predictions: one runs, the others are already sent and
    start the moment it ends, so the worker never waits for the server between calls. A
    prediction goes to the worker holding the fewest calls (of those, the one taken last: its
    memory is the warmest, and under light load the others stay idle, ready to be retired),
    and a second one is queued on a worker only while every worker is busy; a training, and
    any other hook, takes an idle worker alone. The calls queued behind one that fails by
    killing its worker (a crash, a timeout, a cancel) were never seen by plugin code: they go
    to another worker.
    """

    #: What :meth:`run` raises while the model is unavailable.
    unavailable_error: type[ModelUnavailable] = ModelUnavailable

    def __init__(
        self, name: str, size: int = 1, max_queue: int = 0, max_start_failures: int = 3, depth: int = 1
    ) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, not {size}")
        if depth < 1:
            raise ValueError(f"a worker holds at least one call, not {depth}")
        self.name = name
        self.size = size
        self.depth = depth
        self.max_queue = max_queue
        self.max_start_failures = max_start_failures
        self.starting = 0
        self.waiting = 0
        self.restarts = 0
        self.unavailable: str | None = None
        self.stopping = False
        self.workers: set[W] = set()  # warmed, not retired
        # Calls waiting for room on a worker, in order; the first is woken when there may be.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._takes = 0
        self._running: dict[str, W] = {}
        self._refills: set[asyncio.Task[None]] = set()  # replacing dead workers
        self._leaving: set[asyncio.Task[None]] = set()  # surplus workers closing
        self._adding = 0  # workers resize() is starting

    # What an executor provides.

    @abc.abstractmethod
    async def start_worker(self) -> W:
        """A new worker, warmed, its :attr:`description` set. Raises ``PluginLoadError``."""

    @abc.abstractmethod
    async def call(
        self,
        worker: W,
        hook: str,
        kwargs: dict[str, Any],
        on_progress: ProgressCallback | None,
        save_to: str | None = None,
    ) -> Any:
        """Run one call on ``worker`` (taken for it); its result, or raise as :meth:`run`
        says. Raises :class:`CallNotDelivered` when ``worker`` never received it.
        """

    @abc.abstractmethod
    def kill_worker(self, worker: W) -> None:
        """Kill ``worker`` now (a call it runs fails); from now on it counts as dead."""

    @abc.abstractmethod
    async def close_worker(self, worker: W) -> None:
        """Make ``worker`` leave (ask, then kill) and wait until it has."""

    # The shared part.

    @property
    def live_workers(self) -> int:
        return sum(worker.alive for worker in self.workers)

    @property
    def busy_workers(self) -> int:
        return sum(worker.alive and worker.calls > 0 for worker in self.workers)

    async def start(self) -> ModelDescription:
        # A description may hold field classes of the plugin's own (``class ModelName(
        # fields.String)``): unpickling it here imports the module defining them, which may
        # import ``deepaas``.
        deepaas_compat.install()
        workers = await asyncio.gather(*(self.start_worker() for _ in range(self.size)), return_exceptions=True)
        failure = next((w for w in workers if isinstance(w, BaseException)), None)
        if failure is not None:
            await asyncio.gather(*(self.close_worker(w) for w in workers if not isinstance(w, BaseException)))
            self.workers.clear()
            raise failure
        return self.description

    async def run(
        self,
        hook: str,
        kwargs: dict[str, Any],
        job_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        save_to: str | None = None,
    ) -> Any:
        calls = 1 if hook in TIMED_HOOKS and job_id is None else self.depth
        if on_progress is not None and (self._waiters or self._room(calls) is None):
            busy = f"{self.busy_workers} of {self.live_workers} busy" if self.workers else "none started yet"
            note(on_progress, f"waiting for a free worker of model {self.name} ({busy})")
        while True:
            worker = await self._take(calls)
            note(
                on_progress,
                f"running {hook}" if worker.calls == calls else f"{hook} sent to a busy worker: it runs next",
            )
            # The call holds the worker until it answers, even if our caller goes away.
            call = asyncio.create_task(self._call_on(worker, calls, hook, kwargs, job_id, on_progress, save_to))
            try:
                return await asyncio.shield(call)
            except CallNotDelivered:
                continue
            except asyncio.CancelledError:
                call.add_done_callback(discard_result)
                raise

    async def _call_on(
        self,
        worker: W,
        calls: int,
        hook: str,
        kwargs: dict[str, Any],
        job_id: str | None,
        on_progress: ProgressCallback | None,
        save_to: str | None,
    ) -> Any:
        if job_id is not None:
            self._running[job_id] = worker
        try:
            return await self.call(worker, hook, kwargs, on_progress, save_to)
        finally:
            if job_id is not None:
                self._running.pop(job_id, None)
            self._release(worker, calls)

    def _room(self, calls: int) -> W | None:
        """The live worker holding the fewest calls that has room for ``calls`` more (of
        those, the one taken last), or None. A pool larger than its size queues nothing
        behind a running call, so that its busy workers come to an end and the surplus can
        leave.
        """
        depth = self.depth if len(self.workers) <= self.size else 1
        best: W | None = None
        for worker in self.workers:
            if (
                worker.alive
                and worker.calls + calls <= depth
                and (best is None or (worker.calls, -worker.taken) < (best.calls, -best.taken))
            ):
                best = worker
        return best

    async def _take(self, calls: int) -> W:
        """A live worker with room for ``calls`` more calls, holding them, after the calls
        that waited before this one; raises ``ModelUnavailable``, ``QueueFull``.
        """
        if self.unavailable is not None and not self.workers:
            raise self.unavailable_error(self.unavailable)
        worker = None if self._waiters else self._room(calls)
        if worker is None:
            if self.max_queue and self.waiting >= self.max_queue:
                raise QueueFull(f"model {self.name!r} has {self.waiting} requests waiting; try again shortly")
            worker = await self._wait(calls)
        worker.calls += calls
        self._takes += 1
        worker.taken = self._takes
        if self._waiters and self._room(1) is not None:
            self._wake()  # room is left for the next in line
        return worker

    async def _wait(self, calls: int) -> W:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        try:
            while True:
                await waiter  # raises when the model becomes unavailable
                worker = self._room(calls)
                if worker is not None:
                    return worker
                waiter = loop.create_future()  # still first in line
                self._waiters.appendleft(waiter)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # woken, but leaving: the next in line takes the turn
            elif waiter in self._waiters:
                self._waiters.remove(waiter)  # so that an empty line looks empty
            raise
        finally:
            self.waiting -= 1

    def _wake(self) -> None:
        """Let the first waiting call look for room."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # not cancelled
                waiter.set_result(None)
                return

    def _release(self, worker: W, calls: int) -> None:
        worker.calls -= calls
        if not worker.alive:
            self.retire(worker)
        elif not worker.calls and len(self.workers) > self.size and not self.stopping:
            self._remove(worker)  # the pool was made smaller while it was busy
        self._wake()

    def _remove(self, worker: W) -> None:
        self.workers.discard(worker)
        task = asyncio.create_task(self.close_worker(worker))
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    def died_idle(self, worker: W, what: str) -> None:
        """``worker`` (``what`` says which) died between calls: it is replaced. (A call that
        holds a worker sees its death itself, then releases it.)
        """
        if not worker.calls and worker in self.workers and not self.stopping:
            LOG.warning("model %s: %s died while idle; replacing it", self.name, what)
            self.retire(worker)

    def retire(self, worker: W) -> None:
        """Replace a dead worker (once, however many times it is reported)."""
        if worker not in self.workers or self.stopping:
            return
        self.workers.discard(worker)
        self._refill(worker)

    def _refill(self, dead: W | None = None) -> None:
        task = asyncio.create_task(self._replace(dead))
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _replace(self, dead: W | None) -> None:
        if dead is not None:
            await self.close_worker(dead)
        if len(self.workers) + len(self._refills) - 1 + self._adding >= self.size:
            return  # the pool was made smaller meanwhile
        self.restarts += dead is not None
        reason = ""
        for attempt in range(1, self.max_start_failures + 1):
            try:
                await self.start_worker()
                self.unavailable = None
                self._wake()
                return
            except ModelUnavailable:
                return  # the executor cannot start workers now, and says when it can again
            except PluginLoadError as error:
                LOG.error(
                    "model %s: replacing a worker failed (%d of %d): %s",
                    self.name,
                    attempt,
                    self.max_start_failures,
                    error,
                )
                reason = error.message
                if attempt < self.max_start_failures:
                    await asyncio.sleep(0.5 * 2**attempt)
        self.unavailable_error = ModelUnavailable
        self.unavailable = (
            f"model {self.name!r} is unavailable: its worker failed to start {self.max_start_failures} times: {reason}"
        )
        if not self.workers:
            self.wake_waiting()

    def wake_waiting(self) -> None:
        """The calls waiting for a worker fail now instead of waiting forever."""
        error = self.unavailable_error(self.unavailable or f"model {self.name!r} has no worker")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    async def resize(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, not {size}")
        self.size = size
        missing = size - len(self.workers) - len(self._refills) - self._adding
        for worker in list(self.workers):
            if missing < 0 and worker.alive and not worker.calls:
                self._remove(worker)
                missing += 1
        if missing <= 0:
            return
        self._adding += missing
        try:
            workers = await asyncio.gather(*(self.start_worker() for _ in range(missing)), return_exceptions=True)
        finally:
            self._adding -= missing
        self._wake()
        failure = next((w for w in workers if isinstance(w, BaseException)), None)
        if failure is not None:
            raise failure

    async def kill(self, job_id: str) -> bool:
        worker = self._running.get(job_id)
        if worker is None:
            return False
        self.kill_worker(worker)
        return True

    async def stop(self) -> None:
        """Stop every worker: idle ones are asked to leave, busy ones are killed (the server
        is going away; their calls cannot finish).
        """
        self.stopping = True
        self.unavailable = f"model {self.name!r} is stopping"
        self.wake_waiting()
        for task in list(self._refills):
            task.cancel()
        await asyncio.gather(*self._refills, *self._leaving, return_exceptions=True)
        for worker in self.workers:
            if worker.calls:
                self.kill_worker(worker)
        await asyncio.gather(*(self.close_worker(w) for w in list(self.workers)))
        self.workers.clear()


def discard(outcome: Outcome | list[Outcome]) -> None:
    """Delete the temporary files of outcomes that will not be used."""
    for one in outcome if isinstance(outcome, list) else [outcome]:
        if isinstance(one, BatchResult):
            discard(one.outcomes)
        elif isinstance(one, Result) and isinstance(one.value, FileResult):
            one.value.discard()


def discard_result(call: asyncio.Task[Any]) -> None:
    """Delete the files of a result (or a batch's results) nobody waits for any more."""
    if not call.cancelled() and call.exception() is None:
        result = call.result()
        discard(result if isinstance(result, list) else Result(result))
