"""Persistent worker processes (spawn context), one call at a time each.

A worker imports its plugin, calls ``warm()`` once, sends the plugin's description, then
answers :class:`~deepaas_like.workers.protocol.Call` messages over a pipe (in the protocol's
wire form, framed by :mod:`~deepaas_like.workers.framing`), in the order they came, until it
reads :class:`~deepaas_like.workers.protocol.Leave` or the pipe closes. Up to the pool's
``depth`` calls are sent to a worker at once (see
:class:`~deepaas_like.workers.pooling.QueuedPool`); each answer belongs to the first call
still unanswered. Files travel as paths, never as contents: a binary result larger than
:data:`RESULT_FILE_THRESHOLD` is written to a file by the worker and travels as its path.
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
import collections
import contextlib
import ctypes
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
from typing import Any, TextIO

from deepaas_like import logs, progress
from deepaas_like.exceptions import PluginLoadError, PredictTimeout, WorkerDied
from deepaas_like.results import FileResult, not_json
from deepaas_like.workers import framing, protocol
from deepaas_like.workers.base import Placement, ProgressCallback, WorkerOptions, how_ended
from deepaas_like.workers.execution import execute, out_of_memory, start_plugin
from deepaas_like.workers.output import WorkerOutput, capture_output
from deepaas_like.workers.pooling import TIMED_HOOKS, CallNotDelivered, QueuedPool, discard
from deepaas_like.workers.protocol import (
    BatchResult,
    Call,
    Error,
    Failed,
    Leave,
    NotJSON,
    Outcome,
    Progress,
    Ready,
    Result,
    TooLarge,
)

__all__ = [
    "RESULT_FILE_THRESHOLD",
    "ProcessWorkerPool",
    "die_with",
    "kill_all_workers",
    "serve",
    "signal_on_parent_death",
    "store_result",
]

LOG = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")
# What a call learns when its worker ended while running it, before running it, or when it
# overran its timeout.
_EOF, _NOT_DELIVERED, _TIMED_OUT = object(), object(), object()
#: Binary results larger than this (bytes) go from the worker to the server as a file: the
#: pipe would carry them whole, and the event loop would read and unpickle them at once.
RESULT_FILE_THRESHOLD = 1024 * 1024


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def signal_on_parent_death(signum: int, parent_pid: int) -> bool:
    """Have the kernel send this process ``signum`` when its parent ``parent_pid`` dies
    (Linux's ``PR_SET_PDEATHSIG``; elsewhere a no-op). False when the parent died already,
    before that took effect.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    return os.getppid() == parent_pid


def die_with(server_pid: int) -> None:
    """Have the kernel SIGKILL this process when the server process dies, and lead a
    process group of our own.
    """
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    if not signal_on_parent_death(signal.SIGKILL, server_pid):
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


def _print_to(output: Connection | None) -> TextIO | None:
    """Send what this worker prints to ``output`` (see :mod:`~deepaas_like.workers.output`);
    the stream its log lines go to instead (the server's standard error), or None."""
    if output is None:
        return None
    log_stream = os.fdopen(capture_output(os.dup(output.fileno())), "w", buffering=1, errors="backslashreplace")
    output.close()
    return log_stream


def serve(
    connection: Connection,
    name: str,
    namespace: str,
    options: WorkerOptions,
    env: dict[str, str],
    server_pid: int,
    start_method: str,
    output: Connection | None = None,
) -> None:
    """Worker process main: load, warm, describe, then answer calls until told to stop.
    With ``output`` (the pipe the server reads it from), what the worker prints goes there
    (see :mod:`~deepaas_like.workers.output`) and its log lines to the server's standard error.
    """
    die_with(server_pid)
    _start_reaper()
    log_stream = _print_to(output)
    # A spawned process defaults to spawning its own children; plugin code gets the
    # platform's default instead (fork on Linux), as under DEEPaaS.
    multiprocessing.set_start_method(start_method, force=True)
    os.environ.update(env)
    if options.threads:
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[variable] = str(options.threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    logs.setup(options.debug, options.log_json, log_stream)
    if options.memory_limit_mb:
        limit = options.memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    fd = connection.fileno()
    try:
        plugin = start_plugin(name, namespace, options.warm, options.load_from)
        progress.install(lambda *report: framing.send(fd, protocol.encode(Progress(*report))), track_calls=True)
        framing.send(fd, protocol.encode(Ready(plugin.describe())))
    except BaseException as error:  # noqa: BLE001 - any failure here is reported, then we exit
        with contextlib.suppress(OSError):
            framing.send(fd, protocol.encode(Failed(f"{type(error).__name__}: {error}", traceback.format_exc())))
        return
    results_dir = options.results_dir or tempfile.gettempdir()
    reader = framing.Reader()
    frames: collections.deque[bytes | memoryview] = collections.deque()
    while True:
        while not frames:
            read = reader.read(fd)
            if read is None:
                return
            frames.extend(read)
        call = protocol.decode(framing.loads(frames.popleft()))
        if isinstance(call, Leave):
            return
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
            if not _answer(fd, outcome, name):
                return


def _answer(fd: int, outcome: Outcome, model: str) -> bool:
    """Send a call's outcome; False when the server has gone away."""
    try:
        framing.send(fd, protocol.encode(outcome))
    except OSError:
        return False
    except Exception as error:  # noqa: BLE001 - nothing was written: pickling comes first
        discard(outcome)
        message = f"the result cannot be sent back: {type(error).__name__}: {error}"
        reply: Outcome = Error(type(error).__name__, message, "")
        too_deep = _too_deep(outcome, model) if isinstance(error, RecursionError) else None
        if too_deep is not None:
            reply = too_deep  # the rule every prediction follows
        else:
            LOG.error("%s", message)
        try:
            framing.send(fd, protocol.encode(reply))
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
    return store_result(outcome.value, directory)


def store_result(data: bytes | memoryview, directory: str, media_type: str | None = None) -> Result | TooLarge:
    """A binary result written to a temporary file in ``directory`` (a
    :class:`FileResult` of ``media_type``), or :class:`TooLarge` when there is no room.
    """
    path = None
    size = len(memoryview(data).cast("B"))
    try:
        descriptor, path = tempfile.mkstemp(prefix="deepaas-like-result-", dir=directory)
        with open(descriptor, "wb") as file:
            file.write(data)
    except OSError as error:
        if path is not None:
            os.unlink(path)
        message = f"cannot store a result of {size} bytes in {directory}: {error.strerror}"
        LOG.error("%s", message)
        return TooLarge(message)
    return Result(FileResult(path, media_type, temporary=True))


_LIVE: weakref.WeakSet[_Worker] = weakref.WeakSet()


def kill_all_workers() -> int:
    """SIGKILL every worker process of this server (and the processes each started) that is
    still running; returns how many. For a shutdown whose time is up: a worker asked to leave
    that does not (a plugin's non-daemon thread or exit handler holds it) is killed.
    """
    workers = [worker for worker in list(_LIVE) if worker.process.is_alive()]
    for worker in workers:
        worker.kill()
    return len(workers)


@atexit.register
def _kill_leftovers() -> None:
    # Runs before multiprocessing's own exit handler, which would wait for every
    # non-daemonic child: a server leaving without stopping its pools must not hang.
    kill_all_workers()


class _Pending:
    """An answer a worker owes: its start's, or a call's. ``timeout`` (seconds) runs from the
    moment the call is the first the worker owes, that is, the one it runs.
    """

    __slots__ = ("answer", "on_progress", "timeout", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_progress: ProgressCallback | None, timeout: float | None):
        self.answer: asyncio.Future[Any] = loop.create_future()
        self.on_progress = on_progress
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None

    def settle(self, message: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.answer.done():  # its caller may be gone
            self.answer.set_result(message)


class _Worker:
    """One worker process and the parent's end of its pipe. ``on_exit`` is called (in the
    event loop's thread) as soon as the process is seen to have ended.

    Calls may be sent while earlier ones run: the worker answers them in order, so each
    message read belongs to the first answer still owed.
    """

    def __init__(
        self, name: str, namespace: str, options: WorkerOptions, env: dict[str, str], on_exit: Callable[[_Worker], None]
    ) -> None:
        #: The GPU this worker was given (None: none).
        self.gpu = env.get("CUDA_VISIBLE_DEVICES")
        self.connection, child = _SPAWN.Pipe()
        printed, prints = _SPAWN.Pipe(duplex=False)  # what the worker prints: see workers/output.py
        # Started from the event loop's thread, which lives as long as the server:
        # PR_SET_PDEATHSIG fires when the thread that started a process ends, not the process.
        self._loop = asyncio.get_running_loop()
        # Not daemonic: plugin code may start processes of its own (see the module's doc).
        self.process = _SPAWN.Process(
            target=serve,
            args=(child, name, namespace, options, env, os.getpid(), multiprocessing.get_start_method(), prints),
            name=f"worker-{name}",
            daemon=False,
        )
        self.process.start()
        _LIVE.add(self)
        child.close()  # so that the worker's death shows as EOF on our end
        prints.close()
        self.output = WorkerOutput(os.dup(printed.fileno()), f"model {name}, worker process {self.process.pid}")
        printed.close()
        self.exited = False
        #: Calls held, and when it was last taken (see :class:`~deepaas_like.workers.pooling.Worker`).
        self.calls = 0
        self.taken = 0
        self._on_exit = on_exit
        # The answers owed, in the order the worker gives them; first its start's.
        self._owed: collections.deque[_Pending] = collections.deque()
        self.started = self.expect()
        # The pipe stays registered with the event loop for the worker's whole life (one
        # epoll registration, not two system calls per message).
        self._fd = self.connection.fileno()
        # Non-blocking whatever the loop (uvloop's add_reader makes it so, asyncio's does
        # not): a large call sent behind a running one waits in the writer, not the loop.
        os.set_blocking(self._fd, False)
        self._reader = framing.Reader()
        self._writer = framing.LoopWriter(self._fd, self._loop, self._write_failed)
        self._loop.add_reader(self._fd, self._readable)

    def send(self, message: Any) -> None:
        """Write one message to the worker without waiting (in the event loop's thread):
        what its pipe cannot take now (a large call behind a running one) is written, in
        order, as the worker reads. Raises ``OSError`` when it is gone, and what pickling
        ``message`` raises.
        """
        self._writer.send(message)

    def _write_failed(self) -> None:
        # The worker is gone; the end of its pipe settles the calls it owes.
        self.exited = True

    def expect(self, on_progress: ProgressCallback | None = None, timeout: float | None = None) -> _Pending:
        """Owe one more answer (for a call just sent); :meth:`answer` awaits it."""
        pending = _Pending(self._loop, on_progress, timeout)
        self._owed.append(pending)
        if len(self._owed) == 1:
            self._runs(pending)
        return pending

    def _runs(self, pending: _Pending) -> None:
        """``pending`` is the call the worker runs now: its timeout starts."""
        if pending.timeout is not None and not self.exited:
            pending.timer = self._loop.call_later(pending.timeout, self._overran, pending)

    def _overran(self, pending: _Pending) -> None:
        if not self.exited:
            # Its answer may have arrived just now: one read of the non-blocking pipe says
            # (select.select, used before, raised ValueError for a descriptor over 1023, so
            # that a server with many connections never timed a call out).
            self._readable()
            if pending.answer.done():
                return
        self.kill()
        # It was running: the calls behind it never reached plugin code.
        owed, self._owed = self._owed, collections.deque()
        for number, one in enumerate(owed):
            one.settle(_NOT_DELIVERED if number else _TIMED_OUT)

    def _deliver(self, message: Any) -> None:
        if not self._owed:
            LOG.error("worker process %d sent a message nobody waits for: %.200r", self.process.pid, message)
            return
        first = self._owed[0]
        decoded = protocol.decode(message)
        if isinstance(decoded, Progress):
            if first.on_progress is not None:
                first.on_progress(decoded.fraction, decoded.message, decoded.metrics, decoded.step)
            return
        self._owed.popleft()
        first.settle(decoded)
        if self._owed:
            self._runs(self._owed[0])

    def _fail_owed(self) -> None:
        """The worker is gone: the call it ran failed; those behind it never reached it."""
        owed, self._owed = self._owed, collections.deque()
        for number, pending in enumerate(owed):
            pending.settle(_NOT_DELIVERED if number else _EOF)

    async def answer(self, pending: _Pending) -> protocol.WorkerMessage:
        """What the worker answered ``pending``, awaited without blocking the event loop.

        Raises :class:`WorkerDied` when the process exited first, ``CallNotDelivered`` when
        it exited before it ran the call, ``TimeoutError`` when the call overran its timeout
        (the worker is killed).
        """
        message = await pending.answer
        if message is _EOF:
            await asyncio.to_thread(self.process.join, 5)
            raise WorkerDied(self.death())
        if message is _NOT_DELIVERED:
            raise CallNotDelivered()
        if message is _TIMED_OUT:
            raise TimeoutError()
        return message

    def _readable(self) -> None:
        # One read per readiness: it cannot block, and takes every message that has arrived.
        frames = self._reader.read(self._fd)
        if frames is None:
            self.exited = True
            self._unregister()
            self._fail_owed()
            self._on_exit(self)
            return
        for frame in frames:
            try:
                message = framing.loads(frame)
            except Exception as error:  # noqa: BLE001 - a message that cannot be unpickled here
                reason = f"the worker's answer cannot be read: {type(error).__name__}: {error}"
                message = protocol.encode(Error(type(error).__name__, reason, ""))
            self._deliver(message)

    def _unregister(self) -> None:
        if not self.connection.closed:
            self._loop.remove_reader(self._fd)
            self._writer.unwatch()

    def death(self) -> str:
        """How the process ended, for error messages."""
        ended = how_ended(self.process.exitcode)
        why = {
            "SIGKILL": " (killed: a cancel, a timeout, or the out-of-memory killer)",
            "SIGSEGV": " (a segmentation fault in plugin code)",
        }.get(ended.rpartition(" ")[2], "")
        return f"worker process {self.process.pid} {ended}{why}"

    @property
    def alive(self) -> bool:
        # The pipe's end of file is watched: no system call needed to know.
        return not self.exited

    def detach(self) -> None:
        """Stop watching the pipe (in the event loop's thread, before :meth:`close`); a call
        still waiting for an answer learns that the worker is gone.
        """
        self._unregister()
        self._fail_owed()

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
        # A worker that has not read all its calls yet is busy: it is killed, and Leave is
        # never written into the middle of a call.
        if not self.exited and not self._writer.pending:
            with contextlib.suppress(OSError):
                framing.send(self._fd, protocol.encode(Leave()))  # waits for room, in this thread
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()
        self.process.join(timeout=5)
        self.connection.close()
        _LIVE.discard(self)


class ProcessWorkerPool(QueuedPool[_Worker]):
    """``size`` warmed worker processes of one model; GPUs assigned round-robin.

    ``options.gpus`` are device ids exported to each worker as ``CUDA_VISIBLE_DEVICES``: a
    new worker gets the one fewest live workers have, the first such in the list.
    ``timeout`` (seconds) bounds each prediction; past it the worker is killed and
    replaced. ``max_queue``, ``max_start_failures`` and ``depth``: see :class:`QueuedPool`.
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
        depth: int = 1,
    ) -> None:
        super().__init__(name, size, max_queue, max_start_failures, depth)
        self.namespace = namespace
        self.options = options or WorkerOptions()
        self.timeout = timeout
        self._starting_gpus: list[str] = []

    def placements(self) -> list[Placement]:
        return [Placement(gpus=(w.gpu,) if w.gpu else ()) for w in self.workers if w.alive]

    def _next_gpu(self) -> str:
        """The GPU fewest live or starting workers have, the first such in the list."""
        taken = [worker.gpu for worker in self.workers if worker.alive] + self._starting_gpus
        return min(self.options.gpus, key=taken.count)

    async def start_worker(self) -> _Worker:
        env = {}
        if self.options.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self._next_gpu()
            self._starting_gpus.append(env["CUDA_VISIBLE_DEVICES"])
        self.starting += 1
        try:
            worker = _Worker(self.name, self.namespace, self.options, env, self._exited)
            try:
                message = await worker.answer(worker.started)
            except BaseException as error:
                await asyncio.shield(_close(worker))
                if isinstance(error, WorkerDied):
                    raise PluginLoadError(f"model {self.name!r}: {error.message} while loading") from error
                raise
        finally:
            self.starting -= 1
            if env:
                self._starting_gpus.remove(env["CUDA_VISIBLE_DEVICES"])
        if not isinstance(message, Ready):
            await _close(worker)
            reason = message.message if isinstance(message, Failed) else repr(message)
            raise PluginLoadError(f"model {self.name!r} failed to start: {reason}")
        self.description = message.description
        self.workers.add(worker)
        return worker

    async def call(
        self,
        worker: _Worker,
        hook: str,
        kwargs: dict[str, Any],
        on_progress: ProgressCallback | None,
        save_to: str | None = None,
    ) -> Any:
        try:
            worker.send(protocol.encode(Call(hook, kwargs, logs.request_id.get(), save_to)))
        except OSError:
            # The worker died before it could read the call, so plugin code never saw it.
            LOG.warning("model %s: worker process %d is gone; the call goes to another", self.name, worker.process.pid)
            worker.exited = True
            raise CallNotDelivered() from None
        pending = worker.expect(on_progress, self.timeout if self.timeout and hook in TIMED_HOOKS else None)
        try:
            reply = await worker.answer(pending)
        except TimeoutError:
            raise PredictTimeout(
                f"model {self.name!r} did not answer within {self.timeout:g} s; its worker was replaced"
            ) from None
        if out_of_memory(reply):  # type: ignore[arg-type]
            # Memory the plugin keeps (a cache, a leak) may stay exhausted: start afresh.
            LOG.warning("model %s: worker process %d ran out of memory; replacing it", self.name, worker.process.pid)
            worker.kill()
        return protocol.value(reply)  # type: ignore[arg-type]

    def _exited(self, worker: _Worker) -> None:
        self.died_idle(worker, f"worker process {worker.process.pid}")

    def kill_worker(self, worker: _Worker) -> None:
        worker.kill()

    async def close_worker(self, worker: _Worker) -> None:
        await _close(worker)


async def _close(worker: _Worker) -> None:
    worker.detach()
    await asyncio.to_thread(worker.close)
    worker.output.read()  # the last it printed (the process has ended)
    worker.output.close()
