"""What following a job's events stream takes, on either client: when to reconnect a
stream that dropped, the bookkeeping of :meth:`Job.wait` (progress display, deadline), and
a look at the clock at each chunk of the stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

from deepaas_like.client.errors import TransportError
from deepaas_like.client.progress import ProgressDisplay
from deepaas_like.client.retries import FIRST_BACKOFF

__all__ = ["Reconnects", "Waiting", "no_deadline", "watched", "watched_async"]


class Reconnects:
    """Reconnects of one events stream. A stream ends without its ``end`` event when the
    server stops or the connection drops; it is opened again (the server sends the job as
    it is now first), up to ``retries`` times in a row; an event received resets the count.
    """

    def __init__(self, url: str, retries: int) -> None:
        self.url = url
        self.retries = retries
        self.failures = 0

    def received(self) -> None:
        """An event came: the connection works."""
        self.failures = 0

    def delay(self, error: httpx.TransportError | None) -> float:
        """Seconds to wait before opening the stream again after it ended without ``end``
        (``error``: why, None when it just closed). Raises :class:`TransportError` once
        ``retries`` reconnects in a row failed.
        """
        if self.failures >= self.retries:
            reason = f"{type(error).__name__}: {error}" if error else "the stream ended before the job did"
            raise TransportError(0, f"lost the events stream of {self.url}: {reason}") from error
        self.failures += 1
        return FIRST_BACKOFF * 2 ** (self.failures - 1)


class Waiting:
    """One :meth:`Job.wait`: shows each job object on the display (``progress``: True for
    a :class:`ProgressDisplay` on stderr, or one to use) and says when ``timeout`` seconds
    (None: no limit) are over.
    """

    def __init__(self, progress: bool | ProgressDisplay, timeout: float | None, read_timeout: float | None) -> None:
        self.own_display = progress is True
        self.display = ProgressDisplay() if progress is True else (progress or None)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.read_timeout = read_timeout

    def seen(self, job: dict[str, Any]) -> None:
        """Show ``job``; raises ``TimeoutError`` once the deadline is past."""
        if self.display is not None:
            self.display.update(job)
        self.check()

    def check(self) -> None:
        """Raise ``TimeoutError`` once the deadline is past."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeoutError(f"the job did not end within {self.timeout} s")

    def stream_timeout(self) -> httpx.Timeout:
        """The events stream's timeouts: the client's, the read timeout no longer than what
        is left (the server sends a comment every 15 s, so a longer silence is a lost
        connection).
        """
        read = self.read_timeout
        if self.deadline is not None:
            left = max(0.1, self.deadline - time.monotonic())
            read = left if read is None else min(read, left)
        return httpx.Timeout(self.read_timeout, read=read)

    def close(self) -> None:
        """End the display this wait made."""
        if self.own_display and self.display is not None:
            self.display.close()


def no_deadline() -> None:
    """The check of a stream followed without a deadline (:meth:`Job.events`)."""


class _Watched(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes], check: Callable[[], None]) -> None:
        self.chunks, self.check = chunks, check

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.check()
            yield chunk


class _AsyncWatched(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes], check: Callable[[], None]) -> None:
        self.chunks, self.check = chunks, check

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            self.check()
            yield chunk


def _headers(response: httpx.Response) -> dict[str, str]:
    return {"Content-Type": response.headers.get("Content-Type", "")}


def watched(response: httpx.Response, check: Callable[[], None]) -> httpx.Response:
    """``response``, an events stream, calling ``check`` at each chunk it reads. httpx-sse
    passes over comments, and the server's keep-alive (a comment every 15 s) is what shows
    time passing on a job that reports nothing: ``check`` sees it.
    """
    return httpx.Response(
        response.status_code, headers=_headers(response), stream=_Watched(response.iter_bytes(), check)
    )


def watched_async(response: httpx.Response, check: Callable[[], None]) -> httpx.Response:
    """:func:`watched` for an ``httpx.AsyncClient``'s response."""
    stream = _AsyncWatched(response.aiter_bytes(), check)
    return httpx.Response(response.status_code, headers=_headers(response), stream=stream)
