"""Every call of the HTTP API (doc/http-api.rst) once, without I/O: each is a generator
that yields the :class:`Request` to send, receives the ``httpx.Response``, and returns the
decoded answer (or raises). :class:`~deepaas_like.client.Client` runs them on an
``httpx.Client``, :class:`~deepaas_like.client.AsyncClient` on an ``httpx.AsyncClient``;
the requests, answers and errors are the same on both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import uuid as uuids
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx

from deepaas_like import __version__
from deepaas_like.client.encoding import Form, body_of, decode_answer
from deepaas_like.client.errors import ClientError, JobCancelled, ServerError, TransportError, error_for
from deepaas_like.client.retries import Retry

__all__ = [
    "ENDED",
    "Kind",
    "Operation",
    "Request",
    "answer",
    "cancel",
    "default_headers",
    "delete_version",
    "event_data",
    "events_request",
    "finished",
    "job",
    "jobs",
    "metadata",
    "models",
    "openapi",
    "predict",
    "promote",
    "result",
    "rollback",
    "start",
    "version",
    "versions",
]

T = TypeVar("T")
Kind = Literal["train", "predict"]
#: The states a job ends in.
ENDED = ("done", "error", "cancelled")


@dataclasses.dataclass(frozen=True)
class Request:
    """One HTTP request: ``path`` relative to the server's URL, a JSON body or a form."""

    method: str
    path: str
    retry: Retry = Retry.SAFE
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: Any = None
    form: Form | None = None

    @contextlib.contextmanager
    def content(self) -> Iterator[dict[str, Any]]:
        """The keyword arguments of ``httpx.Client.request`` for one try: the JSON body, or
        the form with its files open (closed once sent).
        """
        common = {"params": self.params, "headers": dict(self.headers)}
        if self.form is not None:
            with self.form.opened() as parts:
                yield {**common, **parts}
        elif self.body is not None:
            yield {**common, "json": self.body}
        else:
            yield common

    def failed(self, url: str, error: httpx.TransportError) -> TransportError:
        """The :class:`TransportError` of this request to the server at ``url``."""
        return TransportError(0, f"{self.method} {url}{self.path}: {type(error).__name__}: {error}".rstrip(": "))


def default_headers(api_key: str | None) -> dict[str, str]:
    """The headers of every request: the API key (``Authorization: Bearer``) when given."""
    headers = {"User-Agent": f"deepaas-like-client/{__version__}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


#: A call: yields requests, is sent their answers, returns the result.
Operation = Generator[Request, httpx.Response, T]


def _segment(name: str) -> str:
    return quote(name, safe="@")


def _model_path(model: str, version: int | None = None) -> str:
    name = model if version is None else f"{model}@{version}"
    return f"/v2/models/{_segment(name)}/"


def _job_path(model: str, kind: Kind, uuid: str | None = None) -> str:
    if kind not in ("train", "predict"):
        raise ValueError(f"a job's kind is 'train' or 'predict', not {kind!r}")
    return _model_path(model) + kind + "/" + ("" if uuid is None else _segment(uuid))


def answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer; raises the :class:`ClientError` of an error answer,
    and a :class:`ClientError` naming the URL for an answer that is not JSON (the URL is
    not a deepaas_like server's).
    """
    if response.status_code >= 400:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        raise error_for(response.status_code, body, response.text)
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        kind = response.headers.get("Content-Type", "no Content-Type")
        raise ClientError(
            response.status_code, f"{response.url} answered {kind}, not JSON: is it a deepaas_like server's URL?"
        ) from None


def _get(path: str, params: Mapping[str, str] | None = None) -> Operation[Any]:
    response = yield Request("GET", path, params=params)
    return answer(response)


def models() -> Operation[list[dict[str, Any]]]:
    """``GET /v2/models/``: the served models' metadata (then every model version's)."""
    listing = yield from _get("/v2/models/")
    return list(listing["models"])


def metadata(model: str) -> Operation[dict[str, Any]]:
    """``GET /v2/models/{model}/``: the model's metadata (``model@3``: a version's)."""
    return (yield from _get(_model_path(model)))


def openapi() -> Operation[dict[str, Any]]:
    """``GET /openapi.json``: the server's OpenAPI 3 document."""
    return (yield from _get("/openapi.json"))


def _accept_header(accept: str | None) -> dict[str, str]:
    return {} if accept is None else {"Accept": accept}


def predict(
    model: str,
    arguments: Mapping[str, Any],
    accept: str | None = None,
    version: int | None = None,
    output: str | os.PathLike[str] | None = None,
) -> Operation[Any]:
    """``POST /v2/models/{model}/predict/``, answered in the media type ``accept`` asks for
    (see :func:`~deepaas_like.client.encoding.decode_answer`). Retried only when it cannot
    have run: a prediction may not be safe to run twice.
    """
    body, form = body_of(arguments)
    request = Request(
        "POST", _model_path(model, version) + "predict/", Retry.UNSENT, None, _accept_header(accept), body, form
    )
    response = yield request
    if response.status_code >= 400:
        answer(response)
    return decode_answer(response, output)


