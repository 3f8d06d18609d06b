"""The DEEPaaS V2 wire format of what the API returns: jobs (trainings and asynchronous
predictions) as DEEPaaS 2.6 prints its training objects, and model versions.
"""

from __future__ import annotations

import datetime
from typing import Any

from deepaas_like.jobs.states import CANCELLED, DONE, ERROR, JobView
from deepaas_like.serving.model_versions import version_document

__all__ = ["job_document", "version_document"]


def job_document(job: JobView) -> dict[str, Any]:
    """The DEEPaaS V2 training object: ``date``, ``args``, ``uuid``, ``status``, and
    ``finish_date``/``message``/``result`` as the state adds them, plus ``progress`` and
    ``events`` (and ``metrics``, their latest values, and ``metric_history``, every value
    by step) when the plugin reported any; a
    training that made a model version names it (``version``), one tracked in MLflow its
    ``mlflow_run_id``; a ``message`` on a done job says what went wrong beside it (MLflow
    tracking). Dates print as DEEPaaS prints them
    (``str(datetime)``); ``result.duration`` as DEEPaaS 2.6 gives it, ``str(timedelta)``
    (``"0:00:03.040127"``), and ``result.duration_seconds`` the same time as a number of
    seconds; a finished prediction's result names its ``media_type``.
    """
    document: dict[str, Any] = {
        "date": str(job.created),
        "args": job.args,
        "uuid": job.uuid,
        "status": str(job.status),
    }
    if job.finished is not None:
        document["finish_date"] = str(job.finished)
    if job.status == ERROR or (job.status in (CANCELLED, DONE) and job.message):
        document["message"] = job.message or ""
    if job.progress is not None:
        document["progress"] = job.progress
    if job.events:
        document["events"] = list(job.events)
    if job.metrics:
        document["metrics"] = dict(job.metrics)
    if job.metric_history:
        document["metric_history"] = {
            name: [list(point) for point in points] for name, points in job.metric_history.items()
        }
    if job.run_id is not None:
        document["mlflow_run_id"] = job.run_id
    if job.status == DONE:
        document["result"] = {
            "output": job.output,
            "finish_date": str(job.finished),
            "duration": None if job.duration is None else str(datetime.timedelta(seconds=job.duration)),
            "duration_seconds": job.duration,
        }
        if job.media_type is not None:
            document["result"]["media_type"] = job.media_type
        if job.version is not None:
            document["result"]["version"] = job.version
    return document
