"""Job rows on real SQLite and real PostgreSQL: migrations, FIFO claims, finishing once,
listing, progress, stored results, retention and interrupted jobs.

Rewritten for issue 27: a job row's view is ``jobs.states.view`` (``Job.to_view`` went with
the tables to the database room).
"""

import asyncio
import dataclasses
import datetime
import re

import pytest

from deepaas_like.api.documents import job_document
from deepaas_like.database.tables import JobResult
from deepaas_like.exceptions import JobNotFound
from deepaas_like.jobs.states import CANCELLED, DONE, ERROR, NEWEST_FIRST, PENDING, RUNNING, JobView, view
from deepaas_like.jobs.store import JobStore, decode_kwargs, encode_kwargs
from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.model.args import UploadedFile


@pytest.fixture
async def store(database_url):
    store = await JobStore.open(database_url)
    yield store
    await store.close()


async def test_create_claim_finish(store):
    job = await store.create("demo", TRAIN, {"epochs": 2}, {"epochs": 2})
    document = job_document(view(await store.get("demo", job.uuid)))
    assert re.fullmatch(r"[0-9a-f]{32}", document["uuid"]) and document["status"] == PENDING
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+", document["date"])
    claimed = await store.claim("demo", TRAIN, "a")
    assert claimed.uuid == job.uuid and claimed.status == RUNNING and claimed.owner == "a"
    assert await store.claim("demo", TRAIN, "a") is None
    assert await store.finish(job.uuid, DONE, output={"loss": 0.1})
    assert not await store.finish(job.uuid, CANCELLED), "a job ends once"
    done = job_document(view(await store.get("demo", job.uuid)))
    assert done["status"] == DONE and done["result"]["output"] == {"loss": 0.1}
    assert done["result"]["duration_seconds"] >= 0 and "message" not in done


async def test_claims_are_first_in_first_out_and_never_shared(store):
    uuids = [(await store.create("demo", PREDICT, {}, {"i": i})).uuid for i in range(6)]
    claims = await asyncio.gather(*(store.claim("demo", PREDICT, f"owner{i}") for i in range(6)))
    assert sorted(job.uuid for job in claims) == sorted(uuids)
    first = min(claims, key=lambda job: job.started)
    assert first.uuid == uuids[0]


async def test_pending_queues_names_only_queues_holding_a_pending_job(store):
    await store.create("demo", TRAIN, {}, {})
    await store.create("demo", TRAIN, {}, {})
    running = await store.create("other", PREDICT, {}, {})
    assert (await store.claim("other", PREDICT, "a")).uuid == running.uuid
    await store.create("other", TRAIN, {}, {})
    queues = [("demo", TRAIN), ("demo", PREDICT), ("other", PREDICT), ("absent", TRAIN)]
    assert await store.pending_queues(queues) == {("demo", TRAIN)}
    assert await store.pending_queues([("other", TRAIN), ("other", PREDICT)]) == {("other", TRAIN)}
    assert await store.pending_queues([]) == set()


async def test_get_checks_model_and_kind(store):
    job = await store.create("demo", TRAIN, {}, {})
    with pytest.raises(JobNotFound):
        await store.get("other", job.uuid)
    with pytest.raises(JobNotFound):
        await store.get("demo", job.uuid, PREDICT)
    with pytest.raises(JobNotFound):
        await store.get("demo", "f" * 32)


async def test_list_oldest_first_or_newest_first_with_filters(store):
    uuids = [(await store.create("demo", TRAIN, {}, {})).uuid for _ in range(5)]
    await store.create("other", TRAIN, {}, {})
    await store.claim("demo", TRAIN, "a")
    assert [j.uuid for j in await store.list("demo", TRAIN)] == uuids, "as DEEPaaS lists trainings"
    assert [j.uuid for j in await store.list("demo", TRAIN, order=NEWEST_FIRST)] == uuids[::-1]
    assert [j.uuid for j in await store.list("demo", TRAIN, status=RUNNING)] == [uuids[0]]
    assert [j.uuid for j in await store.list("demo", TRAIN, limit=2, offset=1)] == uuids[1:3]
    newest = await store.list("demo", TRAIN, limit=2, offset=1, order=NEWEST_FIRST)
    assert [j.uuid for j in newest] == uuids[::-1][1:3]


