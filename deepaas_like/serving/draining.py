"""Shutdown within its timeout: predictions still waiting for a model when the shutdown
timeout is nearly over are answered 503 with ``Retry-After``, not dropped with their
connections.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from deepaas_like.exceptions import ShuttingDown

__all__ = ["ANSWER_TIME", "Drain"]

#: Time kept, at the end of the shutdown timeout, to send the 503 answers: a tenth of the
#: timeout, at most this many seconds.
ANSWER_TIME = 1.0


class Drain:
    """Requests waiting for a model, ended with :class:`ShuttingDown` when the server must stop.

    Handlers wrap the wait in ``with drain:``; :meth:`start` is called once the server
    stops accepting connections.
    """

    def __init__(self) -> None:
        self._waiting: set[asyncio.Task[object]] = set()
        self._ended: set[asyncio.Task[object]] = set()
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None

    def start(self, timeout: float) -> None:
        """The server stops; whatever still waits ``timeout`` seconds from now, less the
        time to answer, is answered 503.
        """
        if self._timer is None:
            delay = timeout - min(ANSWER_TIME, timeout / 10)
            self._timer = asyncio.get_running_loop().call_later(delay, self.expire)

    def expire(self) -> None:
        """Answer every waiting request now, and any that comes later at once."""
        self._expired = True
        for task in self._waiting:
            self._ended.add(task)
            task.cancel()

    def __enter__(self) -> None:
        if self._expired:
            raise ShuttingDown("the server is shutting down; try again shortly")
        task = asyncio.current_task()
        if task is not None:
            self._waiting.add(task)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        task = asyncio.current_task()
        if task is None:
            return
        self._waiting.discard(task)
        if task in self._ended:
            self._ended.discard(task)
            task.uncancel()  # our cancel, answered here: the response is still written
            if kind is asyncio.CancelledError:
                raise ShuttingDown(
                    "the server is shutting down and cannot finish this request in time; try again shortly"
                ) from None
