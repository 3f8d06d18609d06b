"""AsyncClient on a real server (the demo plugin, with an API key): the same calls as
Client, awaited; a training followed with progress, its events, an asynchronous
prediction's image, and the errors."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from PIL import Image

from deepaas_like.client import ArgumentsError, AsyncClient, AuthenticationError, JobCancelled, ProgressDisplay
from tests.client.helpers import KEY
from tests.conftest import png_bytes


@pytest.fixture(scope="module")
def server(module_server) -> str:
    return module_server("demo", args=["--auth-token", KEY, "--job-poll-interval", "0.1"])


async def test_predictions_and_models(server: str) -> None:
    async with AsyncClient(server, api_key=KEY) as client:
        assert [model["name"] for model in await client.models()] == ["demo"]
        stats, thumbnail = await asyncio.gather(
            client.predict("demo", image=png_bytes((40, 30))),
            client.predict("demo", image=png_bytes((40, 30)), size=8, accept="image/png"),
        )
        assert stats["width"] == 40
        assert isinstance(thumbnail, Image.Image) and thumbnail.size == (8, 6)
        with pytest.raises(ArgumentsError) as refused:
            await client.predict("demo", image=png_bytes(), filter="sepia")
        assert list(refused.value.fields or {}) == ["filter"]
    async with AsyncClient(server) as keyless:
        with pytest.raises(AuthenticationError):
            await keyless.train("demo")


async def test_a_training_followed_with_progress_and_its_events(server: str) -> None:
    async with AsyncClient(server, api_key=KEY) as client:
        job = await client.train("demo", epochs=3, epoch_seconds=0.1)
        lines = io.StringIO()
        done = await job.wait(progress=ProgressDisplay(lines, tty=False), timeout=120)
        assert done["status"] == "done" and len(done["result"]["output"]["epochs"]) == 3
        shown = [json.loads(line) for line in lines.getvalue().splitlines()]
        messages = [line.get("message") for line in shown if line.get("source") != "server"]
        assert [m.split(":")[0] for m in messages if m] == ["epoch 1", "epoch 2", "epoch 3"]
        assert "running train" in [line.get("message") for line in shown if line.get("source") == "server"]
        seen = [document async for document in job.events()]  # an ended job: as it is, then the end
        assert seen[-1]["status"] == "done"
        assert await job.status() == "done"
        assert (await client.job("demo", job.uuid)).document["result"] == done["result"]
        assert job.uuid in [listed.uuid for listed in await client.jobs("demo", status="done")]


async def test_an_asynchronous_prediction_and_a_cancelled_training(server: str) -> None:
    async with AsyncClient(server, api_key=KEY) as client:
        prediction = await client.predict_async("demo", image=png_bytes((40, 30)), accept="image/png")
        image = await prediction.result()
        assert isinstance(image, Image.Image) and image.size == (40, 30)
        training = await client.train("demo", epochs=1000, epoch_seconds=0.5)
        await training.cancel()
        with pytest.raises(JobCancelled) as ended:
            await training.wait(timeout=120)
        assert ended.value.job is not None and ended.value.job["status"] == "cancelled"
