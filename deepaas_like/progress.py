"""Progress reporting from plugin code: ``report(progress=0.4, message="epoch 2 of 5")``.

Import it inside ``train`` or a long ``predict``::

    try:
        from deepaas_like.progress import report
    except ImportError:  # served by plain DEEPaaS
        def report(progress=None, message=None): pass

In a deepaas_like worker the values reach the job (``progress``, ``events``) and its
Server-Sent Events stream; anywhere else they are logged.

A report belongs to the call (prediction or training) that was running when it was made.
In a worker, reports made while no call runs, and reports from a thread that a finished
call started and left running, are dropped: they would otherwise land in the next call's
job. Threads that existed before the call (started by ``warm()`` or at import) report for
whichever call is running.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable

LOG = logging.getLogger(__name__)
_sender: Callable[[float | None, str | None], None] | None = None
# A plugin may report from several threads; a pipe is not thread-safe. The worker also
# sends each call's answer under this lock (see ending_call).
_lock = threading.Lock()
_tracking = False  # in a worker: reports are checked against the running call
_running = False
_before_call: list[threading.Thread] = []  # threads alive when the running call began
_leftovers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def report(progress: float | None = None, message: str | None = None) -> None:
    """Report ``progress`` (fraction done, 0..1; clamped) and/or a log ``message`` of the
    running call. Raises ``TypeError`` when ``progress`` is not a number.
    """
    if progress is not None:
        if isinstance(progress, bool) or not isinstance(progress, (int, float)):
            raise TypeError(f"progress must be a number from 0 to 1, not {progress!r}")
        progress = min(max(float(progress), 0.0), 1.0)
    message = None if message is None else str(message)
    if _sender is None:
        LOG.info("progress %s %s", progress, message or "")
        return
    with _lock:
        if _tracking and (not _running or threading.current_thread() in _leftovers):
            LOG.debug("progress reported outside the call it belongs to, dropped: %s %s", progress, message or "")
            return
        _sender(progress, message)


def install(sender: Callable[[float | None, str | None], None] | None, track_calls: bool = False) -> None:
    """Where :func:`report` sends to (the worker's pipe); None to log instead.

    With ``track_calls`` (a worker), reports count only between :func:`begin_call` and
    :func:`ending_call`, and not from threads an earlier call left running.
    """
    global _sender, _tracking
    _sender = sender
    _tracking = track_calls


def begin_call() -> None:
    """A call starts: reports count from now on."""
    global _running, _before_call
    with _lock:
        _before_call = threading.enumerate()
        _running = True


class _EndingCall:
    """``with`` block that ends the running call (no contextlib generator: this runs once
    per call, and is cheaper as a plain class)."""

    def __enter__(self) -> None:
        global _running, _before_call
        _lock.acquire()
        try:
            _running = False
            threads = threading.enumerate()
            if len(threads) > 1:  # else only the call's own thread is left
                _leftovers.update(thread for thread in threads if thread not in _before_call)
            _before_call = []
        except BaseException:
            _lock.release()
            raise

    def __exit__(self, *exc_info: object) -> None:
        _lock.release()


_ENDING_CALL = _EndingCall()


def ending_call() -> contextlib.AbstractContextManager[None]:
    """End the running call; send its answer inside the ``with`` block. The block holds the
    lock that reports are sent under, so no report of this call can follow its answer;
    threads the call started and left running are not heard from again.
    """
    return _ENDING_CALL
