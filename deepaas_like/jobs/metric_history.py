"""The per-step history of a job's metrics (the ``metric_history`` of a job row and of the
job object): ``{metric: [[step, value], ...]}`` in step order, at most :data:`MAX_POINTS`
points per metric however long the training runs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_POINTS", "History", "add", "merge"]

#: Points kept per metric. Past it the older half is thinned to every other point (see
#: :func:`_thin`): a million-step training keeps a row of bounded size, denser where recent.
MAX_POINTS = 1000
#: ``{metric: [[step, value], ...]}``: steps are ints, values floats (None: not finite).
History = dict[str, list[list[Any]]]


def add(history: History, step: int | None, metrics: Mapping[str, float | None]) -> None:
    """Put one report (``metrics`` at ``step``) into ``history``, in place. A report without
    a step is put at the step after that metric's last; a step already held takes the new
    value. Non-finite values are kept here and stored as null by the database's JSON column.
    """
    for name, value in metrics.items():
        points = history.setdefault(name, [])
        at = step if step is not None else (points[-1][0] + 1 if points else 0)
        if not points or at > points[-1][0]:
            points.append([at, value])
        else:
            index = bisect.bisect_left([point[0] for point in points], at)
            if index < len(points) and points[index][0] == at:
                points[index][1] = value
            else:
                points.insert(index, [at, value])
        if len(points) > MAX_POINTS:
            history[name] = _thin(points)


def merge(history: Mapping[str, list[list[Any]]] | None, new: Mapping[str, Iterable[list[Any]]]) -> History:
    """A copy of ``history`` with the points of ``new`` (``{metric: [[step, value], ...]}``)
    put in by :func:`add`."""
    merged: History = {name: [list(point) for point in points] for name, points in (history or {}).items()}
    for name, points in new.items():
        for step, value in points:
            add(merged, None if step is None else int(step), {name: value})
    return merged


def _thin(points: list[list[Any]]) -> list[list[Any]]:
    """Every other point of the older half (from the first), and the newer half whole: the
    first and the latest points always stay; 1001 points become 751."""
    half = len(points) // 2
    return points[:half:2] + points[half:]
