"""Persistent worker processes (spawn context), one call at a time each.

A worker imports its plugin, calls ``warm()`` once, sends the plugin's description, then
answers ``(hook, kwargs)`` messages over a pipe until it reads ``None`` or the pipe closes.
Files travel as paths, never as contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

from deepaas_like import progress
from deepaas_like.exceptions import ModelUnavailable, PluginLoadError, WorkerDied
from deepaas_like.model.plugin import ModelDescription, Plugin
from deepaas_like.workers.base import ProgressCallback, WorkerPool, unwrap

LOG = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")


def serve(connection: Connection, name: str, namespace: str, warm: bool, env: dict[str, str]) -> None:
    """Worker process main: load, warm, describe, then answer calls until told to stop."""
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    try:
        plugin = Plugin.load(name, namespace)
        if warm:
            plugin.warm()
        progress.install(lambda fraction, message: connection.send(("progress", fraction, message)))
        connection.send(("ready", plugin.describe()))
    except BaseException as error:  # noqa: BLE001 - any failure here is reported, then we exit
        connection.send(("failed", f"{type(error).__name__}: {error}", traceback.format_exc()))
        return
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message is None:
            return
        hook, kwargs = message
        connection.send(plugin.outcome(hook, kwargs))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, name: str, namespace: str, warm: bool, env: dict[str, str]) -> None:
        self.connection, child = _SPAWN.Pipe()
        self.process = _SPAWN.Process(
            target=serve, args=(child, name, namespace, warm, env), name=f"worker-{name}", daemon=True
        )
        self.process.start()
        child.close()  # so that the worker's death shows as EOF on our end

    async def receive(self) -> Any:
        """Wait for the next message without blocking the event loop.

        Raises :class:`WorkerDied` when the process exits first.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        fd = self.connection.fileno()

        def readable() -> None:
            loop.remove_reader(fd)
            if future.done():
                return
            try:
                future.set_result(self.connection.recv())
            except (EOFError, OSError):
                future.set_exception(WorkerDied(self._death()))

        loop.add_reader(fd, readable)
        try:
            return await future
        finally:
            loop.remove_reader(fd)

    def _death(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"worker process {self.process.pid} was killed by {signal.Signals(-code).name}"
        return f"worker process {self.process.pid} exited with code {code}"

    @property
    def alive(self) -> bool:
        return self.process.is_alive() and not self.connection.closed

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.send(None)
        self.process.join(timeout=5)
        self.kill()
        self.process.join(timeout=5)
        self.connection.close()


class ProcessWorkerPool(WorkerPool):
    """``size`` warmed worker processes of one model; GPUs assigned round-robin.

    ``gpus`` are device ids exported to each worker as ``CUDA_VISIBLE_DEVICES``.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        size: int = 1,
        warm: bool = True,
        gpus: list[str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, not {size}")
        self.name = name
        self.namespace = namespace
        self.size = size
        self.warm = warm
        self.gpus = list(gpus or [])
        self._spawned = 0
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._running: dict[str, _Worker] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unavailable: str | None = None

    async def start(self) -> ModelDescription:
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.size)), return_exceptions=True)
        failure = next((w for w in workers if isinstance(w, BaseException)), None)
        if failure is not None:
            for worker in workers:
                if isinstance(worker, _Worker):
                    worker.close()
            raise failure
        for worker in workers:
            self._idle.put_nowait(worker)
        return self.description

    async def _spawn(self) -> _Worker:
        env = {}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[self._spawned % len(self.gpus)]
        self._spawned += 1
        worker = _Worker(self.name, self.namespace, self.warm, env)
        try:
            message = await worker.receive()
        except WorkerDied as error:
            worker.close()
            raise PluginLoadError(f"model {self.name!r}: {error.message} while loading") from error
        if message[0] != "ready":
            worker.close()
            raise PluginLoadError(f"model {self.name!r} failed to start: {message[1]}")
        self.description = message[1]
        self._workers.add(worker)
        return worker

    async def run(
        self, hook: str, kwargs: dict[str, Any], job_id: str | None = None, on_progress: ProgressCallback | None = None
    ) -> Any:
        if self._unavailable is not None and not self._workers:
            raise ModelUnavailable(self._unavailable)
        worker = await self._idle.get()
        # The call owns the worker until it answers, even if our caller goes away.
        call = asyncio.create_task(self._call(worker, hook, kwargs, job_id, on_progress))
        return await asyncio.shield(call)

    async def _call(
        self, worker: _Worker, hook: str, kwargs: dict[str, Any], job_id: str | None, on_progress: ProgressCallback | None
    ) -> Any:
        if job_id is not None:
            self._running[job_id] = worker
        try:
            worker.connection.send((hook, kwargs))
            reply = await worker.receive()
            while reply[0] == "progress":
                if on_progress is not None:
                    on_progress(reply[1], reply[2])
                reply = await worker.receive()
        except (OSError, WorkerDied) as error:
            raise error if isinstance(error, WorkerDied) else WorkerDied(str(error)) from error
        finally:
            if job_id is not None:
                self._running.pop(job_id, None)
            self._release(worker)
        return unwrap(reply)

    def _release(self, worker: _Worker) -> None:
        if worker.alive:
            self._idle.put_nowait(worker)
            return
        self._workers.discard(worker)
        worker.close()
        task = asyncio.create_task(self._replace())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace(self) -> None:
        try:
            self._idle.put_nowait(await self._spawn())
            self._unavailable = None
        except Exception as error:  # noqa: BLE001 - reported through ModelUnavailable
            LOG.error("model %s: cannot replace a worker: %s", self.name, error)
            self._unavailable = f"model {self.name!r} has no worker: {error}"

    async def kill(self, job_id: str) -> bool:
        worker = self._running.get(job_id)
        if worker is None:
            return False
        worker.kill()
        return True

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, w.close) for w in list(self._workers)))
        self._workers.clear()
