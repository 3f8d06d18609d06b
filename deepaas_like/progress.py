"""Progress reporting from plugin code: ``report(progress=0.4, message="epoch 2 of 5")``,
and metrics: ``report(metrics={"loss": 0.31, "accuracy": 0.9}, step=2)``.

Import it inside ``train`` or a long ``predict``::

    try:
        from deepaas_like.progress import report
    except ImportError:  # served by plain DEEPaaS
        def report(progress=None, message=None, metrics=None, step=None): pass

In a deepaas_like worker the values reach the job (``progress``, ``events``, ``metrics``),
its Server-Sent Events stream and, with MLflow tracking on, the training's run (one point
per metric and step); anywhere else they are logged.

A report belongs to the call (prediction or training) that was running when it was made.
In a worker, reports made while no call runs, and reports from a thread that a finished
call started and left running, are dropped: they would otherwise land in the next call's
job. Threads that existed before the call (started by ``warm()`` or at import) report for
whichever call is running.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import weakref
from collections.abc import Callable, Mapping

__all__ = ["Sender", "begin_call", "ending_call", "install", "report"]

LOG = logging.getLogger(__name__)
#: Receives (progress, message, metrics, step) of each report.
Sender = Callable[[float | None, str | None, "dict[str, float] | None", "int | None"], None]
_sender: Sender | None = None
# A plugin may report from several threads; a pipe is not thread-safe. The worker also
# sends each call's answer under this lock (see ending_call).
_lock = threading.Lock()
_tracking = False  # in a worker: reports are checked against the running call
_running = False
_before_call: list[threading.Thread] = []  # threads alive when the running call began
_leftovers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def report(
    progress: float | None = None,
    message: str | None = None,
    metrics: Mapping[str, float] | None = None,
    step: int | None = None,
) -> None:
    """Report ``progress`` (fraction done, 0..1; clamped), a log ``message`` and/or
    ``metrics`` (name -> finite number) at ``step`` (a whole number >= 0, e.g. the epoch;
    None: the job numbers its reports of metrics 0, 1, 2, ...) of the running call.

    Raises ``TypeError`` for a progress or metric that is not a number, or a step that is
    not a whole number, and ``ValueError`` for a metric that is NaN or infinite.
    """
    if progress is not None:
        if not _number(progress):
            raise TypeError(f"progress must be a number from 0 to 1, not {progress!r}")
        progress = min(max(float(progress), 0.0), 1.0)
    message = None if message is None else str(message)
    checked = None
    if metrics is not None:
        checked = {}
        for name, value in dict(metrics).items():
            if not _number(value):
                raise TypeError(f"metric {name!r} must be a number, not {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"metric {name!r} must be finite, not {value!r}")
            checked[str(name)] = float(value)
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise TypeError(f"step must be a whole number >= 0, not {step!r}")
    if _sender is None:
        LOG.info("progress %s %s%s", progress, message or "", f" metrics {checked} step {step}" if checked else "")
        return
    with _lock:
        if _tracking and (not _running or threading.current_thread() in _leftovers):
            LOG.debug("progress reported outside the call it belongs to, dropped: %s %s", progress, message or "")
            return
        _sender(progress, message, checked, step)


def install(sender: Sender | None, track_calls: bool = False) -> None:
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
