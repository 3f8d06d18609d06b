"""Persistent worker processes (spawn context), one call at a time each.

A worker imports its plugin, calls ``warm()`` once, sends the plugin's description, then
answers :class:`~deepaas_like.workers.protocol.Call` messages over a pipe (in the protocol's
wire form) until it reads ``None`` or the pipe closes. Files travel as paths, never as
contents: a binary result larger than :data:`RESULT_FILE_THRESHOLD` is written to a file by
the worker and travels as its path.
A worker that dies (segfault, ``os._exit``, the out-of-memory killer) or overruns its
timeout fails only the call it held, and a fresh, warmed worker takes its place. So does a
worker that dies while idle (its pipe's end of file is watched, so this is noticed at
once), and one whose plugin raised ``MemoryError`` (its memory may stay exhausted).

Workers are not daemonic, so plugin code may start processes of its own (a TensorBoard
launcher, a torch ``DataLoader`` with ``num_workers``), as it can under DEEPaaS. Each
worker leads a process group of its own, so killing it (cancel, timeout, stop) takes its
children along. The kernel kills a worker when the server dies, even by ``kill -9``, and a
small reaper process then kills the rest of the worker's group, so that nothing plugin
code started outlives its server.
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
import resource
import signal
import sys
import tempfile
import traceback
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from deepaas_like import logs, progress
from deepaas_like.exceptions import ModelUnavailable, PluginLoadError, PredictTimeout, QueueFull, WorkerDied
from deepaas_like.model import deepaas_compat
from deepaas_like.model.plugin import ModelDescription
from deepaas_like.results import FileResult, not_json
from deepaas_like.workers import protocol
from deepaas_like.workers.base import ProgressCallback, WorkerPool
from deepaas_like.workers.execution import execute, out_of_memory, start_plugin
from deepaas_like.workers.protocol import (
    BatchResult,
    Call,
    Error,
    Failed,
    NotJSON,
    Outcome,
    Progress,
    Ready,
    Result,
    TooLarge,
)

LOG = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")
_EOF = object()
_TIMED_HOOKS = ("predict", "predict_batch")
#: Binary results larger than this (bytes) go from the worker to the server as a file: the
#: pipe would carry them whole, and the event loop would read and unpickle them at once.
RESULT_FILE_THRESHOLD = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """How worker processes are started. ``memory_limit_mb`` caps each worker's address
    space (RLIMIT_AS; 0: no cap): past it allocations fail inside the plugin, and a worker
    whose plugin raised ``MemoryError`` is replaced. ``threads`` sets the math libraries'
    thread pools (OpenMP, MKL, OpenBLAS: torch and numpy) in each worker (0: as the
    environment says).
    """

    warm: bool = True
    threads: int = 0
    gpus: tuple[str, ...] = ()
    memory_limit_mb: int = 0
    debug: bool = False
    log_json: bool = False
    #: Largest prediction a worker sends back, in bytes (0: any size); see ``--max-result-size``.
    max_result_size: int = 0
    #: Where workers write large binary results (None: the system's temporary directory).
    results_dir: str | None = None
    #: A model version's directory (URL) whose state each worker loads after warming (the
    #: plugin's ``load``): the workers then serve that version.
    load_from: str | None = None


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


# Run by the reaper (a fresh interpreter, see _start_reaper): wait for SIGTERM, which stays
# blocked across exec, then kill the process group it shares with its worker.
_REAPER = "import os, signal\nsignal.sigwait({signal.SIGTERM})\nos.killpg(0, signal.SIGKILL)\n"


def _start_reaper() -> None:
    """Start a process that SIGKILLs this worker's process group as soon as the worker ends,
    however it ends (``PR_SET_PDEATHSIG`` tells it), so that processes plugin code started
    (which the kernel does not kill with their parent) never outlive their worker.

    It is a fresh interpreter (a few MiB) rather than a fork of the worker, and holds none
    of the worker's files, so a dead worker's pipe reads as closed at once.
    """
    worker = os.getpid()
    try:
        pid = os.fork()  # the worker has no threads yet
    except OSError:
        return
    if pid:
        return
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != worker:  # the worker ended before prctl took effect
            os.killpg(0, signal.SIGKILL)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", _REAPER])
    finally:
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
    _start_reaper()
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
        plugin = start_plugin(name, namespace, options.warm, options.load_from)
        progress.install(lambda *report: connection.send(protocol.encode(Progress(*report))), track_calls=True)
        connection.send(protocol.encode(Ready(plugin.describe())))
    except BaseException as error:  # noqa: BLE001 - any failure here is reported, then we exit
        with contextlib.suppress(OSError):
            connection.send(protocol.encode(Failed(f"{type(error).__name__}: {error}", traceback.format_exc())))
        return
    results_dir = options.results_dir or tempfile.gettempdir()
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        call = protocol.decode(message)
        assert isinstance(call, Call), call
        token = logs.request_id.set(call.request_id)
        progress.begin_call()
        try:
            outcome = _as_sent(
                execute(plugin, call.hook, call.kwargs, options.max_result_size, call.save_to), results_dir
            )
        finally:
            logs.request_id.reset(token)
        with progress.ending_call():  # no report of this call can follow its answer
            if not _answer(connection, outcome, name):
                return


def _answer(connection: Connection, outcome: Outcome, model: str) -> bool:
    """Send a call's outcome; False when the server has gone away."""
    try:
        connection.send(protocol.encode(outcome))
    except OSError:
        return False
    except Exception as error:  # noqa: BLE001 - nothing was written: pickling comes first
        _discard(outcome)
        message = f"the result cannot be sent back: {type(error).__name__}: {error}"
        reply: Outcome = Error(type(error).__name__, message, "")
        too_deep = _too_deep(outcome, model) if isinstance(error, RecursionError) else None
        if too_deep is not None:
            reply = too_deep  # the rule every prediction follows
        else:
            LOG.error("%s", message)
        try:
            connection.send(protocol.encode(reply))
        except OSError:
            return False
    return True


