"""The messages between the server and a worker running plugin code, and their encoding.

Every executor speaks this protocol (local processes over a pipe, an in-process pool, Ray
actors): the server sends a :class:`Call`; the worker answers :class:`Ready` or
:class:`Failed` once at start, any number of :class:`Progress` during a call, then one
*outcome*: :class:`Result`, :class:`Invalid`, :class:`Error`, :class:`NotJSON`,
:class:`TooLarge`, or for ``predict_batch`` a :class:`BatchResult` of one outcome per
request. :func:`value` turns an outcome into the result or the project exception it stands
for. (After cog's ``server/eventtypes.py``: one module of small message classes.)

On the wire a message is a tuple whose first element names its kind: pickling tuples is the
cheapest a pipe can carry. Only :func:`encode` and :func:`decode` know that form.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeAlias

from deepaas_like.exceptions import InvalidArguments, PluginError, PredictionNotJSON, ResultTooLarge
from deepaas_like.model.plugin import ModelDescription

__all__ = [
    "BatchResult",
    "Call",
    "Error",
    "Failed",
    "Invalid",
    "Message",
    "ModelDescription",
    "NotJSON",
    "Outcome",
    "Progress",
    "Ready",
    "Result",
    "TooLarge",
    "decode",
    "encode",
    "value",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """Run ``hook(**kwargs)`` (``predict_batch``: ``kwargs={"batch": [kwargs, ...]}``);
    ``request_id`` tags the worker's log lines. With ``save_to`` (a ``train`` call), the
    plugin's ``save`` then writes the trained state into that new version directory.
    """

    hook: str
    kwargs: dict[str, Any]
    request_id: str = "-"
    save_to: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Ready:
    """The worker loaded and warmed its plugin; the plugin's description."""

    description: ModelDescription


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """The worker could not load or warm its plugin, and exits."""

    message: str
    traceback: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """What the running call reported (:func:`deepaas_like.progress.report`)."""

    fraction: float | None
    message: str | None
    metrics: dict[str, float] | None = None
    step: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """The hook returned ``value`` (JSON data, ``bytes`` or a ``FileResult``)."""

    value: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Invalid:
    """The plugin raised a marshmallow ``ValidationError``: ``{"field": ["message", ...]}``."""

    messages: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Error:
    """The plugin raised ``error_type``; ``status`` is the HTTP status it chose (500 unless
    it raised an aiohttp ``HTTPException``).
    """

    error_type: str
    message: str
    traceback: str = ""
    status: int = 500


@dataclasses.dataclass(frozen=True, slots=True)
class NotJSON:
    """The prediction is neither binary nor JSON data (see ``results.check_prediction``)."""

    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class TooLarge:
    """The prediction exceeds ``--max-result-size`` (or cannot be stored)."""

    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class BatchResult:
    """One outcome per request of a ``predict_batch`` call, in order."""

    outcomes: list[Outcome]


Outcome: TypeAlias = "Result | Invalid | Error | NotJSON | TooLarge | BatchResult"
Message: TypeAlias = "Ready | Failed | Progress | Result | Invalid | Error | NotJSON | TooLarge | BatchResult"


def encode(message: Call | Message) -> tuple[Any, ...]:
    """The wire form of ``message``."""
    if isinstance(message, Result):
        return ("ok", message.value)
    if isinstance(message, Call):
        return ("call", message.hook, message.kwargs, message.request_id, message.save_to)
    if isinstance(message, Progress):
        return ("progress", message.fraction, message.message, message.metrics, message.step)
    if isinstance(message, BatchResult):
        return ("batch", [encode(outcome) for outcome in message.outcomes])
    if isinstance(message, Error):
        return ("error", message.error_type, message.message, message.traceback, message.status)
    if isinstance(message, Invalid):
        return ("invalid", message.messages)
    if isinstance(message, NotJSON):
        return ("not_json", message.message)
    if isinstance(message, TooLarge):
        return ("too_large", message.message)
    if isinstance(message, Ready):
        return ("ready", message.description)
    if isinstance(message, Failed):
        return ("failed", message.message, message.traceback)
    raise TypeError(f"not a protocol message: {message!r}")


def decode(wire: tuple[Any, ...]) -> Call | Message:
    """The message a wire tuple stands for. Raises ``ValueError`` for an unknown kind."""
    kind = wire[0]
    if kind == "ok":
        return Result(wire[1])
    if kind == "call":
        return Call(wire[1], wire[2], wire[3], wire[4])
    if kind == "progress":
        return Progress(wire[1], wire[2], wire[3], wire[4])
    if kind == "batch":
        return BatchResult([decode(one) for one in wire[1]])  # type: ignore[misc]
    if kind == "error":
        return Error(wire[1], wire[2], wire[3], wire[4])
    if kind == "invalid":
        return Invalid(wire[1])
    if kind == "not_json":
        return NotJSON(wire[1])
    if kind == "too_large":
        return TooLarge(wire[1])
    if kind == "ready":
        return Ready(wire[1])
    if kind == "failed":
        return Failed(wire[1], wire[2])
    raise ValueError(f"not a protocol message: {kind!r}")


def value(outcome: Outcome) -> Any:
    """The result an outcome carries, or the project exception it stands for: raises
    ``InvalidArguments`` (422), ``PredictionNotJSON`` (500), ``ResultTooLarge`` (507) or
    ``PluginError`` (500, or the status the plugin chose). A :class:`BatchResult` gives its
    list of outcomes.
    """
    if isinstance(outcome, Result):
        return outcome.value
    if isinstance(outcome, BatchResult):
        return outcome.outcomes
    if isinstance(outcome, Invalid):
        raise InvalidArguments(outcome.messages)
    if isinstance(outcome, NotJSON):
        raise PredictionNotJSON(outcome.message)
    if isinstance(outcome, TooLarge):
        raise ResultTooLarge(outcome.message)
    if isinstance(outcome, Error):
        raise PluginError(outcome.error_type, outcome.message, outcome.traceback, outcome.status)
    raise TypeError(f"not an outcome: {outcome!r}")
