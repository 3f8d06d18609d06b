"""When a call is sent again: the one retry policy of :class:`Client` and
:class:`AsyncClient`.

A request that cannot have run (the connection was refused, or the server answered 503 or
429 with ``Retry-After``) is always retried. A request that may have run is retried only
when running it twice does no harm: reads, cancels, and the POSTs that start a job, which
carry an ``Idempotency-Key`` so that the server answers a retry with the job the first try
made (doc/http-api.rst, Idempotency-Key). A synchronous prediction is not: it may have run.
"""

from __future__ import annotations

import email.utils
import enum
import time

import httpx

__all__ = ["MAX_RETRY_AFTER", "Retry", "delay_after_answer", "delay_after_error"]

#: Seconds: a longer ``Retry-After`` is not waited for (the error is raised instead).
MAX_RETRY_AFTER = 60.0
#: Seconds before the first retry after a transport error; doubled at each further retry.
FIRST_BACKOFF = 0.5


class Retry(enum.Enum):
    """How a request may be retried."""

    #: Safe to send twice: GET, DELETE of a job, a POST with an ``Idempotency-Key``.
    SAFE = "safe"
    #: Retried only when it cannot have reached the plugin (predict, promote, rollback).
    UNSENT = "unsent"


def delay_after_error(retry: Retry, error: httpx.TransportError, attempt: int, retries: int) -> float | None:
    """Seconds to wait before try ``attempt + 1`` after ``error`` on try ``attempt``
    (0-based), or None to give up (``retries`` tries made again, or unsafe to resend).
    """
    if attempt >= retries:
        return None
    if retry is Retry.UNSENT and not isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
        return None
    return FIRST_BACKOFF * 2**attempt


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date (RFC 9110, 10.2.3)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def delay_after_answer(response: httpx.Response, attempt: int, retries: int) -> float | None:
    """Seconds to wait before sending again after ``response``, or None to take it: a 503
    or 429 that says ``Retry-After`` (at most :data:`MAX_RETRY_AFTER`) was refused before
    anything ran, whatever the request.
    """
    if attempt >= retries or response.status_code not in (429, 503):
        return None
    delay = _retry_after(response.headers.get("Retry-After"))
    if delay is None or delay > MAX_RETRY_AFTER:
        return None
    return delay
