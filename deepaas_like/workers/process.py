"""Persistent worker processes (spawn context), one call at a time each.

A worker imports its plugin, calls ``warm()`` once, sends the plugin's description, then
answers ``(hook, kwargs, context)`` messages over a pipe until it reads ``None`` or the
pipe closes. Files travel as paths, never as contents. A worker that dies (segfault,
``os._exit``, the out-of-memory killer) or overruns its timeout fails only the call it
held, and a fresh, warmed worker takes its place.

Workers are not daemonic, so plugin code may start processes of its own (a TensorBoard
launcher, a torch ``DataLoader`` with ``num_workers``), as it can under DEEPaaS. Each
worker leads a process group of its own, so killing it (cancel, timeout, stop) takes its
children along, and it is killed by the kernel when the server dies, even by ``kill -9``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import traceback
import weakref
from multiprocessing.connection import Connection
from typing import Any

from deepaas_like import logs, progress
from deepaas_like.exceptions import ModelUnavailable, PluginLoadError, PredictTimeout, QueueFull, WorkerDied
from deepaas_like.model import deepaas_compat
from deepaas_like.model.plugin import ModelDescription, Plugin
from deepaas_like.workers.base import ProgressCallback, WorkerPool, unwrap

LOG = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")
_EOF = object()
_TIMED_HOOKS = ("predict", "predict_batch")


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """How worker processes are started. ``memory_limit_mb`` caps each worker's address
    space (RLIMIT_AS; 0: no cap): past it allocations fail inside the plugin. ``threads``
    sets the math libraries' thread pools (OpenMP, MKL, OpenBLAS: torch and numpy) in each
    worker (0: as the environment says).
    """

    warm: bool = True
    threads: int = 0
    gpus: tuple[str, ...] = ()
    memory_limit_mb: int = 0
    debug: bool = False
    log_json: bool = False


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with(server_pid: int) -> None:
    """Have the kernel SIGKILL this process when the server process dies (Linux's
    ``PR_SET_PDEATHSIG``; elsewhere a no-op), and lead a process group of our own.
    """
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server_pid:  # the server died before prctl took effect
        os._exit(1)


def serve(
    connection: Connection,
    name: str,
    namespace: str,
    options: WorkerOptions,
    env: dict[str, str],
    server_pid: int,
    start_method: str,
) -> None:
    """Worker process main: load, warm, describe, then answer calls until told to stop."""
    _die_with(server_pid)
    # A spawned process defaults to spawning its own children; plugin code gets the
    # platform's default instead (fork on Linux), as under DEEPaaS.
    multiprocessing.set_start_method(start_method, force=True)
    os.environ.update(env)
    if options.threads:
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[variable] = str(options.threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    logs.setup(options.debug, options.log_json)
    if options.memory_limit_mb:
        limit = options.memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        plugin = Plugin.load(name, namespace)
        if options.warm:
            plugin.warm()
        progress.install(lambda fraction, message: connection.send(("progress", fraction, message)))
        connection.send(("ready", plugin.describe()))
    except BaseException as error:  # noqa: BLE001 - any failure here is reported, then we exit
        with contextlib.suppress(OSError):
            connection.send(("failed", f"{type(error).__name__}: {error}", traceback.format_exc()))
        return
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        hook, kwargs, context = message
        token = logs.request_id.set(context.get("request_id", "-"))
        try:
            outcome = plugin.outcome(hook, kwargs)
        finally:
            logs.request_id.reset(token)
        try:
            connection.send(outcome)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            connection.send(("error", type(error).__name__, f"the result cannot be sent back: {error}", ""))
        except OSError:
            return  # the server went away


_LIVE: weakref.WeakSet[_Worker] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    # Runs before multiprocessing's own exit handler, which would wait for every
    # non-daemonic child: a server leaving without stopping its pools must not hang.
    for worker in list(_LIVE):
        worker.kill()


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, name: str, namespace: str, options: WorkerOptions, env: dict[str, str]) -> None:
        self.connection, child = _SPAWN.Pipe()
        # Not daemonic: plugin code may start processes of its own (see the module's doc).
        self.process = _SPAWN.Process(
            target=serve,
            args=(child, name, namespace, options, env, os.getpid(), multiprocessing.get_start_method()),
            name=f"worker-{name}",
            daemon=False,
        )
        self.process.start()
        _LIVE.add(self)
        child.close()  # so that the worker's death shows as EOF on our end
        self.exited = False
        # The pipe stays registered with the event loop for the worker's whole life (one
        # epoll registration, not two system calls per message); messages queue up here.
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.connection.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            self._inbox.put_nowait(self.connection.recv())
        except (EOFError, OSError):
            self.exited = True
            self._unregister()
            self._inbox.put_nowait(_EOF)

    def _unregister(self) -> None:
        if not self.connection.closed:
            self._loop.remove_reader(self.connection.fileno())

    async def receive(self, timeout: float | None = None) -> Any:
        """The next message, awaited without blocking the event loop.

        Raises :class:`WorkerDied` when the process exits first, ``TimeoutError`` after
        ``timeout`` seconds.
        """
        if timeout is None:
            message = await self._inbox.get()
        else:
            message = await asyncio.wait_for(self._inbox.get(), timeout)
        if message is _EOF:
            self._inbox.put_nowait(_EOF)  # every later receive sees the death too
            await asyncio.to_thread(self.process.join, 5)
            raise WorkerDied(self.death())
        return message

    def death(self) -> str:
        """How the process ended, for error messages."""
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            why = {
                "SIGKILL": " (killed: a cancel, a timeout, or the out-of-memory killer)",
                "SIGSEGV": " (a segmentation fault in plugin code)",
            }.get(name, "")
            return f"worker process {self.process.pid} was killed by {name}{why}"
        return f"worker process {self.process.pid} exited with code {code}"

    @property
    def alive(self) -> bool:
        return not self.exited and self.process.is_alive()

    def detach(self) -> None:
        """Stop watching the pipe (in the event loop's thread, before :meth:`close`)."""
        self._unregister()

    def kill(self) -> None:
        """SIGKILL the process and the processes it started; from now on it counts as
        dead, reaped or not.
        """
        self.exited = True
        if self.process.is_alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:  # not (yet) the leader of its group
                self.process.kill()

    def close(self) -> None:
        """Ask the worker to stop, kill it if it does not, reap it (blocking; call it in a
        thread, after :meth:`detach` in the event loop's thread).
        """
        if not self.exited:
            with contextlib.suppress(OSError):
                self.connection.send(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()
        self.process.join(timeout=5)
        self.connection.close()
        _LIVE.discard(self)


class ProcessWorkerPool(WorkerPool):
    """``size`` warmed worker processes of one model; GPUs assigned round-robin.

    ``options.gpus`` are device ids exported to each worker as ``CUDA_VISIBLE_DEVICES``.
    ``timeout`` (seconds) bounds each prediction; past it the worker is killed and
    replaced. At most ``max_queue`` calls wait for a worker (0: no bound); more raise
    :class:`QueueFull`. A worker that fails to start ``max_start_failures`` times in a row
    leaves the model unavailable rather than restarting in a tight loop.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        size: int = 1,
        options: WorkerOptions | None = None,
        timeout: float | None = None,
        max_queue: int = 0,
        max_start_failures: int = 3,
    ) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, not {size}")
        self.name = name
        self.namespace = namespace
        self.size = size
        self.options = options or WorkerOptions()
        self.timeout = timeout
        self.max_queue = max_queue
        self.max_start_failures = max_start_failures
        self.waiting = 0
        self.restarts = 0
        self.unavailable: str | None = None
        self._spawned = 0
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._running: dict[str, _Worker] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def live_workers(self) -> int:
        return sum(worker.alive for worker in self._workers)

    async def start(self) -> ModelDescription:
        # A description may hold field classes of the plugin's own (``class ModelName(
        # fields.String)``): unpickling it here imports the module defining them, which may
        # import ``deepaas``.
        deepaas_compat.install()
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.size)), return_exceptions=True)
        failure = next((w for w in workers if isinstance(w, BaseException)), None)
        if failure is not None:
            await asyncio.gather(*(_close(w) for w in workers if isinstance(w, _Worker)))
            self._workers.clear()
            raise failure
        for worker in workers:
            self._idle.put_nowait(worker)
        return self.description

    async def _spawn(self) -> _Worker:
        env = {}
        if self.options.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.options.gpus[self._spawned % len(self.options.gpus)]
        self._spawned += 1
        worker = _Worker(self.name, self.namespace, self.options, env)
        try:
            message = await worker.receive()
        except BaseException as error:
            await asyncio.shield(_close(worker))
            if isinstance(error, WorkerDied):
                raise PluginLoadError(f"model {self.name!r}: {error.message} while loading") from error
            raise
        if message[0] != "ready":
            await _close(worker)
            raise PluginLoadError(f"model {self.name!r} failed to start: {message[1]}")
        self.description = message[1]
        self._workers.add(worker)
        return worker

    async def run(
        self, hook: str, kwargs: dict[str, Any], job_id: str | None = None, on_progress: ProgressCallback | None = None
    ) -> Any:
        if self.unavailable is not None and not self._workers:
            raise ModelUnavailable(self.unavailable)
        if self.max_queue and self._idle.empty() and self.waiting >= self.max_queue:
            raise QueueFull(f"model {self.name!r} has {self.waiting} requests waiting; try again shortly")
        self.waiting += 1
        try:
            worker = await self._idle.get()
        finally:
            self.waiting -= 1
        if worker is None:  # woken because the model became unavailable
            raise ModelUnavailable(self.unavailable or f"model {self.name!r} has no worker")
        # The call owns the worker until it answers, even if our caller goes away.
        call = asyncio.create_task(self._call(worker, hook, kwargs, job_id, on_progress))
        return await asyncio.shield(call)

    async def _call(
        self, worker: _Worker, hook: str, kwargs: dict[str, Any], job_id: str | None, on_progress: ProgressCallback | None
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout if self.timeout and hook in _TIMED_HOOKS else None
        if job_id is not None:
            self._running[job_id] = worker
        try:
            worker.connection.send((hook, kwargs, {"request_id": logs.request_id.get()}))
            while True:
                reply = await worker.receive(None if deadline is None else max(deadline - loop.time(), 0))
                if reply[0] != "progress":
                    break
                if on_progress is not None:
                    on_progress(reply[1], reply[2])
        except TimeoutError:
            worker.kill()
            raise PredictTimeout(
                f"model {self.name!r} did not answer within {self.timeout:g} s; its worker was replaced"
            ) from None
        except OSError as error:
            worker.exited = True
            raise WorkerDied(f"worker process {worker.process.pid} is gone: {error}") from error
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
        task = asyncio.create_task(self._replace(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace(self, dead: _Worker) -> None:
        await _close(dead)
        self.restarts += 1
        for attempt in range(1, self.max_start_failures + 1):
            try:
                self._idle.put_nowait(await self._spawn())
                self.unavailable = None
                return
            except PluginLoadError as error:
                LOG.error("model %s: replacing a worker failed (%d of %d): %s", self.name, attempt, self.max_start_failures, error)
                reason = error.message
                if attempt < self.max_start_failures:
                    await asyncio.sleep(0.5 * 2**attempt)
        self.unavailable = f"model {self.name!r} is unavailable: its worker failed to start {self.max_start_failures} times: {reason}"
        if not self._workers:
            for _ in range(self.waiting):  # the waiting calls fail now instead of waiting forever
                self._idle.put_nowait(None)

    async def kill(self, job_id: str) -> bool:
        worker = self._running.get(job_id)
        if worker is None:
            return False
        worker.kill()
        return True

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(_close(w) for w in list(self._workers)))
        self._workers.clear()


async def _close(worker: _Worker) -> None:
    worker.detach()
    await asyncio.to_thread(worker.close)