def _too_deep(outcome: Outcome, model: str) -> Outcome | None:
    """``outcome`` with predictions too deeply nested to be pickled refused as not JSON."""
    if isinstance(outcome, BatchResult):
        return BatchResult([_too_deep(one, model) or one for one in outcome.outcomes])
    problem = not_json(outcome.value, model) if isinstance(outcome, Result) else None
    if problem is None:
        return None
    LOG.error("%s", problem)
    return NotJSON(problem)


def _as_sent(outcome: Outcome, directory: str) -> Outcome:
    """``outcome`` with binary results over :data:`RESULT_FILE_THRESHOLD` written to files
    in ``directory`` (temporary :class:`FileResult`); :class:`TooLarge` when there is no
    room for them.
    """
    if isinstance(outcome, BatchResult):
        return BatchResult([_as_sent(one, directory) for one in outcome.outcomes])
    if (
        not isinstance(outcome, Result)
        or not isinstance(outcome.value, bytes)
        or len(outcome.value) <= RESULT_FILE_THRESHOLD
    ):
        return outcome
    data = outcome.value
    path = None
    try:
        descriptor, path = tempfile.mkstemp(prefix="deepaas-like-result-", dir=directory)
        with open(descriptor, "wb") as file:
            file.write(data)
    except OSError as error:
        if path is not None:
            os.unlink(path)
        message = f"cannot store a result of {len(data)} bytes in {directory}: {error.strerror}"
        LOG.error("%s", message)
        return TooLarge(message)
    return Result(FileResult(path, temporary=True))


