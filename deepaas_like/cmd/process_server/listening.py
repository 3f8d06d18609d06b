"""The listening socket: aiohttp's server behind a bound on open connections.

aiohttp has no connection limit. Without one, slow or idle clients can hold every file
descriptor the process may open, and then nothing works: not the job database, not the
uploads, not the workers' pipes. Past ``limit`` open connections, a new one is answered
503 with ``Retry-After`` and closed at once, and the refusals are logged (rate-limited by
:class:`deepaas_like.logs.RepeatFilter`).

Several server processes (``--server-processes``) accept on one socket, bound by the
supervisor before it forks them (:class:`SharedSocket`); each new connection goes to the
process that holds the fewest (:meth:`LimitedTCPSite._accept`). Kept after measuring
aiohttp's ``TCPSite(reuse_port=True)``, a listening socket per process with ``SO_REUSEPORT``
(issue 27, item 6; ``benchmarks/accept_balancing.py``, 2 processes, trivial plugin, 2 busy
cores, 10 alternated rounds): speed was alike (8 keep-alive clients: 1174 here against 1224
requests/s, p99 52.1 against 47.6 ms; 64: 1436 against 1521, p99 194 against 188 ms), and
this split 8 connections 4/4 in 7 rounds of 10 where the kernel's hash gave 3/5 or 2/6. What
decided: with ``SO_REUSEPORT`` the connections waiting in the queue of a process that dies are
reset (each process has its own queue; Linux moves them only with the sysctl
``net.ipv4.tcp_migrate_req``, off by default), and a request sent right after a process was
killed failed with "connection reset" in 5 of 12 runs of the restart test in
``tests/cmd/test_server_processes.py`` (the balancer: 0 of 6). On one shared socket they wait
for the processes left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import resource
import socket
import struct
from typing import cast

from aiohttp import web
from yarl import URL

__all__ = [
    "DEFER_SECONDS",
    "LINGER",
    "MOST_CONNECTIONS",
    "RESERVED_DESCRIPTORS",
    "LimitedTCPSite",
    "SharedSocket",
    "bound_socket",
    "default_connection_limit",
    "port_free",
]

LOG = logging.getLogger(__name__)
#: File descriptors kept free of connections, for the job database, uploads, result files,
#: the workers' pipes and the log.
RESERVED_DESCRIPTORS = 256
MOST_CONNECTIONS = 10_000


def default_connection_limit() -> int:
    """How many connections the process can hold and still work: its file-descriptor limit
    (raised to the hard limit first, as far as 65536) less :data:`RESERVED_DESCRIPTORS`, at
    least 16, at most :data:`MOST_CONNECTIONS`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return MOST_CONNECTIONS
    return max(16, min(soft - RESERVED_DESCRIPTORS, MOST_CONNECTIONS))


_BUSY_BODY = json.dumps({"message": "the server has too many open connections; try again shortly"}).encode() + b"\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


#: Seconds a refused connection is kept to read and drop what the client sends, before it is
#: closed regardless.
LINGER = 1.0


class _Refused(asyncio.Protocol):
    """Answers 503 and ends the connection without handling the request.

    The request's bytes are read and dropped until the client closes its side (at most
    :data:`LINGER` seconds): a socket closed with unread bytes is reset by the kernel, and the
    reset can reach the client before it has read the answer (it did with uvloop).
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        LOG.warning("refused a connection: the limit of open connections is reached (max-connections)")
        stream = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        stream.write(_BUSY)
        if stream.can_write_eof():
            stream.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER, stream.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (its first address), not listening yet: a
    server listens once it can answer (the server processes once they all can), so that
    until then connections are refused, as by one server starting, rather than left waiting.

    Raises OSError when the address is in use or not one of this host's.
    """
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def port_free(host: str, port: int) -> bool:
    """Whether ``host``:``port`` can be listened on now."""
    try:
        with bound_socket(host, port) as sock:
            sock.listen()
    except OSError:
        return False
    return True


