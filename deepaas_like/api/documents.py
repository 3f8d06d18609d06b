"""The DEEPaaS V2 wire format of what the API returns: jobs (trainings and asynchronous
predictions) as DEEPaaS 2.6 prints its training objects.
"""

from __future__ import annotations

from typing import Any

from deepaas_like.jobs.states import CANCELLED, DONE, ERROR, JobView


def job_document(job: JobView) -> dict[str, Any]:
    """The DEEPaaS V2 training object: ``date``, ``args``, ``uuid``, ``status``, and
    ``finish_date``/``message``/``result`` as the state adds them, plus ``progress`` and
    ``events`` when the plugin reported any. Dates print as DEEPaaS prints them
    (``str(datetime)``); ``result.duration`` is in seconds; a finished prediction's result
    names its ``media_type``.
    """
    document: dict[str, Any] = {
        "date": str(job.created),
        "args": job.args,
        "uuid": job.uuid,
        "status": str(job.status),
    }
    if job.finished is not None:
        document["finish_date"] = str(job.finished)
    if job.status == ERROR or (job.status == CANCELLED and job.message):
        document["message"] = job.message or ""
    if job.progress is not None:
        document["progress"] = job.progress
    if job.events:
        document["events"] = list(job.events)
    if job.status == DONE:
        document["result"] = {"output": job.output, "finish_date": str(job.finished), "duration": job.duration}
        if job.media_type is not None:
            document["result"]["media_type"] = job.media_type
    return document
