"""A Python client of deepaas_like's HTTP API: models, predictions, trainings followed
with progress, their jobs, and model versions (doc/client.rst)::

    from pathlib import Path
    from deepaas_like.client import Client

    with Client("http://127.0.0.1:5000", api_key="s3cret") as client:
        stats = client.predict("demo", image=Path("cat.png"))
        job = client.train("demo", epochs=20)
        job.wait(progress=True)

:class:`Client` is synchronous (``httpx.Client``), :class:`AsyncClient` the same calls to
await (``httpx.AsyncClient``); both build their requests and read their answers in
:mod:`deepaas_like.client.operations`.
"""

from deepaas_like.client.asynchronous import AsyncClient, AsyncJob
from deepaas_like.client.errors import (
    ArgumentsError,
    AuthenticationError,
    ClientError,
    JobCancelled,
    NotFoundError,
    ServerError,
    TransportError,
)
from deepaas_like.client.progress import ProgressDisplay
from deepaas_like.client.sync import Client, Job

__all__ = [
    "ArgumentsError",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "Client",
    "ClientError",
    "Job",
    "JobCancelled",
    "NotFoundError",
    "ProgressDisplay",
    "ServerError",
    "TransportError",
]
