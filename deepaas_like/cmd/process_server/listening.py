"""The listening socket: aiohttp's server behind a bound on open connections.

aiohttp has no connection limit. Without one, slow or idle clients can hold every file
descriptor the process may open, and then nothing works: not the job database, not the
uploads, not the workers' pipes. Past ``limit`` open connections, a new one is answered
503 with ``Retry-After`` and closed at once, and the refusals are logged (rate-limited by
:class:`deepaas_like.logs.RepeatFilter`).

Several server processes (``--server-processes``) each listen on a socket of their own
bound with ``SO_REUSEPORT``: the kernel gives each new connection to one of them, by a hash
of its addresses and ports. It replaced an accept balancer of our own (one socket shared by
the processes, their connection counts in shared memory, a process holding more connections
than another deferring a new one to it for 2 ms), about 100 lines. Measured in one run
(``benchmarks/accept_balancing.py``, 2 processes, trivial plugin, 2 busy cores, 10
alternated rounds): at 8 keep-alive clients 1224 against 1174 requests/s, p99 47.6 against
52.1 ms; at 64, 1521 against 1436, p99 188 against 194 ms. The balancer split 8 connections
4/4 in 7 rounds of 10 where the hash gave 3/5 or 2/6, which showed in neither figure. What
the shared socket did that this does not: connections a process had not accepted when it
ended went to the others; now they are reset (see ``doc/configuration.rst``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
from typing import cast

from aiohttp import web
from yarl import URL

__all__ = [
    "LINGER",
    "MOST_CONNECTIONS",
    "RESERVED_DESCRIPTORS",
    "LimitedTCPSite",
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


def bound_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (its first address), not listening yet: a
    server listens once it can answer, so that until then connections are refused rather
    than left waiting. With ``reuse_port``, other sockets of this user bound with it may
    listen on the address too (``SO_REUSEPORT``: several server processes).

    Raises OSError when the address is in use or not one of this host's.
    """
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def port_free(host: str, port: int) -> bool:
    """Whether ``host``:``port`` can be listened on now by a socket without ``SO_REUSEPORT``
    (so not while any other server listens there, with ``SO_REUSEPORT`` or not)."""
    try:
        with bound_socket(host, port) as sock:
            sock.listen()
    except OSError:
        return False
    return True


class LimitedTCPSite(web.BaseSite):
    """A TCP site listening on ``sock`` (bound to ``host``:``port`` already) that holds at
    most ``limit`` open connections.
    """

    __slots__ = ("_host", "_port", "_limit", "_sock")

    def __init__(
        self, runner: web.BaseRunner, sock: socket.socket, host: str, port: int, limit: int, backlog: int = 128
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._sock = sock
        self._host = host
        self._port = port
        self._limit = limit

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connection, sock=self._sock, backlog=self._backlog)

    def _connection(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self._limit:
            return _Refused()
        return server()
