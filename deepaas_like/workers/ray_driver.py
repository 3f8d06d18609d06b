"""The driver process of the Ray executor: the one process of the server that is a Ray
client. The server starts it (:class:`deepaas_like.workers.ray.RayCluster`) and talks to it
over a pipe; it places replicas (:class:`~deepaas_like.workers.ray_replica.Replica` actors),
forwards calls to them and reports their deaths.

Why a process of its own: a Ray driver whose cluster's head is gone for good is ended by
Ray itself (``gcs_rpc_server_reconnect_timeout_s``). Losing this process costs the server
its replicas, not its life: the server answers 503 and starts a new driver until the
cluster is back. Ray also owns the actors of a driver: when this process ends, however it
ends, Ray removes its replicas.

The server and the driver speak the workers' protocol (:mod:`~deepaas_like.workers.protocol`,
whose doc lists the driver's messages: :class:`~deepaas_like.workers.protocol.Numbered`
requests to place, call and check replicas, and their answers), framed as the process
executor frames its workers' (:mod:`~deepaas_like.workers.framing`).

The driver's standard error is a pipe the server reads: it passes each line on to its own, and
names the last ones when the driver ends before it said ``Connected`` (a crash, a missing module).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from deepaas_like import logs
from deepaas_like.model.files import UploadedFile
from deepaas_like.workers import framing, protocol
from deepaas_like.workers.process import die_with, store_result
from deepaas_like.workers.protocol import (
    BatchResult,
    Broken,
    Check,
    Checked,
    Connected,
    Died,
    DriverAnswer,
    Kill,
    Leave,
    Message,
    Numbered,
    Outcome,
    Place,
    Placed,
    Progress,
    ReplicaCall,
    Result,
    Unanswered,
    Unreachable,
)

__all__ = ["PROGRESS_INTERVAL", "RAY_LOG_LEVEL", "feasibility", "main"]

LOG = logging.getLogger(__name__)
#: Seconds between looks at the progress of a call that reports it.
PROGRESS_INTERVAL = 0.5
#: Ray's own log lines below this level are not shown (they are in its log files).
RAY_LOG_LEVEL = logging.WARNING


def main(
    connection: Connection,
    errors: Connection,
    address: str,
    head_timeout: float,
    results_dir: str,
    debug: bool,
    log_json: bool,
    server_pid: int,
) -> None:
    """Driver process main: connect to the cluster at ``address``, say :class:`Connected`
    (or :class:`Unreachable`, or :class:`Broken`), then serve the server's requests until
    told to :class:`Leave` or the pipe closes. Standard error goes to ``errors``, which the
    server reads.
    """
    os.dup2(errors.fileno(), 2)
    errors.close()
    die_with(server_pid)
    # A driver that has lost the head for this long is ended by Ray: the server notices
    # and reconnects (see the module's doc). Ray's log lines reach the server's log whole.
    os.environ["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(max(1, round(head_timeout)))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    logs.setup(debug, log_json)
    try:
        description = _connect(address)
    except Exception as error:  # noqa: BLE001 - any failure to connect is told to the server
        with contextlib.suppress(OSError):
            framing.send(connection.fileno(), protocol.encode(Unreachable(_one_line(error))))
        return
    try:
        driver = _Driver(connection, results_dir)
    except Exception as error:  # noqa: BLE001 - told to the server (a module missing: an extra not installed)
        LOG.exception("the Ray driver cannot start")
        message = f"the Ray driver cannot start: {_one_line(error)}"
        if isinstance(error, ImportError):
            message += " (pip install 'deepaas_like[ray]' installs what it needs)"
        with contextlib.suppress(OSError):
            framing.send(connection.fileno(), protocol.encode(Broken(message)))
        return
    driver._send(Connected(description))
    asyncio.run(driver.serve())


def _connect(address: str) -> str:
    """Connect to the cluster; returns what it is, e.g. ``"2 nodes, 4 CPUs, 2 GPUs"``.
    Raises ``ConnectionError`` naming the address when nothing answers there.
    """
    _reachable(address)
    import ray

    ray.init(
        address=address or None,
        namespace="deepaas_like",
        log_to_driver=True,
        logging_level=RAY_LOG_LEVEL,
        include_dashboard=False if not address else None,
    )
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    totals: dict[str, float] = {}
    for node in nodes:
        for resource in ("CPU", "GPU"):
            totals[resource] = totals.get(resource, 0) + node["Resources"].get(resource, 0)
    return f"{len(nodes)} node(s), {totals.get('CPU', 0):g} CPU(s), {totals.get('GPU', 0):g} GPU(s)"


def _reachable(address: str) -> None:
    """Raise ``ConnectionError`` unless something listens at a ``HOST:PORT`` or ``ray://``
    address (``ray.init`` would wait for it without end).
    """
    if address in ("", "auto") or address.startswith("local"):
        return
    parts = urlsplit(address if "://" in address else f"//{address}")
    if parts.hostname is None or parts.port is None:
        raise ConnectionError(f"{address!r} is not a Ray address: auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    except OSError as error:
        raise ConnectionError(f"nothing answers at {address}: {error.strerror or error}") from None


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def feasibility(actor_options: dict[str, Any], nodes: list[dict[str, Any]]) -> str | None:
    """Why no alive node of the cluster could ever hold a replica with ``actor_options``
    (it lacks a resource or a label), naming what is missing; None when one could.
    """
    wanted = {"CPU": actor_options.get("num_cpus") or 0, "GPU": actor_options.get("num_gpus") or 0}
    wanted["memory"] = actor_options.get("memory") or 0
    wanted.update(actor_options.get("resources") or {})
    labels = actor_options.get("label_selector") or {}
    alive = [node for node in nodes if node.get("Alive")]
    if not alive:
        return "the cluster has no alive node"
    for node in alive:
        if all(node["Resources"].get(k, 0) >= v for k, v in wanted.items() if v) and all(
            node.get("Labels", {}).get(k) == v for k, v in labels.items()
        ):
            return None
    for resource, amount in wanted.items():
        if amount and not any(node["Resources"].get(resource, 0) >= amount for node in alive):
            most = max(node["Resources"].get(resource, 0) for node in alive)
            shown = f"{amount / 2**20:g} MiB" if resource == "memory" else f"{amount:g}"
            have = f"{most / 2**20:g} MiB" if resource == "memory" else f"{most:g}"
            return f"no node of the Ray cluster has {shown} {resource} (the most one node has: {have})"
    for label, value in labels.items():
        if not any(node.get("Labels", {}).get(label) == value for node in alive):
            return f"no node of the Ray cluster has the label {label}={value}"
    return f"no single node of the Ray cluster has all of {wanted} with the labels {labels}"


class _Driver:
    """Serves the server's requests (see the module's doc) in an event loop."""

    def __init__(self, connection: Connection, results_dir: str) -> None:
        import ray

        from deepaas_like.workers import ray_replica

        self.ray = ray
        self.replica_module = ray_replica
        # Ray restarts nothing itself: the server replaces a dead replica, and knows it did.
        decorate: Any = ray.remote
        self.actor_class = decorate(max_restarts=0, concurrency_groups={"control": 2})(ray_replica.Replica)
        self.connection = connection
        self.fd = connection.fileno()
        self.reader = framing.Reader()
        self.results_dir = results_dir
        self.replicas: dict[str, Any] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.done = asyncio.Event()
        # Answers are sent from the event loop and from Ray's callback thread.
        self.send_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        loop.add_reader(self.fd, self._readable)
        await self.done.wait()
        loop.remove_reader(self.fd)
        for actor in self.replicas.values():
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        with contextlib.suppress(Exception):
            self.ray.shutdown()

    def _send(self, message: Message) -> None:
        """Send ``message`` to the server (from any thread), waiting for room if need be."""
        wire = protocol.encode(message)
        try:
            with self.send_lock:
                framing.send(self.fd, wire)
        except OSError:
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self.done.set)  # the server has gone

    def _readable(self) -> None:
        # One read per readiness: a message that has not fully arrived waits for the rest.
        frames = self.reader.read(self.fd)
        if frames is None:
            self.done.set()  # the server has gone
            return
        for frame in frames:
            message = protocol.decode(framing.loads(frame))
            if isinstance(message, Leave):
                self.done.set()  # the server asks us to leave
                return
            self._handle(message)

    def _handle(self, message: Message) -> None:
        if isinstance(message, Kill):
            self._kill(message.replica)
            return
        assert isinstance(message, Numbered), message
        number, request = message.number, message.message
        if isinstance(request, ReplicaCall) and _at_once(request):
            self._call_at_once(number, request)
            return
        handlers: dict[type, Callable[[int, Any], Awaitable[None]]] = {
            ReplicaCall: self._call,
            Place: self._place,
            Check: self._check,
        }
        self._spawn(handlers[type(request)](number, request))

    def _spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` as a task of the event loop, kept until it ends."""
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _reply(self, number: int, message: DriverAnswer) -> None:
        """Send ``message`` for the server's request ``number`` (from any thread)."""
        self._send(Numbered(number, message))

    async def _result(self, ref: Any) -> Any:
        return await asyncio.wrap_future(ref.future())

    async def _check(self, number: int, check: Check) -> None:
        nodes = await asyncio.to_thread(self.ray.nodes)
        self._reply(number, Checked(feasibility(check.actor_options, nodes)))

    async def _place(self, number: int, place: Place) -> None:
        actor = self.actor_class.options(**place.actor_options).remote(place.name, place.namespace, place.options)
        self.replicas[place.replica] = actor
        try:
            ready, placement = await self._result(actor.ready.remote())
        except Exception as error:  # noqa: BLE001 - it died while loading, or was killed
            self.replicas.pop(place.replica, None)
            self._reply(number, Unanswered(_death(error, "while loading its plugin"), replica_died=True))
            return
        self._reply(number, Placed(ready, placement))
        self._spawn(self._watch(place.replica, actor))

    async def _watch(self, replica: str, actor: Any) -> None:
        try:
            await self._result(actor.watch.remote())
        except Exception as error:  # noqa: BLE001 - how it died
            if self.replicas.get(replica) is actor:  # not removed by the server
                del self.replicas[replica]
                self._send(Died(replica, _death(error)))

    def _kill(self, replica: str) -> None:
        actor = self.replicas.pop(replica, None)
        if actor is not None:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)

    async def _call(self, number: int, request: ReplicaCall) -> None:
        call = request.call
        actor = self.replicas.get(request.replica)
        if actor is None:
            self._reply(number, Unanswered("its replica is gone", replica_died=True))
            return
        try:
            kwargs = await self._uploads(call.kwargs)
            reply = actor.call.remote(call.hook, kwargs, call.request_id, request.with_progress, call.save_to)
            answer = asyncio.ensure_future(self._result(reply))
            if request.with_progress:
                while not answer.done():
                    await asyncio.wait([answer], timeout=PROGRESS_INTERVAL)
                    if not answer.done():
                        for report in await self._result(actor.progress.remote()):
                            self._reply(number, Progress(*report))
            reports, outcome = await answer
        except Exception as error:  # noqa: BLE001 - the replica died, or Ray could not run the call
            unanswered = self._unanswered(error)
            if unanswered.replica_died:
                self._kill(request.replica)  # dead, or unreachable: either way it is replaced
            self._reply(number, unanswered)
            return
        await self._answer(number, reports, outcome)

    def _unanswered(self, error: Exception) -> Unanswered:
        """Why Ray gave no answer to a call: its replica died or cannot be reached (Ray's
        ``RayActorError``), or Ray could not run it (an object lost...).
        """
        if isinstance(error, self.ray.exceptions.RayActorError):
            return Unanswered(_death(error), replica_died=True)
        return Unanswered(f"Ray could not run the call: {_one_line(error)}", replica_died=False)

    def _call_at_once(self, number: int, request: ReplicaCall) -> None:
        """A call without uploads, progress or ``save_to`` (see :func:`_at_once`): its answer
        is sent from Ray's callback thread, without a trip through the event loop (the hop
        every prediction pays).
        """
        call = request.call
        actor = self.replicas.get(request.replica)
        if actor is None:
            self._reply(number, Unanswered("its replica is gone", replica_died=True))
            return
        future = actor.call.remote(call.hook, call.kwargs, call.request_id, False).future()
        future.add_done_callback(functools.partial(self._answered, number, request.replica))

    def _answered(self, number: int, replica: str, future: concurrent.futures.Future[Any]) -> None:
        assert self.loop is not None
        try:
            reports, outcome = future.result()
        except Exception as error:  # noqa: BLE001 - the replica died, or Ray could not run the call
            unanswered = self._unanswered(error)
            if unanswered.replica_died:  # dead, or unreachable: it is replaced
                self.loop.call_soon_threadsafe(self._kill, replica)
            self._reply(number, unanswered)
            return
        if self._has_blob(outcome):  # written to a file: not in Ray's thread
            self.loop.call_soon_threadsafe(self._spawn, self._answer(number, [], outcome))
            return
        self._reply(number, outcome)

    async def _answer(self, number: int, reports: list[tuple[Any, ...]], outcome: Outcome) -> None:
        for report in reports:
            self._reply(number, Progress(*report))
        if self._has_blob(outcome):
            outcome = await asyncio.to_thread(self._stored, outcome)
        self._reply(number, outcome)

    def _has_blob(self, outcome: Outcome) -> bool:
        if isinstance(outcome, BatchResult):
            return any(self._has_blob(one) for one in outcome.outcomes)
        return isinstance(outcome, Result) and isinstance(outcome.value, self.replica_module.Blob)

    async def _uploads(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with each :class:`UploadedFile` (alone or in a list) put in the object
        store, mapped from its file rather than read into this process's memory.
        """
        if not _has_uploads(kwargs):
            return kwargs
        return await asyncio.to_thread(lambda: {key: self._upload(value) for key, value in kwargs.items()})

    def _upload(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._upload(item) for item in value]
        if not isinstance(value, UploadedFile):
            return value
        suffix = os.path.splitext(value.filename)[1]
        data = self.ray.put(self.replica_module.file_data(value.filename))
        return self.replica_module.Upload(value.name, data, value.content_type, value.original_filename, suffix)

    def _stored(self, outcome: Outcome) -> Outcome:
        """``outcome`` with each :class:`Blob` as bytes, or as a temporary result file in
        the results directory when it is large or has a media type of its own.
        """
        if isinstance(outcome, BatchResult):
            return BatchResult([self._stored(one) for one in outcome.outcomes])
        if not isinstance(outcome, Result) or not isinstance(outcome.value, self.replica_module.Blob):
            return outcome
        blob = outcome.value
        if isinstance(blob.data, bytes) and blob.media_type is None:
            return Result(blob.data)
        return store_result(memoryview(blob.data), self.results_dir, blob.media_type)


def _at_once(request: ReplicaCall) -> bool:
    """Whether a call can be answered straight from Ray's callback thread: it needs no
    uploads put in the object store, no progress looked at, no version saved.
    """
    return not request.with_progress and request.call.save_to is None and not _has_uploads(request.call.kwargs)


def _has_uploads(kwargs: dict[str, Any]) -> bool:
    return any(
        isinstance(value, UploadedFile) or (isinstance(value, list) and any(isinstance(v, UploadedFile) for v in value))
        for value in kwargs.values()
    )


def _death(error: BaseException, when: str = "") -> str:
    """How a replica died, in one line, from Ray's error about it (which spreads over
    several lines with its pid and address, the reason, and advice).
    """
    text = str(error)
    fields = dict(line.strip().split(": ", 1) for line in text.splitlines() if line.startswith("\t") and ": " in line)
    where = f"Ray actor, pid {fields['pid']} on {fields['ip']}" if "pid" in fields and "ip" in fields else "Ray actor"
    if "is unavailable:" in text:
        reason = text.split("is unavailable:", 1)[1].split(" The task may or may not", 1)[0].strip()
        return f"its replica ({where}) cannot be reached, the call may or may not have run: {reason}"
    reason = text.split("The actor is dead because ", 1)[1] if "The actor is dead because " in text else ""
    reason = reason.split(" Some common causes", 1)[0].strip().rstrip(".")
    return f"its replica ({where}) died{' ' + when if when else ''}" + (f": {reason}" if reason else "")
