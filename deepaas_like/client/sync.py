"""The synchronous client: :class:`Client` on an ``httpx.Client``, and the :class:`Job` it
returns for a training or an asynchronous prediction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
import httpx_sse

from deepaas_like.client import operations as ops
from deepaas_like.client.following import Reconnects, Waiting, no_deadline, watched
from deepaas_like.client.operations import Kind, Operation, Request
from deepaas_like.client.progress import ProgressDisplay
from deepaas_like.client.retries import delay_after_answer, delay_after_error

__all__ = ["Client", "Job"]

T = TypeVar("T")


class Job:
    """A training or an asynchronous prediction on the server: ``model`` (its name),
    ``uuid``, ``kind`` (``"train"`` or ``"predict"``), and ``document``, the job object as
    last read (see doc/http-api.rst, Training object).
    """

    def __init__(
        self, client: Client, model: str, uuid: str, kind: Kind, document: dict[str, Any] | None = None
    ) -> None:
        self.client = client
        self.model = model
        self.uuid = uuid
        self.kind = kind
        self.document = document or {"uuid": uuid}

    def __repr__(self) -> str:
        return f"<Job {self.kind} {self.model} {self.uuid} {self.document.get('status', '?')}>"

    def get(self) -> dict[str, Any]:
        """The job object now (``status``, ``progress``, ``events``, ``metrics``, ``result``
        ...). Raises :class:`NotFoundError` once the job is gone (``--job-retention-hours``).
        """
        self.document = self.client.run(ops.job(self.model, self.uuid, self.kind))
        return self.document

    @property
    def status(self) -> str:
        """The job's status now: ``pending``, ``running``, ``done``, ``error`` or ``cancelled``."""
        return str(self.get()["status"])

    def events(self) -> Iterator[dict[str, Any]]:
        """The job object at each change, from its Server-Sent Events stream, until it
        ends (the job as it is now first). Reconnects when the stream drops; raises
        :class:`TransportError` after ``retries`` failed reconnects in a row.
        """
        return self._events(None)

    def _events(self, waiting: Waiting | None) -> Iterator[dict[str, Any]]:
        request = ops.events_request(self.model, self.uuid, self.kind)
        reconnects = Reconnects(self.client.url + request.path, self.client.retries)
        while True:
            error = None
            timeout = waiting.stream_timeout() if waiting else httpx.USE_CLIENT_DEFAULT
            try:
                with httpx_sse.connect_sse(self.client.http, "GET", request.path, timeout=timeout) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        ops.answer(source.response)
                    check = waiting.check if waiting else no_deadline
                    for event in httpx_sse.EventSource(watched(source.response, check)).iter_sse():
                        reconnects.received()
                        if event.event == "end":
                            return
                        document = ops.event_data(event.event, event.data)
                        if document is not None:
                            yield document
            except httpx.TransportError as dropped:
                error = dropped
            if waiting is not None:
                waiting.check()
            time.sleep(reconnects.delay(error))

    def wait(self, progress: bool | ProgressDisplay = False, timeout: float | None = None) -> dict[str, Any]:
        """Follow the job until it ends; returns its final job object when ``done``.

        ``progress``: True shows a :class:`ProgressDisplay` on stderr (a bar on a terminal,
        JSON lines otherwise), or pass one. ``timeout``: seconds (None: no limit; checked
        at each event and at least every 15 s). Raises :class:`ServerError` (``.job``) when
        the job ended in ``error``, :class:`JobCancelled` when cancelled, ``TimeoutError``.
        """
        waiting = Waiting(progress, timeout, self.client.timeout)
        try:
            for document in self._events(waiting):
                self.document = document
                waiting.seen(document)
            final = self.get()
            if waiting.display is not None:
                waiting.display.update(final)
        finally:
            waiting.close()
        return ops.finished(final)

    def result(self, accept: str | None = None, output: str | os.PathLike[str] | None = None) -> Any:
        """The job's result, once it has ended (waits for it, without progress): a
        training's output (JSON); a prediction's output, or its stored image or file
        decoded as :meth:`Client.predict` decodes answers. ``output``: write it to this
        path instead and return the :class:`pathlib.Path`. Raises as :meth:`wait` does.
        """
        document = self.get()
        if document.get("status") not in ops.ENDED:
            document = self.wait()
        return self.client.run(ops.result(document, self.model, accept, output))

    def cancel(self) -> dict[str, Any]:
        """Cancel the job if pending or running; returns the job object."""
        self.document = self.client.run(ops.cancel(self.model, self.uuid, self.kind))
        return self.document


