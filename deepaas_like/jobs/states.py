"""What a job is, without SQL: its states (its kinds are ``deepaas_like.kinds``), and the
frozen view that the jobs hand out (the table is ``database/tables.py``; the DEEPaaS wire
format of a job is the HTTP layer's, ``api/documents.py``).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any

from deepaas_like.database.tables import Job

__all__ = [
    "ACTIVE",
    "CANCELLED",
    "DONE",
    "ERROR",
    "NEWEST_FIRST",
    "OLDEST_FIRST",
    "ORDERS",
    "PENDING",
    "RUNNING",
    "STATES",
    "JobStatus",
    "JobView",
    "view",
]


class JobStatus(enum.StrEnum):
    """Waiting for a worker, on a worker, and the three ends."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"


PENDING, RUNNING, DONE, ERROR, CANCELLED = (JobStatus(status) for status in JobStatus)
#: Every state, in the order above (listings filter on them).
STATES: tuple[JobStatus, ...] = tuple(JobStatus)
#: The states of a job that has not ended.
ACTIVE: tuple[JobStatus, ...] = (PENDING, RUNNING)
#: Orders of a job listing, by creation: oldest first (DEEPaaS 2.6 lists its trainings in
#: the order they were posted) or newest first.
OLDEST_FIRST, NEWEST_FIRST = "asc", "desc"
ORDERS = (OLDEST_FIRST, NEWEST_FIRST)


@dataclasses.dataclass(frozen=True)
class JobView:
    """One job as its clients may see it. ``uuid`` is 32 hex characters; ``args`` are the
    arguments as shown to clients (files by their names); ``duration`` is in seconds;
    ``output`` is a training's return value or a JSON prediction; ``media_type`` and
    ``has_file`` describe a prediction's stored result; ``events`` are the latest progress
    messages (``{"time", "message"}``), ``metrics`` the latest value of each reported metric,
    ``metric_history`` every value by step (``{metric: [[step, value], ...]}``, bounded);
    ``version`` is the model version a training made (``name@n``), ``run_id`` its MLflow run.
    """

    uuid: str
    model: str
    kind: str
    status: str
    args: dict[str, Any]
    created: datetime.datetime
    finished: datetime.datetime | None = None
    duration: float | None = None
    output: Any = None
    media_type: str | None = None
    message: str | None = None
    progress: float | None = None
    events: tuple[dict[str, Any], ...] = ()
    has_file: bool = False
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    metric_history: dict[str, list[list[Any]]] = dataclasses.field(default_factory=dict)
    version: str | None = None
    run_id: str | None = None

    @property
    def ended(self) -> bool:
        return self.status not in ACTIVE


def view(job: Job) -> JobView:
    """The job row ``job`` as its clients may see it."""
    return JobView(
        uuid=job.uuid,
        model=job.model,
        kind=job.kind,
        status=job.status,
        args=job.args,
        created=job.created,
        finished=job.finished,
        duration=job.duration,
        output=job.output,
        media_type=job.media_type,
        message=job.message,
        progress=job.progress,
        events=tuple(job.events or ()),
        has_file=job.result_file is not None,
        metrics=dict(job.metrics or {}),
        metric_history=dict(job.metric_history or {}),
        version=job.version,
        run_id=job.run_id,
    )
