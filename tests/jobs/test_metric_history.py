"""The per-step history of a job's metrics (``metric_history``): every report kept in step
order across the progress buffer's writes, bounded per metric, non-finite values as null,
added by a migration to an existing database, and served in the job object while the
job's events keep only the latest ones.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import requests

from deepaas_like.api.documents import job_document
from deepaas_like.database import Database, async_url
from deepaas_like.jobs import metric_history
from deepaas_like.jobs.metric_history import MAX_POINTS
from deepaas_like.jobs.recording import ProgressBuffer
from deepaas_like.jobs.states import view
from deepaas_like.jobs.store import MAX_EVENTS, JobStore
from deepaas_like.kinds import TRAIN


def test_points_stay_in_step_order_and_a_step_without_one_follows_its_metric():
    history: metric_history.History = {}
    metric_history.add(history, 2, {"loss": 0.5, "accuracy": 0.1})
    metric_history.add(history, 0, {"loss": 0.9})  # an earlier step goes in its place
    metric_history.add(history, 2, {"loss": 0.4})  # a step held takes the new value
    metric_history.add(history, None, {"loss": 0.3})
    metric_history.add(history, None, {"rate": 0.01})
    assert history == {"loss": [[0, 0.9], [2, 0.4], [3, 0.3]], "accuracy": [[2, 0.1]], "rate": [[0, 0.01]]}


def test_a_long_history_is_bounded_and_keeps_its_first_and_latest_points():
    history: metric_history.History = {}
    for step in range(1_000_000 // 100):  # ten thousand steps, a hundred apart
        metric_history.add(history, step * 100, {"loss": float(step)})
    points = history["loss"]
    assert len(points) <= MAX_POINTS
    assert points[0] == [0, 0.0] and points[-1] == [999_900, 9999.0]
    steps = [step for step, _ in points]
    assert steps == sorted(set(steps))
    # Denser where recent: the newest points are every step reported.
    assert steps[-10:] == [step * 100 for step in range(9990, 10000)]


class _Store:
    """What ProgressBuffer needs of a JobStore: ``report``, with its history merged as the
    real store merges it."""

    def __init__(self) -> None:
        self.history: metric_history.History = {}
        self.writes = 0

    async def report(self, uuid: str, progress: Any, messages: Any, metrics: Any, history: Any = None) -> None:
        self.writes += 1
        self.history = metric_history.merge(self.history, history or {})


def test_the_buffer_keeps_every_report_across_writes():
    async def run() -> _Store:
        store = _Store()
        buffer = ProgressBuffer(store, "0" * 32, lambda uuid: None)  # type: ignore[arg-type]
        for write in range(3):
            for epoch in range(write * 70, write * 70 + 70):  # more than MAX_EVENTS per write
                buffer.add(None, None, {"loss": 1.0 / (epoch + 1)}, epoch)
            await buffer.flush()
        buffer.add(None, None, {"loss": 0.0})  # without a step: the next one
        await buffer.flush()
        buffer.close()
        return store

    store = asyncio.run(run())
    assert store.writes == 4
    assert store.history["loss"] == [[epoch, 1.0 / (epoch + 1)] for epoch in range(210)] + [[210, 0.0]]


async def test_the_store_keeps_the_history_bounded_and_non_finite_values_as_null(database_url):
    store = await JobStore.open(database_url)
    try:
        job = await store.create("demo", TRAIN, {}, {})
        await store.claim("demo", TRAIN, "a")
        for write in range(12):  # 1200 steps in twelve writes
            points = [[step, float(step)] for step in range(write * 100, write * 100 + 100)]
            await store.report(job.uuid, None, [], {"loss": float(write)}, {"loss": points})
        await store.report(job.uuid, None, [], {"loss": float("nan")}, {"loss": [[1200, float("nan")]]})
        document = job_document(view(await store.get("demo", job.uuid)))
        loss = document["metric_history"]["loss"]
        assert len(loss) <= MAX_POINTS
        assert loss[0] == [0, 0.0] and loss[-2] == [1199, 1199.0] and loss[-1] == [1200, None]
        assert [step for step, _ in loss] == sorted({step for step, _ in loss})
        assert document["metrics"] == {"loss": None}
        plain = await store.create("demo", TRAIN, {}, {})
        assert "metric_history" not in job_document(view(await store.get("demo", plain.uuid)))
    finally:
        await store.close()


async def test_the_migration_adds_the_history_to_an_existing_database(database_url):
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(async_url(database_url))
    store = JobStore(Database(engine))
    try:
        await store.database.migrate("0009")
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO jobs (uuid, model, kind, status, args, kwargs, created, events, metrics) "
                    "VALUES (:uuid, 'm', 'train', 'running', '{}', '{}', '2026-01-01 00:00:00', '[]', "
                    """'{"loss": 0.5}')"""
                ),
                {"uuid": "a" * 32},
            )
        migration = await store.database.migrate()
        assert (migration.before, migration.after) == ("0009", "0010")
        old = job_document(view(await store.get("m", "a" * 32)))
        assert old["metrics"] == {"loss": 0.5} and "metric_history" not in old
        await store.report("a" * 32, None, [], {"loss": 0.4}, {"loss": [[7, 0.4]]})
        assert job_document(view(await store.get("m", "a" * 32)))["metric_history"] == {"loss": [[7, 0.4]]}
    finally:
        await store.close()


def test_a_finished_training_serves_every_step_while_its_events_keep_the_latest(run_server):
    server = run_server("demo", args=["--job-poll-interval", "0.1"])
    url = server + "/v2/models/demo/train/"
    uuid = requests.post(url, data={"epochs": "80"}, timeout=30).json()["uuid"]
    deadline = time.monotonic() + 60
    while (job := requests.get(url + uuid, timeout=5).json())["status"] not in ("done", "error"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "done", job
    assert len(job["events"]) <= MAX_EVENTS
    loss = job["metric_history"]["loss"]
    assert [step for step, _ in loss] == list(range(1, 81))
    assert loss[-1][1] == job["metrics"]["loss"]
    trained = [[epoch["epoch"], epoch["loss"]] for epoch in job["result"]["output"]["epochs"]]
    assert [[step, round(value, 6)] for step, value in loss] == trained  # the plugin's own record
