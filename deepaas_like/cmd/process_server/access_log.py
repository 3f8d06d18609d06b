"""The access log: one line per HTTP request, logged in blocks off the request's path.

aiohttp's own ``AccessLogger`` interprets its format string and logs a record for every
request as it ends; on the trivial benchmark that cost about a fifth of the requests/s. Here
a request only keeps its line's values; they are logged together at most
:data:`FLUSH_SECONDS` later (as nginx's ``access_log ... buffer= flush=`` writes in blocks),
and at shutdown. The line (aiohttp's ``%a "%r" %s %b %Tf "%{User-Agent}i" %{X-Request-ID}o``)::

    127.0.0.1 "POST /v2/models/demo/predict/ HTTP/1.1" 200 262 0.002698 "curl/8.5.0" 9c4791ce...

client address, request line, status, body bytes, seconds, User-Agent, the response's
X-Request-ID; the record's time is the request's end and its ``request_id`` the request's.
With ``--log-json`` the values are also fields of the JSON object (:data:`FIELDS`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import hdrs
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

__all__ = ["FIELDS", "FLUSH_SECONDS", "TEMPLATE", "AccessLines", "AccessLogger", "access_logger_class"]

#: The line's template; its values in this order: :data:`FIELDS`.
TEMPLATE = '%s "%s %s HTTP/%d.%d" %d %d %.6f "%s" %s'
FIELDS = (
    "remote_address",
    "method",
    "path",
    "http_major",
    "http_minor",
    "status",
    "response_size",
    "seconds",
    "user_agent",
    "request_id",
)
#: Longest a line waits before it is logged, in seconds. Measured on 2 cores: with 0.2 the
#: blocks (about 350 lines at 1800 requests/s) held the event loop long enough to take the p99
#: of one client from 1.4 to 3.3 ms; with 0.01 it stays at 1.35 ms, requests/s unchanged.
FLUSH_SECONDS = 0.01


class AccessLines:
    """Access lines waiting to be logged to ``logger`` at INFO. With ``structured`` each
    record also carries the values as attributes named by :data:`FIELDS` (JSON log lines).
    """

    def __init__(self, logger: logging.Logger, structured: bool = False) -> None:
        self.logger = logger
        self.structured = structured
        self._pending: list[tuple[float, tuple[Any, ...]]] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def add(self, values: tuple[Any, ...]) -> None:
        """Keep one line (:data:`FIELDS`' values) to be logged within :data:`FLUSH_SECONDS`."""
        self._pending.append((time.time(), values))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Log every waiting line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        logger = self.logger
        for created, values in pending:
            extra = dict(zip(FIELDS, values, strict=True)) if self.structured else None
            # makeRecord, not info(): no search of the stack for the caller's file and line.
            record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, TEMPLATE, values, None, None, extra)
            record.created = created
            record.msecs = (created - int(created)) * 1000
            record.request_id = values[-1]  # the line's own request (logs.RequestIdFilter keeps it)
            logger.handle(record)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's ``access_log_class`` (see :func:`access_logger_class`); the format string
    aiohttp passes is not used.
    """

    lines: AccessLines

    @property
    def enabled(self) -> bool:
        return self.lines.enabled

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        request_id = response.headers.get("X-Request-ID", "-")
        self.lines.add(_values(request, response.status, response.body_length, time, request_id))

    def log_unanswered(self, request: BaseRequest, status: int, seconds: float, request_id: str) -> None:
        """Keep the line of a request aiohttp logs none for: one whose handler was cancelled
        because its client closed the connection (``status`` 499, told by
        :func:`deepaas_like.api.metrics.metrics_middleware`). The size is what had been sent
        by then (an event stream's events).
        """
        if self.enabled:
            self.lines.add(_values(request, status, request.writer.output_size, seconds, request_id))


def _values(request: BaseRequest, status: int, size: int, seconds: float, request_id: str) -> tuple[Any, ...]:
    """One line's values, in the order of :data:`FIELDS`."""
    version = request.version
    return (
        request.remote or "-",
        request.method,
        request.path_qs,
        version.major,
        version.minor,
        status,
        size,
        seconds,
        request.headers.get(hdrs.USER_AGENT, "-"),
        request_id,
    )


def access_logger_class(lines: AccessLines) -> type[AccessLogger]:
    """The ``access_log_class`` to give aiohttp: its loggers keep their lines in ``lines``."""
    return type("AccessLogger", (AccessLogger,), {"lines": lines})
