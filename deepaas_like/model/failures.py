"""What a plugin's hook raised, as the client should see it.

Plugins built from the ai4os module template (deephdc/demo_app, ai4os-yolov8-torch) wrap
every error of a hook in an aiohttp ``HTTPException`` whose ``reason`` is the exception
itself: ``raise HTTPBadRequest(reason=e)``. aiohttp before 3.10.6 builds that exception (its
reason is then the exception object); since 3.10.6 (aiohttp PR 9167, which refuses a reason
holding a line break, tested with ``in``) building it raises ``TypeError: argument of type
'Exception' is not iterable`` inside the plugin. Either way the plugin meant: "this
exception, with this HTTP status". :func:`failure_of` recovers both.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from typing import Any

__all__ = ["HookFailure", "failure_of"]

#: The status of a plugin error that names none (or one that is not an error status).
DEFAULT_STATUS = 500


@dataclasses.dataclass(frozen=True)
class HookFailure:
    """A hook's error: the exception's class name and message, the HTTP status the plugin
    chose (400 to 599; else 500), and the traceback of the exception that caused it.
    """

    error_type: str
    message: str
    status: int = DEFAULT_STATUS
    traceback: str = ""


def failure_of(error: BaseException) -> tuple[HookFailure, BaseException]:
    """The failure ``error`` stands for, and the exception that caused it (whose traceback to
    log): for an aiohttp ``HTTPException`` (raised, or failing to be built) whose reason is an
    exception, that exception with the ``HTTPException``'s status; for one whose reason is
    text, the ``HTTPException`` with its reason; any other exception as it is, status 500.
    """
    http_exception = _aiohttp_http_exception()
    if http_exception is None:
        return _plain(error), error
    wrapper, reason, refused = error, getattr(error, "reason", None), False
    if not isinstance(error, http_exception):
        wrapper, reason = _being_built(error, http_exception)
        refused = wrapper is not None
    if wrapper is None:
        return _plain(error), error
    cause = reason if isinstance(reason, BaseException) else None
    if cause is None and refused:
        cause = error.__context__  # the exception the plugin was handling: its real error
    if cause is not None:
        return _plain(cause, _status(wrapper)), cause
    message = str(reason) if reason is not None else str(error)
    return HookFailure(type(wrapper).__name__, message, _status(wrapper), _traceback(error)), error


def _plain(error: BaseException, status: int = DEFAULT_STATUS) -> HookFailure:
    return HookFailure(type(error).__name__, str(error), status, _traceback(error))


def _traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def _aiohttp_http_exception() -> type[BaseException] | None:
    # Only a plugin that imported aiohttp can raise its exceptions: no import here.
    module = sys.modules.get("aiohttp.web_exceptions")
    return getattr(module, "HTTPException", None)


def _being_built(error: BaseException, http_exception: type[BaseException]) -> tuple[Any, Any]:
    """The ``HTTPException`` that ``error`` was raised while building (aiohttp's own code
    refused its arguments), and the reason it was given; ``(None, None)`` if none.
    """
    aiohttp_dir = os.path.dirname(sys.modules[http_exception.__module__].__file__ or "") + os.sep
    found: tuple[Any, Any] = (None, None)
    for frame, _ in traceback.walk_tb(error.__traceback__):
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, http_exception) and frame.f_code.co_filename.startswith(aiohttp_dir):
            found = (candidate, frame.f_locals.get("reason"))
    return found


def _status(wrapper: Any) -> int:
    status = getattr(type(wrapper), "status_code", DEFAULT_STATUS)
    return status if isinstance(status, int) and 400 <= status <= 599 else DEFAULT_STATUS