def start(
    model: str, kind: Kind, arguments: Mapping[str, Any], accept: str | None = None, version: int | None = None
) -> Operation[dict[str, Any]]:
    """Start a training (``POST .../train/``) or an asynchronous prediction (``POST
    .../predict/`` with ``Prefer: respond-async``); returns the job object. The request
    carries a fresh ``Idempotency-Key``, so its retries make one job. ``accept`` goes as the
    prediction's ``accept`` argument: the server keeps the result in the media type the
    arguments name (the ``Accept`` of a POST that answers a job object is not the result's).
    """
    if accept is not None:
        arguments = {**arguments, "accept": accept}
    body, form = body_of(arguments)
    headers = {"Idempotency-Key": f'"{uuids.uuid4()}"'}
    if kind == "predict":
        headers["Prefer"] = "respond-async"
    path = _model_path(model, version) + ("predict/" if kind == "predict" else "train/")
    response = yield Request("POST", path, Retry.SAFE, None, headers, body, form)
    return dict(answer(response))


def job(model: str, uuid: str, kind: Kind) -> Operation[dict[str, Any]]:
    """``GET .../{kind}/{uuid}``: the job object."""
    return (yield from _get(_job_path(model, kind, uuid)))


def jobs(
    model: str, kind: Kind, status: str | None = None, order: str = "asc", limit: int | None = None
) -> Operation[list[dict[str, Any]]]:
    """``GET .../{kind}/``: job objects in creation order (``asc``: oldest first), only
    those in ``status`` when given, at most ``limit``.
    """
    params = {"order": order}
    if status is not None:
        params["status"] = status
    if limit is not None:
        params["limit"] = str(limit)
    return list((yield from _get(_job_path(model, kind), params)))


def cancel(model: str, uuid: str, kind: Kind) -> Operation[dict[str, Any]]:
    """``DELETE .../{kind}/{uuid}``: cancels a pending or running job; the job object."""
    response = yield Request("DELETE", _job_path(model, kind, uuid))
    return dict(answer(response))


def finished(document: dict[str, Any]) -> dict[str, Any]:
    """``document``, a job object that has ended, when it ended ``done``; raises
    :class:`ServerError` (``error``) or :class:`JobCancelled` carrying it otherwise.
    """
    status = document.get("status")
    if status == "error":
        raise ServerError(500, document.get("message") or "the job failed", job=document)
    if status == "cancelled":
        raise JobCancelled(409, document.get("message") or "the job was cancelled", job=document)
    if status != "done":
        raise ClientError(409, f"the job has not ended: it is {status}", job=document)
    return document


def result(
    document: dict[str, Any], model: str, accept: str | None = None, output: str | os.PathLike[str] | None = None
) -> Operation[Any]:
    """The result of ``document``, a job object that ended ``done``: a training's output; a
    prediction's output, or its stored result (an image, a file) fetched in its media type
    and decoded as :func:`predict` decodes it. Raises as :func:`finished` does.
    """
    stored = finished(document).get("result") or {}
    media_type = stored.get("media_type")
    if media_type is None or "json" in media_type.split(";")[0]:
        if output is None:
            return stored.get("output")
        target = Path(output)
        target.write_text(json.dumps(stored.get("output"), indent=2) + "\n", encoding="utf-8")
        return target
    headers = {"Accept": accept or media_type}
    response = yield Request("GET", _job_path(model, "predict", document["uuid"]), headers=headers)
    if response.status_code >= 400:
        answer(response)
    return decode_answer(response, output)


def events_request(model: str, uuid: str, kind: Kind) -> Request:
    """The request of a job's Server-Sent Events stream (``GET .../{uuid}/events``)."""
    return Request("GET", _job_path(model, kind, uuid) + "/events")


def event_data(event: str, data: str) -> dict[str, Any] | None:
    """The job object a ``job`` event carries; None for ``end`` (the stream's last) and for
    events this client does not know.
    """
    if event != "job":
        return None
    return dict(json.loads(data))


def versions(model: str) -> Operation[list[dict[str, Any]]]:
    """``GET .../versions/``: the model's versions, newest first."""
    listing = yield from _get(_model_path(model) + "versions/")
    return list(listing["versions"])


def version(model: str, number: int) -> Operation[dict[str, Any]]:
    """``GET .../versions/{number}``: one version's document."""
    return (yield from _get(f"{_model_path(model)}versions/{int(number)}"))


def promote(model: str, number: int) -> Operation[dict[str, Any]]:
    """``POST .../versions/{number}/promote``: ``{"model", "promoted_version"}``."""
    response = yield Request("POST", f"{_model_path(model)}versions/{int(number)}/promote", Retry.UNSENT)
    return dict(answer(response))


def rollback(model: str) -> Operation[dict[str, Any]]:
    """``POST .../rollback``: ``{"model", "promoted_version"}`` after the rollback."""
    response = yield Request("POST", _model_path(model) + "rollback", Retry.UNSENT)
    return dict(answer(response))


def delete_version(model: str, number: int) -> Operation[dict[str, Any]]:
    """``DELETE .../versions/{number}``: the deleted version's document."""
    response = yield Request("DELETE", f"{_model_path(model)}versions/{int(number)}", Retry.UNSENT)
    return dict(answer(response))