class Client:
    """A client of the deepaas_like server at ``url`` (e.g. ``http://127.0.0.1:5000``,
    with its ``--base-path`` if any).

    ``api_key``: sent as ``Authorization: Bearer`` (servers with ``--auth-token``).
    ``timeout``: seconds to connect and between bytes of an answer (None: no limit).
    ``retries``: how often a failed request is sent again (see
    :mod:`deepaas_like.client.retries`). ``transport``: an httpx transport (tests).
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        retries: int = 2,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.http = httpx.Client(
            base_url=self.url, headers=ops.default_headers(api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def send(self, request: Request) -> httpx.Response:
        """Send ``request``, again while :mod:`~deepaas_like.client.retries` allows; raises
        :class:`TransportError` when no answer came.
        """
        attempt = 0
        while True:
            try:
                with request.content() as content:
                    response = self.http.request(request.method, request.path, **content)
            except httpx.TransportError as error:
                delay = delay_after_error(request.retry, error, attempt, self.retries)
                if delay is None:
                    raise request.failed(self.url, error) from error
            else:
                delay = delay_after_answer(response, attempt, self.retries)
                if delay is None:
                    return response
            time.sleep(delay)
            attempt += 1

    def run(self, operation: Operation[T]) -> T:
        """Run one call of :mod:`~deepaas_like.client.operations`: send what it asks, return
        what it answers."""
        try:
            request = next(operation)
            while True:
                request = operation.send(self.send(request))
        except StopIteration as stop:
            return stop.value

    def models(self) -> list[dict[str, Any]]:
        """The served models' metadata (``GET /v2/models/``), then their versions'."""
        return self.run(ops.models())

    def metadata(self, model: str) -> dict[str, Any]:
        """The metadata of ``model`` (``name@3``: of version 3). Raises :class:`NotFoundError`."""
        return self.run(ops.metadata(model))

    def openapi(self) -> dict[str, Any]:
        """The server's OpenAPI 3 document."""
        return self.run(ops.openapi())

    def predict(
        self,
        model: str,
        *,
        accept: str | None = None,
        output: str | os.PathLike[str] | None = None,
        version: int | None = None,
        **arguments: Any,
    ) -> Any:
        """Predict with ``model`` (``version``: its version ``n``, ``model@n``) and wait.

        ``arguments``: the plugin's predict arguments; files as :class:`pathlib.Path`,
        bytes or binary file objects (a ``str`` is a string). ``accept``: the media type to
        answer in (``image/png``; the model's ``accept`` choices). Returns parsed JSON, a
        ``PIL.Image.Image`` for ``image/*`` (bytes without Pillow), bytes otherwise, or,
        with ``output`` (a file or directory path), the :class:`pathlib.Path` written.
        Raises :class:`ArgumentsError` (422, ``fields``), :class:`ServerError` ...
        """
        return self.run(ops.predict(model, arguments, accept, version, output))

    def predict_async(
        self, model: str, *, accept: str | None = None, version: int | None = None, **arguments: Any
    ) -> Job:
        """Start an asynchronous prediction (arguments as :meth:`predict`); its result is
        kept in the ``accept`` media type: read it with :meth:`Job.result`. A version
        (``version``) answers synchronous predictions only: :class:`ServerError` 501.
        """
        document = self.run(ops.start(model, "predict", arguments, accept, version))
        return Job(self, model if version is None else f"{model}@{version}", document["uuid"], "predict", document)

    def train(self, model: str, **arguments: Any) -> Job:
        """Start a training with the plugin's train ``arguments`` (files as for
        :meth:`predict`); follow it with :meth:`Job.wait`.
        """
        document = self.run(ops.start(model, "train", arguments))
        return Job(self, model, document["uuid"], "train", document)

    def job(self, model: str, uuid: str, kind: Kind = "train") -> Job:
        """The job ``uuid`` of ``model`` (read now: raises :class:`NotFoundError`)."""
        found = Job(self, model, uuid, kind)
        found.get()
        return found

    def jobs(
        self,
        model: str,
        kind: Kind = "train",
        *,
        status: str | None = None,
        order: str = "asc",
        limit: int | None = None,
    ) -> list[Job]:
        """The jobs of ``model`` by creation (``order`` ``asc``: oldest first, ``desc``),
        only those in ``status`` if given, at most ``limit`` (1 to 10000).
        """
        documents = self.run(ops.jobs(model, kind, status, order, limit))
        return [Job(self, model, document["uuid"], kind, document) for document in documents]

    def versions(self, model: str) -> list[dict[str, Any]]:
        """The versions trainings of ``model`` made, newest first (501 :class:`ServerError`
        for a plugin without ``save``/``load``)."""
        return self.run(ops.versions(model))

    def version(self, model: str, number: int) -> dict[str, Any]:
        """Version ``number`` of ``model``: metrics, arguments, ``state``, ``promoted``."""
        return self.run(ops.version(model, number))

    def promote(self, model: str, number: int) -> dict[str, Any]:
        """Have ``model``'s name serve version ``number``; ``{"model", "promoted_version"}``.
        Needs an admin key on a server with API keys (else :class:`AuthenticationError`, 403).
        """
        return self.run(ops.promote(model, number))

    def rollback(self, model: str) -> dict[str, Any]:
        """Undo the latest promotion of ``model``; ``{"model", "promoted_version"}``."""
        return self.run(ops.rollback(model))

    def delete_version(self, model: str, number: int) -> dict[str, Any]:
        """Delete version ``number`` (not the promoted one: 409); returns its document."""
        return self.run(ops.delete_version(model, number))
