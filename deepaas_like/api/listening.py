"""The listening socket: aiohttp's server behind a bound on open connections.

aiohttp has no connection limit. Without one, slow or idle clients can hold every file
descriptor the process may open, and then nothing works: not the job database, not the
uploads, not the workers' pipes. Past ``limit`` open connections, a new one is answered
503 with ``Retry-After`` and closed at once, and the refusals are logged (rate-limited by
:class:`deepaas_like.logs.RepeatFilter`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource

from aiohttp import web
from yarl import URL

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


class _Refused(asyncio.Protocol):
    """Answers 503 and closes, without reading the request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        LOG.warning("refused a connection: the limit of open connections is reached (max-connections)")
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class LimitedTCPSite(web.BaseSite):
    """A TCP site (``host``, ``port``) holding at most ``limit`` open connections."""

    __slots__ = ("_host", "_port", "_limit")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limit: int, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._limit = limit

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connection, self._host, self._port, backlog=self._backlog, reuse_address=True
        )

    def _connection(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self._limit:
            return _Refused()
        return server()
