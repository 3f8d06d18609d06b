"""Progress reporting from plugin code: ``report(progress=0.4, message="epoch 2 of 5")``.

Import it inside ``train`` or a long ``predict``::

    try:
        from deepaas_like.progress import report
    except ImportError:  # served by plain DEEPaaS
        def report(progress=None, message=None): pass

In a deepaas_like worker the values reach the job (``progress``, ``events``) and its
Server-Sent Events stream; anywhere else they are logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

LOG = logging.getLogger(__name__)
_sender: Callable[[float | None, str | None], None] | None = None
_lock = threading.Lock()  # a plugin may report from several threads; a pipe is not thread-safe


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
        _sender(progress, message)


def install(sender: Callable[[float | None, str | None], None] | None) -> None:
    """Where :func:`report` sends to (the worker's pipe); None to log instead."""
    global _sender
    _sender = sender
