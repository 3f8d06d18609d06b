"""A job's events stream as the client reads it (httpx.MockTransport plays the server): a
stream that ends before the job does is opened again; one that keeps failing is an error;
wait() reads the final job object and raises for a failed job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from deepaas_like.client import Client, Job, NotFoundError, ServerError, TransportError, following

RUNNING = {"uuid": "u", "status": "running", "progress": 0.5}
DONE = {"uuid": "u", "status": "done", "progress": 1.0, "result": {"output": 42}}
FAILED = {"uuid": "u", "status": "error", "message": "ValueError: no data"}
END = ("end", {"status": "done"})


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(following, "FIRST_BACKOFF", 0.0)


def sse(*events: tuple[str, dict]) -> httpx.Response:
    body = "".join(f"event: {event}\ndata: {json.dumps(data)}\n\n" for event, data in events)
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=body.encode())


def job_answering(*answers: httpx.Response) -> tuple[Job, list[str]]:
    """A training ``u`` of ``demo`` on a server that gives ``answers`` in turn; and the
    paths it was asked."""
    queue, paths = list(answers), []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return queue.pop(0)

    client = Client("http://server", retries=2, transport=httpx.MockTransport(handler))
    return Job(client, "demo", "u", "train"), paths


def test_a_stream_that_ends_before_the_job_is_opened_again() -> None:
    job, paths = job_answering(sse(("job", RUNNING)), sse(("job", DONE), END))
    assert [document["status"] for document in job.events()] == ["running", "done"]
    assert paths == ["/v2/models/demo/train/u/events"] * 2


def test_a_stream_that_keeps_dropping_is_a_transport_error() -> None:
    job, paths = job_answering(sse(), sse(), sse(), sse())
    with pytest.raises(TransportError, match="lost the events stream of http://server/v2/models/demo/train/u/events"):
        list(job.events())
    assert len(paths) == 3  # the first try and two reconnects


def test_an_error_answer_of_the_stream_is_raised() -> None:
    job, _ = job_answering(httpx.Response(404, json={"message": "no training u"}))
    with pytest.raises(NotFoundError, match="no training u"):
        list(job.events())


def test_wait_answers_the_final_job_object_or_raises_with_it() -> None:
    job, paths = job_answering(sse(("job", RUNNING), ("job", DONE), END), httpx.Response(200, json=DONE))
    assert job.wait() == DONE and paths[-1] == "/v2/models/demo/train/u"
    failed, _ = job_answering(sse(("job", FAILED), END), httpx.Response(200, json=FAILED))
    with pytest.raises(ServerError, match="ValueError: no data") as raised:
        failed.wait()
    assert raised.value.job == FAILED


class RunningThenPings(httpx.SyncByteStream):
    """A job that reports once, then nothing: the server's keep-alive comments only."""

    def __iter__(self) -> Iterator[bytes]:
        yield f"event: job\ndata: {json.dumps(RUNNING)}\n\n".encode()
        while True:
            time.sleep(0.05)
            yield b": ping\n\n"


def test_wait_times_out_on_a_silent_job_whose_stream_stays_alive() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=RunningThenPings())

    job = Job(Client("http://server", transport=httpx.MockTransport(handler)), "demo", "u", "train")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not end within 0.5 s"):
        job.wait(timeout=0.5)
    assert time.monotonic() - started < 30  # liveness: the comments did not keep it waiting
