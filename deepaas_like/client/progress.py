"""Showing a job as it runs: a progress bar on a terminal, JSON lines elsewhere (a log, a
pipe, a CI job), from the job objects its events stream carries.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from tqdm import tqdm  # type: ignore[import-untyped]

__all__ = ["ProgressDisplay"]

#: The bar's layout: status, percentage, bar, time spent, then the latest metrics.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}"


def _has_width(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that says how large it is (a pseudo-terminal made
    without a size, as ``script`` and some CI runners make them, says 0 by 0, and tqdm then
    draws nothing at all)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def _metrics_text(metrics: Mapping[str, Any]) -> str:
    return " ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}" for name, value in metrics.items()
    )


class ProgressDisplay:
    """Shows the changes of a job, one job object (as :meth:`Job.get` and the events stream
    give it: ``status``, ``progress`` 0..1, ``events`` ``[{"time", "message"}]``,
    ``metrics`` ``{name: number}``) at a time.

    On a terminal (``tty`` true; None: ``stream.isatty()``) a tqdm bar: the status, the
    percentage done, the time spent and the latest metrics, with the plugin's messages
    printed above it. Otherwise one JSON line per change: ``{"uuid", "status",
    "progress"}``, plus ``"time"`` and ``"message"`` for each new message and
    ``"metrics"`` when they changed, e.g.::

        {"uuid": "4f0c...", "status": "running", "progress": 0.2, "time": "2026-12-07 23:01:02.5", "message": "epoch 2 of 10", "metrics": {"loss": 0.81}}
    """  # noqa: E501

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        self._bar: Any = None
        self._seen: set[tuple[str, str]] = set()
        self._state: tuple[Any, Any] = (None, None)  # status, progress
        self._metrics: dict[str, Any] = {}

    def update(self, job: Mapping[str, Any]) -> None:
        """Show what changed since the last job object (nothing when nothing did)."""
        events = [event for event in job.get("events") or () if self._key(event) not in self._seen]
        self._seen.update(self._key(event) for event in events)
        state = (job.get("status"), job.get("progress"))
        metrics = dict(job.get("metrics") or {})
        changed_metrics = metrics != self._metrics
        if not events and not changed_metrics and state == self._state:
            return
        self._state, self._metrics = state, metrics
        if self.tty:
            self._draw(job, events)
        else:
            self._write_lines(job, events, metrics if changed_metrics else None)

    def close(self) -> None:
        """End the bar (its last state stays on the terminal)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _key(event: Mapping[str, Any]) -> tuple[str, str]:
        return (str(event.get("time")), str(event.get("message")))

    def _draw(self, job: Mapping[str, Any], events: list[Mapping[str, Any]]) -> None:
        if self._bar is None:
            sized = _has_width(self.stream)
            self._bar = tqdm(
                total=100,
                desc=str(job.get("status")),
                file=self.stream,
                bar_format=BAR_FORMAT,
                dynamic_ncols=sized,
                ncols=None if sized else 80,
                nrows=None if sized else 20,
            )
        for event in events:
            self._bar.write(str(event.get("message")), file=self.stream)
        progress = job.get("progress")
        if job.get("status") == "done":
            progress = 1.0
        if isinstance(progress, (int, float)):
            self._bar.n = round(progress * 100, 1)
        self._bar.set_description_str(str(job.get("status")), refresh=False)
        self._bar.set_postfix_str(_metrics_text(job.get("metrics") or {}), refresh=False)
        self._bar.refresh()

    def _write_lines(
        self, job: Mapping[str, Any], events: list[Mapping[str, Any]], metrics: dict[str, Any] | None
    ) -> None:
        base = {"uuid": job.get("uuid"), "status": job.get("status"), "progress": job.get("progress")}
        lines = [_line(base, event) for event in events] or [base]
        if metrics is not None:
            lines[-1]["metrics"] = metrics
        for line in lines:
            self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()


def _line(base: dict[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """One event's JSON line: the job's state, the event's time and message, and
    ``"source": "server"`` for the server's own messages (a worker starting, a queue)."""
    line = {**base, "time": event.get("time"), "message": event.get("message")}
    if event.get("progress") is not None:  # the fraction when it was reported, not the job's latest
        line["progress"] = event["progress"]
    if event.get("source"):
        line["source"] = event["source"]
    return line
