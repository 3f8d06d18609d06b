"""Job rows in SQLite: create, finish once, list, and interrupted jobs after a restart."""

import re

import pytest

from deepaas_like.exceptions import JobNotFound
from deepaas_like.jobs.models import CANCELLED, DONE, ERROR
from deepaas_like.jobs.store import JobStore


@pytest.fixture
async def store(tmp_path):
    store = await JobStore.open(f"sqlite+aiosqlite:///{tmp_path}/sub/jobs.sqlite")
    yield store
    await store.close()


async def test_create_get_finish(store):
    job = await store.create("demo", {"epochs": 2})
    training = (await store.get("demo", job.uuid)).to_training()
    assert re.fullmatch(r"[0-9a-f]{32}", training["uuid"]) and training["status"] == "running"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+", training["date"])
    assert await store.finish(job.uuid, DONE, output={"loss": 0.1}) is not None
    assert await store.finish(job.uuid, CANCELLED) is None, "a job ends once"
    done = (await store.get("demo", job.uuid)).to_training()
    assert done["status"] == "done" and done["result"]["output"] == {"loss": 0.1}
    assert done["result"]["duration"] >= 0 and "message" not in done


async def test_get_checks_the_model(store):
    job = await store.create("demo", {})
    with pytest.raises(JobNotFound):
        await store.get("other", job.uuid)
    with pytest.raises(JobNotFound):
        await store.get("demo", "f" * 32)


async def test_list_is_oldest_first_per_model(store):
    first = await store.create("demo", {})
    second = await store.create("demo", {})
    await store.create("other", {})
    assert [j.uuid for j in await store.list("demo")] == [first.uuid, second.uuid]


async def test_running_jobs_become_interrupted_errors_on_open(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/jobs.sqlite"
    store = await JobStore.open(url)
    job = await store.create("demo", {})
    await store.close()
    reopened = await JobStore.open(url)
    training = (await reopened.get("demo", job.uuid)).to_training()
    await reopened.close()
    assert training["status"] == ERROR and "interrupted" in training["message"]
