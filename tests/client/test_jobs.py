"""Jobs through the synchronous client on a real server (the demo plugin, with an API key):
listing, following, results, cancelling, timeouts, failures, and a retried POST that makes
one job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from deepaas_like.client import Client, JobCancelled, NotFoundError, ServerError
from tests.client.helpers import KEY, answer_dropping_proxy
from tests.conftest import png_bytes


@pytest.fixture(scope="module")
def server(module_server) -> str:
    return module_server("demo", args=["--auth-token", KEY, "--job-poll-interval", "0.1"])


@pytest.fixture
def client(server: str):
    with Client(server, api_key=KEY) as client:
        yield client


def test_a_training_is_listed_read_and_filtered(client: Client) -> None:
    job = client.train("demo", epochs=3, seed=7)
    output = job.result()
    assert [epoch["epoch"] for epoch in output["epochs"]] == [1, 2, 3]
    assert job.status == "done" and client.job("demo", job.uuid).document["args"]["seed"] == 7
    assert job.uuid in [listed.uuid for listed in client.jobs("demo", status="done")]
    assert job.uuid not in [listed.uuid for listed in client.jobs("demo", status="error")]
    newest = client.jobs("demo", order="desc", limit=1)
    assert [listed.uuid for listed in newest] == [job.uuid] and newest[0].kind == "train"


def test_the_events_follow_a_training_to_its_end(client: Client) -> None:
    job = client.train("demo", epochs=4, epoch_seconds=0.2)
    seen = list(job.events())
    assert seen[-1]["status"] == "done" and seen[-1]["progress"] == 1.0
    progress = [document.get("progress") or 0 for document in seen]
    assert progress == sorted(progress) and len(set(progress)) > 1  # it moved, and only forward
    assert [event["message"] for event in seen[-1]["events"]][-1].startswith("epoch 4:")


def test_a_cancelled_training_makes_wait_raise_with_the_job(client: Client) -> None:
    job = client.train("demo", epochs=1000, epoch_seconds=0.5)
    for document in job.events():
        if document.get("progress"):
            break  # running, and reporting
    assert job.cancel()["status"] in ("cancelled", "running")
    with pytest.raises(JobCancelled) as raised:
        job.wait(timeout=120)
    assert raised.value.job is not None and raised.value.job["status"] == "cancelled"


def test_wait_gives_up_after_its_timeout(client: Client) -> None:
    job = client.train("demo", epochs=1000, epoch_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        job.wait(timeout=1.5)
    assert time.monotonic() - started < 60  # liveness: it did not follow the job to its end
    job.cancel()


def test_an_asynchronous_prediction_answers_its_image_or_its_error(client: Client, tmp_path: Path) -> None:
    job = client.predict_async("demo", image=png_bytes((40, 30)), size=20, accept="image/png")
    assert job.kind == "predict" and job.wait(timeout=120)["result"]["media_type"] == "image/png"
    image = job.result()
    assert isinstance(image, Image.Image) and image.size == (20, 15)
    saved = job.result(output=tmp_path / "thumbnail.png")
    assert Image.open(saved).size == (20, 15)
    assert job.uuid in [listed.uuid for listed in client.jobs("demo", "predict")]

    failing = client.predict_async("demo", image=b"not an image")
    with pytest.raises(ServerError) as raised:
        failing.wait(timeout=120)
    assert raised.value.job is not None and raised.value.job["status"] == "error"
    assert "not an image Pillow can read" in raised.value.message


def test_unknown_models_and_jobs_are_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError):
        client.metadata("no_such_model")
    with pytest.raises(NotFoundError):
        client.job("demo", "0" * 32)


def test_a_training_whose_answer_was_lost_is_retried_into_the_same_job(server: str) -> None:
    """The proxy passes the first POST on and drops its answer: the training started. The
    retry carries the same Idempotency-Key, so the server answers with that training
    instead of starting a second one.
    """
    with Client(server, api_key=KEY) as direct:
        before = {job.uuid for job in direct.jobs("demo")}
        with answer_dropping_proxy(server) as proxy, Client(proxy, api_key=KEY, retries=2) as client:
            job = client.train("demo", epochs=2, seed=4242)
        assert proxy.dropped == 1
        new = [listed for listed in direct.jobs("demo") if listed.uuid not in before]
        assert [listed.uuid for listed in new] == [job.uuid]
        assert new[0].document["args"]["seed"] == 4242
        assert direct.job("demo", job.uuid).wait(timeout=120)["status"] == "done"
