"""The messages between the server and the processes that run plugin code, and their encoding.

Every executor speaks this protocol (local processes over a pipe, an in-process pool, Ray
actors through the Ray driver): the server sends a :class:`Call`; the worker answers
:class:`Ready` or :class:`Failed` once at start, any number of :class:`Progress` during a
call, then one *outcome*: :class:`Result`, :class:`Invalid`, :class:`Error`,
:class:`NotJSON`, :class:`TooLarge`, or for ``predict_batch`` a :class:`BatchResult` of one
outcome per request. :class:`Leave` asks it to end. :func:`value` turns an outcome into the
result or the project exception it stands for. (After cog's ``server/eventtypes.py``: one
module of small message classes.)

The Ray executor's driver process (``ray_driver.py``) serves many calls at once over one
pipe, for replicas it places on a cluster, so it has a few messages of its own. It says
:class:`Connected`, :class:`Unreachable` or :class:`Broken` once at start. The server's
requests travel :class:`Numbered`, and so does everything the driver sends for one of them,
the number pairing them up:

- :class:`Place` a replica: :class:`Placed`, or :class:`Unanswered` when it died loading;
- :class:`ReplicaCall` (a :class:`Call` for a replica): any number of :class:`Progress`,
  then an outcome, or :class:`Unanswered` when the replica or Ray failed it;
- :class:`Check` whether a replica could be placed at all: :class:`Checked`.

:class:`Kill` (a replica) needs no answer; :class:`Died` says that a replica died between
calls; :class:`Leave` ends the driver, and Ray removes its replicas.

On the wire a message is a tuple whose first element names its kind: pickling tuples is the
cheapest a pipe can carry. Only :func:`encode` and :func:`decode` know that form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeAlias

from deepaas_like.exceptions import InvalidArguments, PluginError, PredictionNotJSON, ResultTooLarge
from deepaas_like.model.plugin import ModelDescription
from deepaas_like.workers.base import Placement, WorkerOptions

__all__ = [
    "BatchResult",
    "Broken",
    "Call",
    "Check",
    "Checked",
    "Connected",
    "Died",
    "DriverAnswer",
    "DriverRequest",
    "Error",
    "Failed",
    "Invalid",
    "Kill",
    "Leave",
    "Message",
    "ModelDescription",
    "NotJSON",
    "Numbered",
    "Outcome",
    "Place",
    "Placed",
    "Progress",
    "Ready",
    "ReplicaCall",
    "Result",
    "TooLarge",
    "Unanswered",
    "Unreachable",
    "WorkerMessage",
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


@dataclasses.dataclass(frozen=True, slots=True)
class Leave:
    """The server to a worker or to the Ray driver: end, once the calls read are answered
    (the driver removes its replicas).
    """


@dataclasses.dataclass(frozen=True, slots=True)
class Connected:
    """The Ray driver reached its cluster: ``cluster`` says what it is, e.g.
    ``"2 node(s), 4 CPU(s), 0 GPU(s)"``. Its first message, or :class:`Unreachable` or
    :class:`Broken`.
    """

    cluster: str


@dataclasses.dataclass(frozen=True, slots=True)
class Unreachable:
    """The Ray driver cannot reach its cluster: nothing answers at its address, or
    ``ray.init`` failed (``message`` says why, on one line). The driver exits.
    """

    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Broken:
    """The Ray driver cannot serve the cluster it reached (a module it needs is missing:
    ``message`` names it, and what installs it), and exits.
    """

    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Place:
    """Place a replica of plugin ``name`` (entry point ``namespace``), called ``replica``
    from now on, with ``actor_options`` (``ActorClass.options()``: resources, node labels)
    and started with ``options``. Answered :class:`Placed` once it is warmed, or
    :class:`Unanswered` when it died loading (it is gone).
    """

    replica: str
    name: str
    namespace: str
    actor_options: dict[str, Any]
    options: WorkerOptions


@dataclasses.dataclass(frozen=True, slots=True)
class Placed:
    """A replica is placed: ``ready`` is its :class:`Ready` or :class:`Failed` as the
    replica pickled it (so that the driver need not import the plugin to pass it on; the
    server unpickles it), ``placement`` where it runs.
    """

    ready: bytes
    placement: Placement


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaCall:
    """Run ``call`` on ``replica``. With ``with_progress``, the driver looks at the call's
    progress every ``ray_driver.PROGRESS_INTERVAL`` seconds and sends what it finds as
    :class:`Progress`. Answered by an outcome, or :class:`Unanswered`.
    """

    replica: str
    call: Call
    with_progress: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Unanswered:
    """A replica gave no outcome: ``message`` says why, on one line. ``replica_died``: it
    died or cannot be reached (the driver removed it; the call may or may not have run);
    otherwise Ray could not run the call (an object lost...) and the replica lives on.
    """

    message: str
    replica_died: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """Could any alive node of the cluster ever hold a replica with ``actor_options``?
    Answered :class:`Checked`.
    """

    actor_options: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Checked:
    """Why no node could hold such a replica, naming the resource or label missing (see
    ``ray_driver.feasibility``); None when one could.
    """

    problem: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Kill:
    """Kill ``replica`` (``ray.kill``) if it is still there; no answer. A call it runs is
    answered :class:`Unanswered`.
    """

    replica: str


@dataclasses.dataclass(frozen=True, slots=True)
class Died:
    """``replica`` died between calls (a call it held learns it by :class:`Unanswered`);
    ``message`` says how, on one line.
    """

    replica: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Numbered:
    """A request of the server to the Ray driver, or what the driver sends for it: the
    server numbers its requests (0, 1, ...) and the driver answers each under its number,
    since it serves many at once.
    """

    number: int
    message: DriverRequest | DriverAnswer


Outcome: TypeAlias = "Result | Invalid | Error | NotJSON | TooLarge | BatchResult"
#: What a worker sends.
WorkerMessage: TypeAlias = "Ready | Failed | Progress | Result | Invalid | Error | NotJSON | TooLarge | BatchResult"
#: What the server asks of the Ray driver, :class:`Numbered`.
DriverRequest: TypeAlias = "Place | ReplicaCall | Check"
#: What the Ray driver sends for a request, :class:`Numbered`.
DriverAnswer: TypeAlias = (
    "Placed | Checked | Unanswered | Progress | Result | Invalid | Error | NotJSON | TooLarge | BatchResult"
)
#: Every message of the protocol.
Message: TypeAlias = (
    "Call | Leave | Ready | Failed | Progress | Result | Invalid | Error | NotJSON | TooLarge | BatchResult"
    " | Connected | Unreachable | Broken | Place | Placed | ReplicaCall | Unanswered | Check | Checked | Kill"
    " | Died | Numbered"
)

# Each message's wire form, and back: the kind first, then the fields in their order.
_TO_WIRE: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    Result: lambda m: ("ok", m.value),
    Numbered: lambda m: ("numbered", m.number, encode(m.message)),
    Call: lambda m: ("call", m.hook, m.kwargs, m.request_id, m.save_to),
    ReplicaCall: lambda m: ("replica_call", m.replica, encode(m.call), m.with_progress),
    Progress: lambda m: ("progress", m.fraction, m.message, m.metrics, m.step),
    BatchResult: lambda m: ("batch", [encode(outcome) for outcome in m.outcomes]),
    Error: lambda m: ("error", m.error_type, m.message, m.traceback, m.status),
    Invalid: lambda m: ("invalid", m.messages),
    NotJSON: lambda m: ("not_json", m.message),
    TooLarge: lambda m: ("too_large", m.message),
    Ready: lambda m: ("ready", m.description),
    Failed: lambda m: ("failed", m.message, m.traceback),
    Leave: lambda m: ("leave",),
    Connected: lambda m: ("connected", m.cluster),
    Unreachable: lambda m: ("unreachable", m.message),
    Broken: lambda m: ("broken", m.message),
    Place: lambda m: ("place", m.replica, m.name, m.namespace, m.actor_options, m.options),
    Placed: lambda m: ("placed", m.ready, m.placement),
    Unanswered: lambda m: ("unanswered", m.message, m.replica_died),
    Check: lambda m: ("check", m.actor_options),
    Checked: lambda m: ("checked", m.problem),
    Kill: lambda m: ("kill", m.replica),
    Died: lambda m: ("died", m.replica, m.message),
}
_FROM_WIRE: dict[str, Callable[[tuple[Any, ...]], Message]] = {
    "ok": lambda w: Result(w[1]),
    "numbered": lambda w: Numbered(w[1], decode(w[2])),  # type: ignore[arg-type]
    "call": lambda w: Call(w[1], w[2], w[3], w[4]),
    "replica_call": lambda w: ReplicaCall(w[1], decode(w[2]), w[3]),  # type: ignore[arg-type]
    "progress": lambda w: Progress(w[1], w[2], w[3], w[4]),
    "batch": lambda w: BatchResult([decode(one) for one in w[1]]),  # type: ignore[misc]
    "error": lambda w: Error(w[1], w[2], w[3], w[4]),
    "invalid": lambda w: Invalid(w[1]),
    "not_json": lambda w: NotJSON(w[1]),
    "too_large": lambda w: TooLarge(w[1]),
    "ready": lambda w: Ready(w[1]),
    "failed": lambda w: Failed(w[1], w[2]),
    "leave": lambda w: Leave(),
    "connected": lambda w: Connected(w[1]),
    "unreachable": lambda w: Unreachable(w[1]),
    "broken": lambda w: Broken(w[1]),
    "place": lambda w: Place(w[1], w[2], w[3], w[4], w[5]),
    "placed": lambda w: Placed(w[1], w[2]),
    "unanswered": lambda w: Unanswered(w[1], w[2]),
    "check": lambda w: Check(w[1]),
    "checked": lambda w: Checked(w[1]),
    "kill": lambda w: Kill(w[1]),
    "died": lambda w: Died(w[1], w[2]),
}


def encode(message: Message) -> tuple[Any, ...]:
    """The wire form of ``message``. Raises ``TypeError`` for what is not a protocol message."""
    try:
        to_wire = _TO_WIRE[type(message)]
    except KeyError:
        raise TypeError(f"not a protocol message: {message!r}") from None
    return to_wire(message)


def decode(wire: tuple[Any, ...]) -> Message:
    """The message a wire tuple stands for. Raises ``ValueError`` for an unknown kind."""
    try:
        from_wire = _FROM_WIRE[wire[0]]
    except KeyError:
        raise ValueError(f"not a protocol message: {wire[0]!r}") from None
    return from_wire(wire)


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
