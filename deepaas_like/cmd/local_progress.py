"""The progress of a call that ``deepaas-like-cli`` runs in its own process, shown as the
remote CLI shows a server's job: the plugin's ``deepaas_like.progress.report()`` calls
arrive here (the in-process worker's progress callback, in the event loop's thread) and
update a job object that a :class:`~deepaas_like.client.ProgressDisplay` draws: a progress
bar with the plugin's messages and metrics on a terminal, one JSON line per change
otherwise, on stderr.
"""

from __future__ import annotations

import datetime
from typing import Any, Protocol

from deepaas_like.workers.base import ServerNote

__all__ = ["Display", "LocalJob"]

#: The messages a local job keeps, as a server's job keeps its latest ones.
MAX_EVENTS = 100


class Display(Protocol):
    """What shows a job object (:class:`deepaas_like.client.ProgressDisplay`)."""

    def update(self, job: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class LocalJob:
    """The job object of one call run in this process (``status``, ``progress`` 0..1,
    ``events`` ``[{"time", "message"}]``, ``metrics`` the latest value of each metric),
    shown by ``display`` as it changes. :meth:`report` is a
    :data:`~deepaas_like.workers.base.ProgressCallback`.
    """

    def __init__(self, display: Display | None) -> None:
        self.display = display
        self.document: dict[str, Any] = {"status": "running", "progress": None, "events": [], "metrics": {}}
        #: Whether the plugin reported anything.
        self.reported = False

    def report(
        self,
        progress: float | None,
        message: str | None,
        metrics: dict[str, float] | None = None,
        step: int | None = None,
    ) -> None:
        """One ``report()`` of the plugin: the job changes and is shown again."""
        event: dict[str, Any] = {"time": str(datetime.datetime.now()), "message": message}
        if isinstance(message, ServerNote):
            event["source"] = "server"
        else:
            self.reported = True
        if progress is not None:
            self.document["progress"] = progress
        if message is not None:
            self.document["events"] = [*self.document["events"][-(MAX_EVENTS - 1) :], event]
        if metrics:
            self.document["metrics"] = {**self.document["metrics"], **metrics}
        self._show()

    def end(self, status: str) -> None:
        """The call ended with ``status`` (``done`` or ``error``): shown when the plugin
        reported anything (a call that reports nothing shows nothing), then the display closed.
        """
        self.document["status"] = status
        if self.reported:
            self._show()
        if self.display is not None:
            self.display.close()
            self.display = None

    @property
    def metrics(self) -> dict[str, float]:
        """The latest value of each metric reported."""
        return dict(self.document["metrics"])

    def _show(self) -> None:
        if self.display is not None:
            self.display.update({**self.document, "events": list(self.document["events"])})