def _discard(outcome: Outcome | list[Outcome]) -> None:
    """Delete the temporary files of outcomes that will not be used."""
    for one in outcome if isinstance(outcome, list) else [outcome]:
        if isinstance(one, BatchResult):
            _discard(one.outcomes)
        elif isinstance(one, Result) and isinstance(one.value, FileResult):
            one.value.discard()


_LIVE: weakref.WeakSet[_Worker] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    # Runs before multiprocessing's own exit handler, which would wait for every
    # non-daemonic child: a server leaving without stopping its pools must not hang.
    for worker in list(_LIVE):
        worker.kill()


class _Worker:
    """One worker process and the parent's end of its pipe. ``on_exit`` is called (in the
    event loop's thread) as soon as the process is seen to have ended.
    """

    def __init__(
        self, name: str, namespace: str, options: WorkerOptions, env: dict[str, str], on_exit: Callable[[_Worker], None]
    ) -> None:
        self.connection, child = _SPAWN.Pipe()
        # Started from the event loop's thread, which lives as long as the server:
        # PR_SET_PDEATHSIG fires when the thread that started a process ends, not the process.
        self._loop = asyncio.get_running_loop()
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
        #: Held by a call (from the moment it is taken until it is released).
        self.busy = False
        self._on_exit = on_exit
        # The pipe stays registered with the event loop for the worker's whole life (one
        # epoll registration, not two system calls per message); messages queue up here.
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._loop.add_reader(self.connection.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            self._inbox.put_nowait(self.connection.recv())
        except (EOFError, OSError):
            self.exited = True
            self._unregister()
            self._inbox.put_nowait(_EOF)
            self._on_exit(self)
        except Exception as error:  # noqa: BLE001 - a message that cannot be unpickled here
            message = f"the worker's answer cannot be read: {type(error).__name__}: {error}"
            self._inbox.put_nowait(protocol.encode(Error(type(error).__name__, message, "")))

    def _unregister(self) -> None:
        if not self.connection.closed:
            self._loop.remove_reader(self.connection.fileno())

    async def receive(self, timeout: float | None = None) -> protocol.Message:
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
        return protocol.decode(message)  # type: ignore[return-value]

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
        # The pipe's end of file is watched: no system call needed to know.
        return not self.exited

    def detach(self) -> None:
        """Stop watching the pipe (in the event loop's thread, before :meth:`close`); a call
        still waiting for an answer learns that the worker is gone.
        """
        self._unregister()
        self._inbox.put_nowait(_EOF)

    def kill(self) -> None:
        """SIGKILL the process and the processes it started; from now on it counts as
        dead, reaped or not.
        """
        self.exited = True
        if self.process.is_alive() and self.process.pid is not None:
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
        self._stopping = False
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
            assert isinstance(worker, _Worker)
            self._idle.put_nowait(worker)
        return self.description

    async def _spawn(self) -> _Worker:
        env = {}
        if self.options.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.options.gpus[self._spawned % len(self.options.gpus)]
        self._spawned += 1
        worker = _Worker(self.name, self.namespace, self.options, env, self._exited)
        try:
            message = await worker.receive()
        except BaseException as error:
            await asyncio.shield(_close(worker))
            if isinstance(error, WorkerDied):
                raise PluginLoadError(f"model {self.name!r}: {error.message} while loading") from error
            raise
        if not isinstance(message, Ready):
            await _close(worker)
            reason = message.message if isinstance(message, Failed) else repr(message)
            raise PluginLoadError(f"model {self.name!r} failed to start: {reason}")
        self.description = message.description
        self._workers.add(worker)
        return worker

    async def run(
        self,
        hook: str,
        kwargs: dict[str, Any],
        job_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        save_to: str | None = None,
    ) -> Any:
        message = protocol.encode(Call(hook, kwargs, logs.request_id.get(), save_to))
        while True:
            worker = await self._take()
            try:
                worker.connection.send(message)
                break
            except OSError:
                # The worker died before it could read the call, so plugin code never saw
                # it: it goes to the next live worker.
                LOG.warning(
                    "model %s: worker process %d is gone; the call goes to another", self.name, worker.process.pid
                )
                worker.exited = True
                self._release(worker)
            except BaseException:
                self._release(worker)
                raise
        # The call owns the worker until it answers, even if our caller goes away.
        call = asyncio.create_task(self._call(worker, hook, job_id, on_progress))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(_discard_result)
            raise

    async def _take(self) -> _Worker:
        """A live, idle worker, waiting for one; raises ``ModelUnavailable``, ``QueueFull``."""
        if self.unavailable is not None and not self._workers:
            raise ModelUnavailable(self.unavailable)
        if self.max_queue and self._idle.empty() and self.waiting >= self.max_queue:
            raise QueueFull(f"model {self.name!r} has {self.waiting} requests waiting; try again shortly")
        self.waiting += 1
        try:
            while True:
                worker = await self._idle.get()
                if worker is None:  # woken because the model became unavailable
                    raise ModelUnavailable(self.unavailable or f"model {self.name!r} has no worker")
                if worker.alive:  # one that died while idle is being replaced already
                    worker.busy = True
                    return worker
        finally:
            self.waiting -= 1

    async def _call(self, worker: _Worker, hook: str, job_id: str | None, on_progress: ProgressCallback | None) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout if self.timeout and hook in _TIMED_HOOKS else None
        if job_id is not None:
            self._running[job_id] = worker
        try:
            while True:
                reply = await worker.receive(None if deadline is None else max(deadline - loop.time(), 0))
                if not isinstance(reply, Progress):
                    break
                if on_progress is not None:
                    on_progress(reply.fraction, reply.message, reply.metrics, reply.step)
            if out_of_memory(reply):  # type: ignore[arg-type]
                # Memory the plugin keeps (a cache, a leak) may stay exhausted: start afresh.
                LOG.warning(
                    "model %s: worker process %d ran out of memory; replacing it", self.name, worker.process.pid
                )
                worker.kill()
        except TimeoutError:
            worker.kill()
            raise PredictTimeout(
                f"model {self.name!r} did not answer within {self.timeout:g} s; its worker was replaced"
            ) from None
        finally:
            if job_id is not None:
                self._running.pop(job_id, None)
            self._release(worker)
        return protocol.value(reply)  # type: ignore[arg-type]

    def _release(self, worker: _Worker) -> None:
        worker.busy = False
        if worker.alive:
            self._idle.put_nowait(worker)
        else:
            self._retire(worker)

    def _exited(self, worker: _Worker) -> None:
        # A call that holds the worker sees the death itself, then releases it.
        if not worker.busy and worker in self._workers and not self._stopping:
            LOG.warning("model %s: worker process %d died while idle; replacing it", self.name, worker.process.pid)
            self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        """Replace a dead worker (once, however many times it is reported)."""
        if worker not in self._workers or self._stopping:
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
        self.unavailable = (
            f"model {self.name!r} is unavailable: its worker failed to start {self.max_start_failures} times: {reason}"
        )
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
        """Stop every worker: idle ones are asked to leave, busy ones are killed (the server
        is going away; their calls cannot finish).
        """
        self._stopping = True
        self.unavailable = f"model {self.name!r} is stopping"
        for _ in range(self.waiting):  # calls still waiting for a worker fail now
            self._idle.put_nowait(None)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self._workers:
            if worker.busy:
                worker.kill()
        await asyncio.gather(*(_close(w) for w in list(self._workers)))
        self._workers.clear()


def _discard_result(call: asyncio.Task[Any]) -> None:
    """Delete the files of a result (or a batch's results) nobody waits for any more."""
    if not call.cancelled() and call.exception() is None:
        result = call.result()
        _discard(result if isinstance(result, list) else Result(result))


async def _close(worker: _Worker) -> None:
    worker.detach()
    await asyncio.to_thread(worker.close)