def test_a_finished_training_gives_its_duration_as_deepaas_does_and_in_seconds():
    created = datetime.datetime(2026, 1, 2, 3, 4, 5, 123456)
    view = JobView(
        "a" * 32, "demo", TRAIN, DONE, {}, created, created + datetime.timedelta(seconds=3.040127), duration=3.040127
    )
    result = job_document(view)["result"]
    # DEEPaaS 2.6 (deepaas/api/v2/train.py): str(end - start), a datetime.timedelta.
    assert result["duration"] == str(datetime.timedelta(seconds=3.040127)) == "0:00:03.040127"
    assert result["duration_seconds"] == 3.040127
    long = job_document(dataclasses.replace(view, duration=90061.5))["result"]["duration"]
    assert long == "1 day, 1:01:01.500000"


async def test_nothing_is_written_to_a_job_after_it_ended(store):
    job = await store.create("demo", TRAIN, {}, {})
    await store.claim("demo", TRAIN, "a")
    await store.report(job.uuid, 0.25, [{"time": "t", "message": "epoch 1"}], {"loss": 0.5})
    assert await store.finish(job.uuid, CANCELLED, message="cancelled by a DELETE request")
    answered = job_document(view(await store.get("demo", job.uuid)))
    # A plugin that keeps reporting: its reports after the cancel change nothing.
    await store.report(job.uuid, 0.5, [{"time": "t", "message": "epoch 2"}], {"loss": 0.4})
    await store.annotate(job.uuid, "run-after-the-end")
    assert job_document(view(await store.get("demo", job.uuid))) == answered
    assert answered["progress"] == 0.25 and answered["metrics"] == {"loss": 0.5}


async def test_progress_events_and_binary_results(store):
    job = await store.create("demo", PREDICT, {}, {})
    await store.claim("demo", PREDICT, "a")
    await store.report(job.uuid, 0.5, [{"time": "t", "message": f"step {i}"} for i in range(60)])
    await store.report(job.uuid, None, [{"time": "t", "message": "last"}])
    document = job_document(view(await store.get("demo", job.uuid)))
    assert document["progress"] == 0.5 and len(document["events"]) == 50
    assert document["events"][-1]["message"] == "last"
    await store.finish(job.uuid, DONE, media_type="image/png", result_file=f"{job.uuid}/prediction")
    stored = await store.get("demo", job.uuid)
    assert stored.result_file == f"{job.uuid}/prediction" and await store.result(job.uuid) is None
    assert job_document(view(stored))["result"]["media_type"] == "image/png"


async def test_retention_removes_finished_jobs_and_results(store):
    old = await store.create("demo", PREDICT, {}, {})
    await store.claim("demo", PREDICT, "a")
    await store.finish(old.uuid, DONE, media_type="application/zip", result_file=f"{old.uuid}/prediction")
    async with store.engine.begin() as connection:  # a result stored before results became files
        await connection.execute(JobResult.__table__.insert().values(uuid=old.uuid, data=b"PK"))
    assert await store.result(old.uuid) == b"PK"
    waiting = await store.create("demo", PREDICT, {}, {})
    removed = await store.delete_finished_before(datetime.datetime.now() + datetime.timedelta(seconds=1))
    assert removed == [old.uuid] and await store.result(old.uuid) is None
    assert (await store.get("demo", waiting.uuid)).status == PENDING


async def test_cancelled_among(store):
    a = await store.create("demo", TRAIN, {}, {})
    b = await store.create("demo", TRAIN, {}, {})
    await store.finish(a.uuid, CANCELLED)
    assert await store.cancelled_among([a.uuid, b.uuid]) == {a.uuid}


