"""What attaches to a training's start and end without being part of running it: the
making of model versions (``serving/version_making.py``) and MLflow runs (``tracking.py``).
The jobs are given a list of :class:`TrainingHook`; they know nothing else of either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from deepaas_like.database.tables import Job

__all__ = ["Training", "TrainingHook", "Write", "numbers_of"]

T = TypeVar("T")


class Write(Protocol):
    """A job state write retried until the database takes it (``jobs.recording.RetriedWrites``)."""

    async def __call__(self, what: str, write: Callable[[], Awaitable[T]]) -> T: ...


@dataclasses.dataclass
class Training:
    """One training of ``model`` (job row ``job``) as its hooks see it; hooks fill in what
    the others and the job need, in the order they are given.

    ``save_to`` is the URL the plugin saves the trained model to (a version hook sets it
    at the start); ``run_id`` the MLflow run recorded on the job; ``version`` the id
    (``name@n``) of the version the training made and ``artifacts`` its files' URL (set
    at the end by a version hook, read by a tracking hook after it). ``metrics`` holds the
    latest value of each metric the plugin reported; ``metric_listeners`` are told each
    report with its step. ``notes`` is where a hook keeps its own state between calls.
    """

    model: str
    makes_versions: bool
    job: Job
    write: Write
    save_to: str | None = None
    run_id: str | None = None
    version: str | None = None
    artifacts: str | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    metric_listeners: list[Callable[[dict[str, float], int], None]] = dataclasses.field(default_factory=list)
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def reported(self, metrics: dict[str, float], step: int) -> None:
        """Tell every listener of a report of ``metrics`` at ``step``."""
        for listener in self.metric_listeners:
            listener(metrics, step)


class TrainingHook(Protocol):
    """Told when a training starts and ends. A hook that raises in :meth:`ended` turns the
    training's outcome into an error (as a failing training would).
    """

    async def started(self, training: Training) -> None:
        """Before the plugin's ``train`` is called."""

    async def ended(self, training: Training, outcome: dict[str, Any]) -> None:
        """After the plugin's call, before the job's end is written. ``outcome`` is what
        will be written (``status``, then ``output`` or ``message``); a hook may add to it
        (``version``, a ``message``). Status ``cancelled``: the training was stopped (a
        cancel, or the server stopping) and nothing more is written.
        """

    async def discarded(self, training: Training) -> None:
        """The job had ended already (cancelled) when its outcome was written: undo what
        :meth:`ended` made.
        """


def numbers_of(value: Any, prefix: str = "") -> dict[str, float]:
    """The numbers in what ``train`` returned, as metrics: a dict's numeric values by key,
    nested dicts' as ``outer.inner``; lists, strings and booleans are left out.
    """
    found: dict[str, float] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = f"{prefix}{key}"
            if isinstance(item, Mapping):
                found.update(numbers_of(item, name + "."))
            elif (
                isinstance(item, (int, float))
                and not isinstance(item, bool)
                and item == item
                and abs(item) != float("inf")
            ):
                found[name] = float(item)
    return found
