"""Ray actors as workers (``--executor ray``): each worker of a model is a *replica*, a Ray
actor that Ray places on any node of the cluster that has the resources it asks for.

The server itself never imports ``ray``. :class:`RayCluster` starts one driver process
(``ray_driver.py``) and speaks to it over a pipe; every :class:`RayWorkerPool` of the server
sends its calls through it. A pool behaves as the process executor's: a replica runs one
call at a time; one that dies (its process killed, its node gone) fails only the call it
held and a new one is placed; a cancel kills the replica running the job (``ray.kill``); a
prediction past its timeout is answered 504 and its replica replaced. Uploads and binary
results travel through Ray's object store (see ``ray_replica.py``), never as paths on the
server's disk.

When the cluster cannot be reached (its head is gone: the driver process ends, see
``ray_driver.py``), every model answers 503 with Retry-After and ``/readyz`` says why,
while the server starts a new driver every ``reconnect_interval`` seconds; once one
connects, each pool places its replicas again.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import importlib.util
import itertools
import logging
import multiprocessing
import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any, cast

from deepaas_like import logs
from deepaas_like.exceptions import (
    ClusterUnavailable,
    PluginLoadError,
    PredictTimeout,
    StartupError,
    WorkerDied,
)
from deepaas_like.model.loading import DEFAULT_NAMESPACE
from deepaas_like.model.plugin import ModelDescription
from deepaas_like.workers import framing, protocol, ray_driver
from deepaas_like.workers.base import Placement, ProgressCallback, WorkerOptions, how_ended
from deepaas_like.workers.execution import out_of_memory
from deepaas_like.workers.pooling import TIMED_HOOKS, QueuedPool

__all__ = ["ClusterOptions", "RayCluster", "RayResources", "RayWorkerPool"]

LOG = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")
#: Seconds a new replica may wait for room on the cluster before the log says so.
PLACEMENT_WARNING = 30.0
#: Seconds between looks, for a job waiting for a lost cluster to be back.
AWAY_POLL = 0.5
#: The driver's last lines on standard error that its death names (a Python traceback's
#: last three: the file and line, the statement, the exception).
DRIVER_ERROR_LINES = 3


@dataclasses.dataclass(frozen=True)
class RayResources:
    """What Ray reserves for each replica of a model, and where it may run: CPUs and GPUs
    (fractions allowed), memory in MiB, custom resources (name -> amount) and node labels
    (name -> value) that its node must have.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_mb: int = 0
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    node_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def actor_options(self) -> dict[str, Any]:
        """The options of ``ActorClass.options()`` that say so."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_mb:
            options["memory"] = self.memory_mb * 2**20
        if self.resources:
            options["resources"] = dict(self.resources)
        if self.node_labels:
            options["label_selector"] = dict(self.node_labels)
        return options


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """How to reach the cluster: ``address`` as ``--ray-address`` takes it; seconds to
    connect, to wait for a silent head, and between reconnection attempts; where large
    binary results are written for the server (None: the system's temporary directory).
    """

    address: str = ""
    connect_timeout: float = 30.0
    head_timeout: float = 10.0
    reconnect_interval: float = 5.0
    results_dir: str | None = None
    debug: bool = False
    log_json: bool = False
    #: The entry-point group the replicas load their plugins from (``--model-namespace``).
    namespace: str = DEFAULT_NAMESPACE


@dataclasses.dataclass
class _Request:
    future: asyncio.Future[protocol.DriverAnswer]
    on_progress: ProgressCallback | None


class _DriverErrors:
    """The driver process's standard error, read on the event loop: passed on line by line to
    the server's own (Ray prints its replicas' log lines there), its last lines kept to say
    why the driver ended.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.fd = connection.fileno()
        os.set_blocking(self.fd, False)
        #: The last lines read that say something (stripped).
        self.last: collections.deque[str] = collections.deque(maxlen=DRIVER_ERROR_LINES)
        self._partial = b""
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self) -> None:
        """Pass on each line as it comes (in the running event loop's thread)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self.read)

    def read(self) -> None:
        """Pass on what has arrived, without waiting."""
        while not self.connection.closed:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # every writer has closed it: nothing more can come
                self._unwatch()
                return
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()
            self._pass_on(lines)

    def _pass_on(self, lines: list[bytes]) -> None:
        if not lines:
            return
        text = b"\n".join(lines).decode(errors="replace")
        self.last.extend(line.strip() for line in text.splitlines() if line.strip())
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def _unwatch(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None

    def close(self) -> None:
        """Pass on what is left (the driver has ended), then stop reading."""
        if self.connection.closed:
            return
        self.read()
        self._unwatch()
        if self._partial:
            self._pass_on([self._partial])
            self._partial = b""
        self.connection.close()

    def tail(self) -> str:
        """The last lines that say something, on one line (empty: none)."""
        return " | ".join(self.last)


class _Driver:
    """The driver process and the server's end of its pipe (framed messages, see
    :mod:`~deepaas_like.workers.framing`) and of its standard error.
    """

    def __init__(self, options: ClusterOptions, on_lost: Callable[[], None]) -> None:
        self.connection, child = _SPAWN.Pipe()
        errors, child_errors = _SPAWN.Pipe(duplex=False)
        self.process = _SPAWN.Process(
            target=ray_driver.main,
            args=(
                child,
                child_errors,
                options.address,
                options.head_timeout,
                options.results_dir or tempfile.gettempdir(),
                options.debug,
                options.log_json,
                os.getpid(),
            ),
            name="ray-driver",
            daemon=False,  # a local Ray instance (empty address) is its child processes
        )
        self.process.start()
        child.close()
        child_errors.close()
        self.errors = _DriverErrors(errors)
        self.fd = self.connection.fileno()
        self.reader = framing.Reader()
        # Flushed by the loop once connected; ``on_lost`` when a write finds the pipe closed.
        self.writer = framing.LoopWriter(self.fd, asyncio.get_running_loop(), on_lost)
        #: Messages read but not yet delivered (after the first).
        self.frames: collections.deque[bytes | memoryview] = collections.deque()

    def first_message(self) -> protocol.Message | None:
        """The driver's first message: ``Connected``, ``Unreachable`` or ``Broken`` (see
        :mod:`~deepaas_like.workers.protocol`; blocking; None when it exits first).
        """
        while not self.frames:
            read = self.reader.read(self.fd)
            if read is None:
                return None
            self.frames.extend(read)
        return protocol.decode(framing.loads(self.frames.popleft()))

    def death(self, when: str = "") -> str:
        """How the process ended (after it has), ``when`` (e.g. "before it connected"), with
        its last lines on standard error.
        """
        ended = how_ended(self.process.exitcode)
        tail = self.errors.tail()
        if when:
            ended += f" {when}"
        return f"the Ray driver process {ended}" + (f"; its last lines on standard error: {tail}" if tail else "")

    def close(self) -> None:
        """Ask the driver to leave (it removes its replicas), kill it if it does not; blocking."""
        if self.process.is_alive():
            try:
                self.writer.write(protocol.encode(protocol.Leave()))  # behind what is still pending, if anything
                self.writer.drain(timeout=10)
            except OSError:
                pass
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()


class RayCluster:
    """The server's connection to a Ray cluster, shared by the pools that use it: they
    :meth:`attach` (the first connects) and :meth:`detach` (the last disconnects).

    ``lost`` says why the cluster cannot be reached now (None: it can).
    """

    def __init__(self, options: ClusterOptions) -> None:
        self.options = options
        self.lost: str | None = None
        self._driver: _Driver | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._pools: set[RayWorkerPool] = set()
        self._owners: dict[str, RayWorkerPool] = {}
        self._requests: dict[int, _Request] = {}
        self._numbers = itertools.count()

    @property
    def where(self) -> str:
        address = self.options.address
        return f"the Ray cluster at {address}" if address else "this server's own Ray instance"

    async def attach(self, pool: RayWorkerPool) -> None:
        """Use the cluster for ``pool``, connecting first if nobody has. Raises
        ``StartupError`` when the cluster cannot be reached, ``ClusterUnavailable`` when a
        connection that worked is lost.
        """
        self._pools.add(pool)
        if self._driver is not None:
            return
        if self.lost is not None:
            raise ClusterUnavailable(self.lost)
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())
        try:
            await asyncio.shield(self._connecting)
        except BaseException:
            self._pools.discard(pool)
            if self._connecting.done():
                self._connecting = None  # the next pool tries again
            raise

    async def detach(self, pool: RayWorkerPool) -> None:
        """``pool`` is done with the cluster; the last pool closes the connection."""
        self._pools.discard(pool)
        if not self._pools:
            await self.close()

    async def _connect(self) -> None:
        if importlib.util.find_spec("ray") is None:
            raise StartupError("--executor ray needs Ray, which is not installed: pip install 'deepaas_like[ray]'")
        driver = _Driver(self.options, self._connection_lost)
        driver.errors.watch()
        try:
            message = await asyncio.wait_for(asyncio.to_thread(driver.first_message), self.options.connect_timeout)
        except BaseException as error:
            driver.process.kill()
            await self._stop(driver)
            if isinstance(error, TimeoutError):
                raise StartupError(
                    f"cannot reach {self.where} (--ray-address): no answer within "
                    f"{self.options.connect_timeout:g} s (--ray-connect-timeout)"
                ) from None
            raise
        if not isinstance(message, protocol.Connected):
            await self._stop(driver)
            if isinstance(message, protocol.Broken):
                raise StartupError(f"--executor ray: {message.message}")
            reason = (
                message.message if isinstance(message, protocol.Unreachable) else driver.death("before it connected")
            )
            raise StartupError(f"cannot reach {self.where} (--ray-address): {reason}")
        LOG.info("connected to %s: %s", self.where, message.cluster)
        self._driver = driver
        # Non-blocking whatever the loop (uvloop's add_reader makes it so, asyncio's does
        # not): a read or a write finds what it finds, and the loop never waits on the driver.
        os.set_blocking(driver.fd, False)
        asyncio.get_running_loop().add_reader(driver.fd, self._readable)
        for frame in driver.frames:
            self._deliver(protocol.decode(framing.loads(frame)))
        driver.frames.clear()

    async def _stop(self, driver: _Driver) -> None:
        """End ``driver`` (no longer watched by the loop) and read the last of its stderr."""
        await asyncio.to_thread(driver.close)
        driver.errors.close()

    def _readable(self) -> None:
        # One read per readiness, which takes what has arrived: a message that has not fully
        # arrived stays in the reader until the rest comes (a batch's answer may be megabytes).
        driver = self._driver
        assert driver is not None
        frames = driver.reader.read(driver.fd)  # a would-block is no frame, not a lost connection
        if frames is None:
            self._connection_lost()
            return
        for frame in frames:
            try:
                message = protocol.decode(framing.loads(frame))
            except Exception:  # noqa: BLE001 - one message that cannot be read here, not the connection
                LOG.exception("a message of the Ray driver cannot be read")
                continue
            self._deliver(message)

    def _deliver(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.Died):
            pool = self._owners.get(message.replica)
            if pool is not None:
                pool.replica_died(message.replica, message.message)
            return
        assert isinstance(message, protocol.Numbered), message
        answer = message.message
        if isinstance(answer, protocol.Progress):
            request = self._requests.get(message.number)
            if request is not None and request.on_progress is not None:
                request.on_progress(answer.fraction, answer.message, answer.metrics, answer.step)
            return
        request = self._requests.pop(message.number, None)
        if request is not None and not request.future.done():
            request.future.set_result(answer)  # type: ignore[arg-type]

    def _send(self, message: protocol.Message) -> None:
        """Write ``message`` to the driver without waiting: what its socket cannot take now
        is written when it can (in order). A connection found broken is lost. Raises what
        pickling ``message`` raises.
        """
        driver = self._driver
        if driver is None:
            return
        try:
            driver.writer.send(protocol.encode(message))
        except OSError:
            self._connection_lost()

    async def request(
        self, request: protocol.DriverRequest, on_progress: ProgressCallback | None = None
    ) -> protocol.DriverAnswer:
        """Send ``request`` to the driver and wait for its answer (see
        :mod:`~deepaas_like.workers.protocol`); ``on_progress`` receives a call's progress
        reports. Raises ``ClusterUnavailable``.
        """
        if self._driver is None:
            raise ClusterUnavailable(self.lost or f"{self.where} is not connected")
        number = next(self._numbers)
        future: asyncio.Future[protocol.DriverAnswer] = asyncio.get_running_loop().create_future()
        self._requests[number] = _Request(future, on_progress)
        try:
            self._send(protocol.Numbered(number, request))  # a lost connection fails the future
            return await future
        finally:
            self._requests.pop(number, None)

    def kill(self, replica: str) -> None:
        """Kill ``replica`` (``ray.kill``), without waiting; its calls fail."""
        self._send(protocol.Kill(replica))

    def own(self, replica: str, pool: RayWorkerPool | None) -> None:
        """``pool`` is told of the death of ``replica`` (None: nobody is any more)."""
        if pool is None:
            self._owners.pop(replica, None)
        else:
            self._owners[replica] = pool

    def _unwatch(self, driver: _Driver) -> None:
        asyncio.get_running_loop().remove_reader(driver.fd)
        driver.writer.unwatch()

    def _connection_lost(self) -> None:
        driver, self._driver = self._driver, None
        assert driver is not None
        self._unwatch(driver)
        driver.process.join(timeout=1)
        driver.errors.read()
        self.lost = (
            f"{self.where} cannot be reached: the connection was lost (the Ray driver process ended with "
            f"exit code {driver.process.exitcode}; a head silent for {self.options.head_timeout:g} s, "
            f"--ray-head-timeout, ends it); reconnecting every {self.options.reconnect_interval:g} s"
        )
        tail = driver.errors.tail()
        LOG.error("%s%s", self.lost, f"; its last lines on standard error: {tail}" if tail else "")
        requests, self._requests = self._requests, {}
        for request in requests.values():
            if not request.future.done():
                request.future.set_exception(ClusterUnavailable(self.lost))
        self._owners.clear()
        for pool in list(self._pools):
            pool.cluster_lost(self.lost)
        self._reconnecting = asyncio.create_task(self._reconnect(driver))

    async def _reconnect(self, old: _Driver) -> None:
        await self._stop(old)
        while self._pools:
            await asyncio.sleep(self.options.reconnect_interval)
            try:
                await self._connect()
            except StartupError as error:
                LOG.warning("still cannot reach %s: %s", self.where, error.message)
                continue
            self.lost = None
            for pool in list(self._pools):
                pool.cluster_back()
            return

    async def close(self) -> None:
        """Disconnect: the driver leaves and Ray removes every replica."""
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
        driver, self._driver = self._driver, None
        if driver is not None:
            self._unwatch(driver)
            await self._stop(driver)


@dataclasses.dataclass(eq=False)
class _Replica:
    id: str
    placement: Placement
    alive: bool = True
    calls: int = 0
    taken: int = 0


_replica_numbers = itertools.count(1)


class RayWorkerPool(QueuedPool[_Replica]):
    """``size`` replicas of model ``name`` on ``cluster``, for calls of ``kind``
    (``predict`` or ``train``), each reserving ``resources``. Of the ``options``, GPUs are
    Ray's to assign and there is no address-space limit (it would count Ray's shared
    object store); large results are written to ``cluster``'s results directory.

    ``timeout`` (seconds) bounds each prediction; past it the replica is killed and
    replaced. ``max_queue``: see :class:`QueuedPool`.
    """

    def __init__(
        self,
        cluster: RayCluster,
        name: str,
        kind: str = "predict",
        size: int = 1,
        resources: RayResources | None = None,
        options: WorkerOptions | None = None,
        timeout: float | None = None,
        max_queue: int = 0,
    ) -> None:
        super().__init__(name, size, max_queue)
        self.cluster = cluster
        self.kind = kind
        self.resources = resources or RayResources()
        self.options = options or WorkerOptions()
        self.timeout = timeout

    def placements(self) -> list[Placement]:
        return [replica.placement for replica in self.workers if replica.alive]

    async def start(self) -> ModelDescription:
        """Connect (the first pool) and place ``size`` replicas, each warmed. Raises
        ``StartupError`` when the cluster cannot be reached, ``PluginLoadError`` when no node
        could hold a replica (naming the resource or label missing) or one fails to load.
        """
        await self.cluster.attach(self)
        checked = await self.cluster.request(protocol.Check(self.resources.actor_options()))
        assert isinstance(checked, protocol.Checked), checked
        if checked.problem is not None:
            raise PluginLoadError(f"model {self.name!r} cannot run on the Ray cluster: {checked.problem}")
        return await super().start()

    async def run(
        self,
        hook: str,
        kwargs: dict[str, Any],
        job_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        save_to: str | None = None,
    ) -> Any:
        # While the cluster is away a request is answered 503 at once, but a job (it has
        # an id) waits for the replicas to be back rather than failing: it stays queued work.
        while job_id is not None and self._away() and not self.stopping:
            await asyncio.sleep(AWAY_POLL)
        return await super().run(hook, kwargs, job_id, on_progress, save_to)

    def _away(self) -> bool:
        return self.unavailable_error is ClusterUnavailable and self.unavailable is not None and not self.workers

    async def start_worker(self) -> _Replica:
        """A new replica, placed and warmed. Raises ``PluginLoadError``, ``ClusterUnavailable``."""
        replica_id = f"{self.name}/{self.kind}/{next(_replica_numbers)}"
        self.cluster.own(replica_id, self)
        self.starting += 1
        try:
            place = protocol.Place(
                replica_id, self.name, self.cluster.options.namespace, self.resources.actor_options(), self.options
            )
            placing = asyncio.ensure_future(self.cluster.request(place))
            done, _ = await asyncio.wait([placing], timeout=PLACEMENT_WARNING)
            if not done:
                LOG.warning(
                    "model %s: a new replica has waited %g s for a node with %s; it is placed when one has room",
                    self.name,
                    PLACEMENT_WARNING,
                    self.resources.actor_options(),
                )
            placed = await placing
        except BaseException:
            self.cluster.own(replica_id, None)
            self.cluster.kill(replica_id)
            raise
        finally:
            self.starting -= 1
        assert isinstance(placed, protocol.Placed | protocol.Unanswered), placed
        ready = pickle.loads(placed.ready) if isinstance(placed, protocol.Placed) else protocol.Failed(placed.message)
        if not isinstance(placed, protocol.Placed) or not isinstance(ready, protocol.Ready):
            self.cluster.own(replica_id, None)
            self.cluster.kill(replica_id)
            raise PluginLoadError(f"model {self.name!r} failed to start: {ready.message}")
        self.description = ready.description
        replica = _Replica(replica_id, placed.placement)
        self.workers.add(replica)
        return replica

    async def call(
        self,
        replica: _Replica,
        hook: str,
        kwargs: dict[str, Any],
        on_progress: ProgressCallback | None,
        save_to: str | None = None,
    ) -> Any:
        timeout = self.timeout if self.timeout and hook in TIMED_HOOKS else None
        call = protocol.Call(hook, kwargs, logs.request_id.get(), save_to)
        request = protocol.ReplicaCall(replica.id, call, with_progress=on_progress is not None)
        try:
            answer = await asyncio.wait_for(self.cluster.request(request, on_progress=on_progress), timeout)
        except TimeoutError:
            self.kill_worker(replica)
            raise PredictTimeout(
                f"model {self.name!r} did not answer within {self.timeout:g} s; its replica was replaced"
            ) from None
        except ClusterUnavailable:
            replica.alive = False
            raise
        if isinstance(answer, protocol.Unanswered):
            if answer.replica_died:
                replica.alive = False
            raise WorkerDied(f"model {self.name!r}: {answer.message}")
        outcome = cast(protocol.Outcome, answer)
        if out_of_memory(outcome):
            # Memory the plugin keeps (a cache, a leak) may stay exhausted: start afresh.
            LOG.warning("model %s: replica %s ran out of memory; replacing it", self.name, replica.id)
            self.kill_worker(replica)
        return protocol.value(outcome)

    def kill_worker(self, replica: _Replica) -> None:
        replica.alive = False
        self.cluster.kill(replica.id)

    async def close_worker(self, replica: _Replica) -> None:
        self.cluster.own(replica.id, None)
        self.kill_worker(replica)

    def replica_died(self, replica_id: str, message: str) -> None:
        """The driver says ``replica_id`` died between calls (a call it held learns it itself)."""
        replica = next((r for r in self.workers if r.id == replica_id), None)
        if replica is not None:
            replica.alive = False
            self.died_idle(replica, f"replica {replica_id} ({message})")

    def cluster_lost(self, message: str) -> None:
        """The connection to the cluster is lost, and with it every replica."""
        self.unavailable_error = ClusterUnavailable
        self.unavailable = f"model {self.name!r} is unavailable: {message}"
        for task in self._refills:
            task.cancel()
        for replica in self.workers:
            replica.alive = False
        self.workers.clear()
        self.wake_waiting()

    def cluster_back(self) -> None:
        """The cluster can be reached again: place the replicas anew."""
        if self.stopping:
            return
        self.unavailable = f"model {self.name!r} is unavailable: its replicas are being placed on {self.cluster.where}"
        for _ in range(self.size):
            self._refill()

    async def stop(self) -> None:
        """Remove every replica (busy ones too: the server is going away) and let go of the
        cluster (the last pool disconnects).
        """
        await super().stop()
        await self.cluster.detach(self)