async def test_only_the_owners_running_jobs_become_interrupted(database_url):
    store = await JobStore.open(database_url)
    mine = await store.create("demo", TRAIN, {}, {})
    await store.claim("demo", TRAIN, "me")
    theirs = await store.create("demo", TRAIN, {}, {})
    await store.claim("demo", TRAIN, "them")
    waiting = await store.create("demo", TRAIN, {}, {})
    await store.close()
    reopened = await JobStore.open(database_url)  # migrations are idempotent
    assert await reopened.mark_interrupted("me") == 1
    states = {
        uuid: job_document(view(await reopened.get("demo", uuid))) for uuid in (mine.uuid, theirs.uuid, waiting.uuid)
    }
    await reopened.close()
    assert states[mine.uuid]["status"] == ERROR and "interrupted" in states[mine.uuid]["message"]
    assert states[theirs.uuid]["status"] == RUNNING and states[waiting.uuid]["status"] == PENDING


def test_kwargs_round_trip_with_files():
    upload = UploadedFile("data", "/tmp/x.csv", "text/csv", "train.csv")
    values, files = encode_kwargs({"data": upload, "n": 1})
    assert values == {"n": 1} and files == {"data": list(upload)}
    assert decode_kwargs(values, files) == {"data": upload, "n": 1}
    forged = {"__uploaded_file__": list(upload)}
    assert decode_kwargs(*encode_kwargs({"data": forged})) == {"data": forged}, "client values stay values"


async def test_migrations_bring_the_schema_to_the_models(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from deepaas_like.database.tables import Base

    store = await JobStore.open(database_url)
    async with store.engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await store.close()
    assert differences == [], "the models changed without a migration"


async def test_a_job_claimed_but_never_started_does_not_stay_running(store, tmp_path):
    """A claim whose answer was lost leaves a job "running" that nothing runs; the
    instance's heartbeat finds it and reports it interrupted.
    """
    from sqlalchemy import update

    from deepaas_like.database.tables import Job
    from deepaas_like.jobs.result_files import ResultFiles
    from deepaas_like.jobs.service import JobOptions, Jobs

    job = await store.create("demo", TRAIN, {}, {})
    await store.claim("demo", TRAIN, "me")
    recent = await store.create("demo", TRAIN, {}, {})
    await store.claim("demo", TRAIN, "me")
    async with store.engine.begin() as connection:
        await connection.execute(
            update(Job)
            .where(Job.uuid == job.uuid)
            .values(started=datetime.datetime.now() - datetime.timedelta(minutes=2))
        )
    # Rewritten for issue 27: the check of claims never started is the jobs' housekeeping.
    jobs = Jobs(store, {}, JobOptions("me", {}), ResultFiles(str(tmp_path / "results")), job_document)
    await jobs.housekeeping.untracked()
    lost = job_document(view(await store.get("demo", job.uuid)))
    assert lost["status"] == ERROR and "lost track" in lost["message"]
    assert (await store.get("demo", recent.uuid)).status == RUNNING, "a claim of a moment ago is left alone"


async def test_nan_and_infinity_in_a_job_are_stored_as_null(store):
    """PostgreSQL's json type has no NaN (a diverged training's loss); SQLite's JSON text
    would hold one that strict readers refuse. Both store null."""
    nan, inf = float("nan"), float("inf")
    job = await store.create("demo", TRAIN, {"rate": nan}, {"rate": nan})
    await store.claim("demo", TRAIN, "a")
    await store.report(job.uuid, inf, [{"time": 0.0, "message": "diverged"}], {"loss": nan})
    assert await store.finish(job.uuid, DONE, output={"loss": nan, "history": [1.0, -inf]})
    done = job_document(view(await store.get("demo", job.uuid)))
    assert done["args"] == {"rate": None}
    assert done["result"]["output"] == {"loss": None, "history": [1.0, None]}
    assert done["metrics"] == {"loss": None}