class SharedSocket:
    """A listening socket shared by ``processes`` server processes, with the number of open
    connections of each in memory they share (an anonymous shared mapping, made before they
    are forked). ``index`` is this process's place, set in each process after the fork.
    """

    _SLOT = struct.Struct("q")

    def __init__(self, sock: socket.socket, processes: int) -> None:
        self.sock = sock
        self.processes = processes
        self.index = 0
        self._counts = mmap.mmap(-1, self._SLOT.size * processes)

    def record(self, connections: int, index: int | None = None) -> None:
        """This process (or the one at ``index``) now holds ``connections`` open connections."""
        self._SLOT.pack_into(self._counts, self._SLOT.size * (self.index if index is None else index), connections)

    def gone(self, index: int) -> None:
        """The process at ``index`` ended: none is left to it until it records again."""
        self.record(2**62, index)

    def fewest_elsewhere(self) -> int:
        """The fewest connections another process holds (as each last recorded them)."""
        return min(
            self._SLOT.unpack_from(self._counts, self._SLOT.size * i)[0]
            for i in range(self.processes)
            if i != self.index
        )


#: Seconds a process that holds more connections than another leaves a new connection for
#: the other to take, before it takes it itself (the other may be busy, or gone).
DEFER_SECONDS = 0.002


class LimitedTCPSite(web.BaseSite):
    """A TCP site (``host``, ``port``) holding at most ``limit`` open connections; on
    ``shared``, a socket that several server processes accept on, or on ``sock``, a socket
    bound to that address already, when given.
    """

    __slots__ = ("_host", "_port", "_limit", "_shared", "_sock", "_starting", "_deferred", "_accepting")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limit: int,
        backlog: int = 128,
        shared: SharedSocket | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._limit = limit
        self._shared = shared
        self._sock = sock
        self._starting: set[asyncio.Task[object]] = set()
        self._deferred = False
        self._accepting = False

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(self._connection, sock=self._sock, backlog=self._backlog)
            return
        if self._shared is None:
            self._server = await loop.create_server(
                self._connection, self._host, self._port, backlog=self._backlog, reuse_address=True
            )
            return
        sock = self._shared.sock
        sock.setblocking(False)
        sock.listen(self._backlog)
        loop.add_reader(sock.fileno(), self._accept)
        self._accepting = True

    async def stop(self) -> None:
        if self._shared is not None:
            self._accepting = False
            asyncio.get_running_loop().remove_reader(self._shared.sock.fileno())
        await super().stop()

    def _accept(self) -> None:
        """Take one connection from the socket shared with the other server processes,
        keeping their shares of the open connections even.

        Every process is woken for a new connection. One that holds more connections than
        another leaves it to that one for :data:`DEFER_SECONDS`, then takes it if it is
        still there; and each takes one per wake-up, not all that wait as asyncio's server
        does, so that a burst (64 connections opened at once) is split between them.
        """
        shared = self._shared
        server = self._runner.server
        assert shared is not None and server is not None
        loop = asyncio.get_running_loop()
        shared.record(len(server.connections))
        if not self._deferred and len(server.connections) > shared.fewest_elsewhere():
            self._pause(DEFER_SECONDS)
            self._deferred = True
            return
        self._deferred = False
        try:
            connection, _ = shared.sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another process took it
        except OSError as error:  # out of descriptors or memory: pause, as asyncio's server does
            LOG.warning("cannot accept a connection (%s); trying again in 1 s", error.strerror or error)
            self._pause(1.0)
            return
        shared.record(len(server.connections) + 1)
        connection.setblocking(False)
        # Small answers go out at once, whichever loop makes the transport (asyncio's sets it).
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(loop.connect_accepted_socket(self._connection, connection))
        self._starting.add(task)
        task.add_done_callback(self._started)

    def _pause(self, seconds: float) -> None:
        assert self._shared is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._shared.sock.fileno())
        loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        if self._accepting and self._shared is not None:
            asyncio.get_running_loop().add_reader(self._shared.sock.fileno(), self._accept)

    def _started(self, task: asyncio.Task[object]) -> None:
        self._starting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.warning("a connection could not be set up: %s", task.exception())

    def _connection(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self._limit:
            return _Refused()
        return server()
