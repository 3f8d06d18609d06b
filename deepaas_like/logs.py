"""Logging: every line carries the request id of the call it belongs to, in the server and
in the worker running the plugin; ``--log-json`` writes one JSON object per line.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import sys
import time
import uuid
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = ["JSON_FIELDS", "RepeatFilter", "RequestIdFilter", "TEXT_FORMAT", "new_request_id", "request_id", "setup"]

#: The id of the request being handled ("-" outside a request).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(process)d %(levelname)s %(name)s %(request_id)s %(message)s"

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Request ids: a random prefix per process and a counter, 32 hex characters, unique per
# server without a system call per request (uuid4 reads the OS's random source).
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count()


def new_request_id(given: str | None = None) -> str:
    """The id of a new request: ``given`` (the client's ``X-Request-ID``) when it is 1 to 128
    characters of ``A-Za-z0-9._:-``, else a fresh one.
    """
    if given and _VALID_REQUEST_ID.match(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` from :data:`request_id`, unless the record has its own
    (an access line, logged after its request's context ended).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in record.__dict__:
            record.request_id = request_id.get()
        return True


class RepeatFilter(logging.Filter):
    """Lets through at most ``burst`` warnings or errors of one kind (logger, level and
    message template) per ``window`` seconds, then one line saying how many were dropped.

    A fault that repeats per connection or per request (the file-descriptor limit reached,
    a database away) must not flood the log and take the CPU with it. Records below
    WARNING (access lines among them) always pass.
    """

    def __init__(self, burst: int = 10, window: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._seen: dict[tuple[str, int, object], list[float]] = {}  # kind -> [window start, count]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.msg if isinstance(record.msg, str) else type(record.msg).__name__)
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start >= self.window:
            if count > self.burst:
                record.msg = (
                    f"{record.msg} [{count - self.burst} more like it in the last {self.window:g} s were not logged]"
                )
            start, count = now, 0
        self._seen[key] = [start, count + 1]
        if len(self._seen) > 1000:  # bounded: messages with varying templates come and go
            self._seen.clear()
        return count < self.burst


def setup(debug: bool = False, json_lines: bool = False, stream: TextIO | None = None) -> None:
    """Configure the root logger of this process (server or worker) to write to ``stream``
    (default: stderr), with repeated warnings and errors rate-limited (:class:`RepeatFilter`).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RepeatFilter())
    handler.setFormatter(JsonFormatter(JSON_FIELDS) if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
