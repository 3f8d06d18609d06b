"""Which requests are sent again, and how: a job-starting POST keeps its Idempotency-Key
across tries and resends its files whole; a synchronous predict that may have run is not
sent again (httpx.MockTransport plays the network)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from deepaas_like.client import AsyncClient, Client, TransportError, retries


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries, "FIRST_BACKOFF", 0.0)
    monkeypatch.setattr("deepaas_like.client.sync.time.sleep", lambda seconds: None)


class Flaky:
    """Fails the first ``failures`` requests with ``error`` (after reading them whole, as a
    server that dropped the connection before answering), then answers a job object."""

    def __init__(self, failures: int, error: type[httpx.TransportError] = httpx.RemoteProtocolError) -> None:
        self.failures = failures
        self.error = error
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if len(self.requests) <= self.failures:
            raise self.error("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json={"uuid": "f" * 32, "status": "running"})


def test_a_training_post_is_retried_with_the_same_idempotency_key(tmp_path: Path) -> None:
    flaky = Flaky(2)
    data = tmp_path / "sentences.csv"
    data.write_text("text,label\nhello,a\n")
    with Client("http://server", retries=2, transport=httpx.MockTransport(flaky)) as client:
        job = client.train("text_classifier", data=data, epochs=3)
    assert job.uuid == "f" * 32
    keys = [request.headers["Idempotency-Key"] for request in flaky.requests]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0].startswith('"') and keys[0].endswith('"')
    for request in flaky.requests:  # each try sends the whole file again
        assert b"hello,a" in request.content and b'filename="sentences.csv"' in request.content


def test_a_file_object_is_sent_whole_at_each_try() -> None:
    flaky = Flaky(1)
    upload = io.BytesIO(b"\x89PNG-DATA")
    with Client("http://server", transport=httpx.MockTransport(flaky)) as client:
        client.predict_async("demo", image=upload, accept="image/png")
    assert [request.content.count(b"\x89PNG-DATA") for request in flaky.requests] == [1, 1]
    assert all(request.headers["Prefer"] == "respond-async" for request in flaky.requests)
    assert b'name="accept"\r\n\r\nimage/png' in flaky.requests[0].content


def test_the_retries_are_bounded() -> None:
    flaky = Flaky(10)
    with Client("http://server", retries=2, transport=httpx.MockTransport(flaky)) as client:
        with pytest.raises(TransportError, match="RemoteProtocolError"):
            client.train("demo")
    assert len(flaky.requests) == 3


def test_a_synchronous_predict_that_may_have_run_is_not_sent_again() -> None:
    flaky = Flaky(1)
    with Client("http://server", retries=2, transport=httpx.MockTransport(flaky)) as client:
        with pytest.raises(TransportError):
            client.predict("demo", text="hello")
    assert len(flaky.requests) == 1
    assert "Idempotency-Key" not in flaky.requests[0].headers


def test_a_synchronous_predict_that_could_not_connect_is_sent_again() -> None:
    flaky = Flaky(1, httpx.ConnectError)
    with Client("http://server", retries=2, transport=httpx.MockTransport(flaky)) as client:
        assert client.predict("demo", text="hello")["status"] == "running"
    assert len(flaky.requests) == 2
    assert json.loads(flaky.requests[1].content) == {"text": "hello"}


def test_503_with_retry_after_is_waited_out_and_without_it_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("deepaas_like.client.sync.time.sleep", slept.append)
    answers = [
        httpx.Response(503, json={"message": "queue full"}, headers={"Retry-After": "1"}),
        httpx.Response(200, json={"x": 1}),
        httpx.Response(503, json={"message": "no worker"}),
    ]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1]

    with Client("http://server", transport=httpx.MockTransport(handler)) as client:
        assert client.predict("demo", text="a") == {"x": 1}
        with pytest.raises(Exception, match="503: no worker"):
            client.predict("demo", text="a")
    assert slept == [1.0] and len(seen) == 3


def test_the_api_key_goes_as_a_bearer_token_and_arguments_as_json_without_files() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    with Client("http://server/base/", api_key="k3y", transport=httpx.MockTransport(handler)) as client:
        client.predict("text_classifier", version=2, accept="application/json", text="hi", flag=True, skip=None)
    (request,) = seen
    assert str(request.url) == "http://server/base/v2/models/text_classifier@2/predict/"
    assert request.headers["Authorization"] == "Bearer k3y" and request.headers["Accept"] == "application/json"
    assert json.loads(request.content) == {"text": "hi", "flag": True}  # None: left out, the default applies


async def test_the_async_client_retries_alike(tmp_path: Path) -> None:
    flaky, dropping = Flaky(1), Flaky(1)
    data = tmp_path / "sentences.csv"
    data.write_text("text,label\nhello,a\n")
    with open(data, "rb") as handle:
        async with AsyncClient("http://server", transport=httpx.MockTransport(flaky)) as client:
            job = await client.train("text_classifier", data=handle, epochs=3)
    assert job.uuid == "f" * 32 and len(flaky.requests) == 2
    first, retried = flaky.requests
    assert first.headers["Idempotency-Key"] == retried.headers["Idempotency-Key"]
    assert all(b"hello,a" in request.content for request in (first, retried))
    async with AsyncClient("http://server", transport=httpx.MockTransport(dropping)) as client:
        with pytest.raises(TransportError):
            await client.predict("demo", text="hello")  # it may have run: not sent again
    assert len(dropping.requests) == 1
