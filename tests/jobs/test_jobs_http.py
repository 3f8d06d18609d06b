"""Durable jobs through real servers, on real SQLite and real PostgreSQL: asynchronous
predictions, queueing, progress and its event stream, restarts, listing, retention, and
several instances sharing one database.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time

import pytest
import requests

from deepaas_like.jobs.store import JobStore
from deepaas_like.kinds import TRAIN

SLOW = "/v2/models/slow"


def wait_for(url: str, statuses: set[str], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(url, timeout=5, headers={"Accept": "application/json"}).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{url} never reached {statuses}: {job}")


@pytest.fixture
def slow(run_server, plugin_env, database_url):
    return run_server("slow", env=plugin_env, database_url=database_url, args=["--job-poll-interval", "0.1"])


def test_async_prediction_with_prefer_header(slow):
    answer = requests.post(
        slow + SLOW + "/predict/",
        data={"seconds": "0.2"},
        files={"data": ("in.csv", b"1,2")},
        headers={"Prefer": "respond-async"},
    )
    assert answer.status_code == 202 and answer.headers["Preference-Applied"] == "respond-async"
    job = answer.json()
    assert job["status"] in ("pending", "running") and job["args"]["data"] == "in.csv"
    assert answer.headers["Location"].endswith(f"{SLOW}/predict/{job['uuid']}")
    done = wait_for(slow + answer.headers["Location"], {"done"})
    assert done["result"]["output"] == {"status": "OK", "predictions": {"slept": 0.2, "data": "in.csv"}}
    assert done["progress"] == 1.0 and done["events"][-1]["message"] == "step 4 of 4"
    assert [j["uuid"] for j in requests.get(slow + SLOW + "/predict/").json()] == [job["uuid"]]


def test_async_binary_prediction_is_stored_and_downloadable(slow):
    job = requests.post(slow + SLOW + "/predict/?async=true", data={"accept": "image/png"}).json()
    url = slow + SLOW + f"/predict/{job['uuid']}"
    done = wait_for(url, {"done"})
    assert done["result"]["media_type"] == "image/png" and done["result"]["output"] is None
    download = requests.get(url, headers={"Accept": "image/png"})
    assert download.headers["Content-Type"] == "image/png" and download.content.startswith(b"\x89PNG")
    assert requests.get(url, headers={"Accept": "application/json"}).json()["status"] == "done"


def test_cancel_a_running_prediction(slow):
    job = requests.post(slow + SLOW + "/predict/?async=1", data={"seconds": "60"}).json()
    url = slow + SLOW + f"/predict/{job['uuid']}"
    wait_for(url, {"running"})
    time.sleep(0.3)
    cancelled = requests.delete(url).json()
    assert cancelled["status"] == "cancelled"
    started = time.monotonic()
    assert requests.post(slow + SLOW + "/predict/", data={"seconds": "0"}).json()["predictions"]["slept"] == 0
    assert time.monotonic() - started < 30, "a fresh worker replaced the killed one"


def test_jobs_queue_first_in_first_out(slow):
    uuids = [
        requests.post(slow + SLOW + "/train/", data={"seconds": "0.6", "steps": "2"}).json()["uuid"] for _ in range(3)
    ]
    states = [requests.get(slow + SLOW + f"/train/{u}").json()["status"] for u in uuids]
    assert states[0] == "running" and states[1:] == ["pending", "pending"]
    finished = [wait_for(slow + SLOW + f"/train/{u}", {"done"}) for u in uuids]
    finish_dates = [job["finish_date"] for job in finished]
    assert finish_dates == sorted(finish_dates)
    pending = requests.post(slow + SLOW + "/train/", data={"seconds": "5"}).json()
    queued = requests.post(slow + SLOW + "/train/", data={"seconds": "0"}).json()
    assert requests.delete(slow + SLOW + f"/train/{queued['uuid']}").json()["status"] == "cancelled", (
        "a pending job can be cancelled"
    )
    requests.delete(slow + SLOW + f"/train/{pending['uuid']}")


def test_listing_filters_and_pages(slow):
    uuids = [requests.post(slow + SLOW + "/train/", data={"seconds": "0"}).json()["uuid"] for _ in range(4)]
    for uuid in uuids:
        wait_for(slow + SLOW + f"/train/{uuid}", {"done"})
    listing = requests.get(slow + SLOW + "/train/").json()
    assert [job["uuid"] for job in listing] == uuids, "oldest first, as DEEPaaS lists them; a bare array"
    newest = requests.get(slow + SLOW + "/train/", params={"order": "desc"}).json()
    assert [job["uuid"] for job in newest] == uuids[::-1]
    page = requests.get(slow + SLOW + "/train/", params={"limit": 2, "offset": 1, "status": "done"}).json()
    assert [job["uuid"] for job in page] == uuids[1:3]
    page = requests.get(slow + SLOW + "/train/", params={"limit": 2, "offset": 1, "order": "desc"}).json()
    assert [job["uuid"] for job in page] == uuids[::-1][1:3]
    assert requests.get(slow + SLOW + "/train/", params={"status": "running"}).json() == []
    bad = requests.get(slow + SLOW + "/train/", params={"status": "sleeping", "limit": "0", "order": "newest"})
    assert bad.status_code == 422 and set(bad.json()) == {"status", "limit", "order"}


def test_a_done_training_gives_its_duration_as_deepaas_does_and_in_seconds(slow):
    job = requests.post(slow + SLOW + "/train/", data={"seconds": "0.3", "steps": "1"}).json()
    result = wait_for(slow + SLOW + f"/train/{job['uuid']}", {"done"})["result"]
    hours, minutes, seconds = result["duration"].split(":")  # str(timedelta): "0:00:00.301234"
    parsed = datetime.timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))
    assert parsed.total_seconds() == pytest.approx(result["duration_seconds"], abs=1e-6)
    assert result["duration_seconds"] >= 0.3, "it slept 0.3 s"


def test_a_cancel_is_logged_as_a_cancel_and_freezes_the_job(slow):
    # 6000 reports in 60 s: the plugin keeps reporting until its worker is killed.
    job = requests.post(slow + SLOW + "/train/", data={"seconds": "60", "steps": "6000"}).json()
    url = slow + SLOW + f"/train/{job['uuid']}"
    deadline = time.monotonic() + 60
    while not requests.get(url).json().get("progress"):
        assert time.monotonic() < deadline, "the training never reported progress"
        time.sleep(0.05)
    cancelled = requests.delete(url).json()
    assert cancelled["status"] == "cancelled"
    # The next training runs once the cancelled one's run has ended (one training worker):
    # every write of that run is behind us then.
    after = requests.post(slow + SLOW + "/train/", data={"seconds": "0"}).json()
    wait_for(slow + SLOW + f"/train/{after['uuid']}", {"done"})
    now = requests.get(url).json()
    assert (now["progress"], now["events"]) == (cancelled["progress"], cancelled["events"])
    cancel_line = f"train job {job['uuid']} of model slow cancelled"
    lines = [
        line for line in slow.log.read_text().splitlines() if job["uuid"] in line and "deepaas_like.access" not in line
    ]
    assert any(" INFO " in line and cancel_line in line for line in lines), lines
    assert not [line for line in lines if " ERROR " in line or "failed" in line], lines


def test_progress_streams_as_server_sent_events(slow):
    job = requests.post(slow + SLOW + "/train/", data={"seconds": "1.2", "steps": "4"}).json()
    events = []
    with requests.get(slow + SLOW + f"/train/{job['uuid']}/events", stream=True, timeout=60) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        name = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name == "end":
                    break
    assert events[-1] == ("end", {"status": "done"})
    progress = [data.get("progress") for name, data in events if name == "job" and "progress" in data]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 2
    assert events[-2][1]["events"][-1]["message"] == "epoch 4 of 4"
    assert requests.get(slow + SLOW + f"/train/{'0' * 32}/events").status_code == 404


def test_pending_jobs_run_after_a_restart_and_running_ones_are_interrupted(run_server, plugin_env, database_url):
    args = ["--job-poll-interval", "0.1", "--instance-name", "restarting"]
    first = run_server("slow", env=plugin_env, database_url=database_url, args=args)
    running = requests.post(first + SLOW + "/train/", data={"seconds": "60"}).json()
    pending = requests.post(first + SLOW + "/train/", data={"seconds": "0"}).json()
    assert pending["status"] == "pending"
    assert first.stop() == 0
    second = run_server("slow", env=plugin_env, database_url=database_url, args=args)
    interrupted = requests.get(second + SLOW + f"/train/{running['uuid']}").json()
    assert interrupted["status"] == "error" and "interrupted" in interrupted["message"]
    assert wait_for(second + SLOW + f"/train/{pending['uuid']}", {"done"})["result"]["output"] == {"steps": 4}


def test_retention_removes_finished_jobs(run_server, plugin_env, database_url):
    server = run_server("slow", env=plugin_env, database_url=database_url, args=["--job-retention-hours", "0.0003"])
    job = requests.post(server + SLOW + "/train/", data={"seconds": "0"}).json()
    url = server + SLOW + f"/train/{job['uuid']}"
    wait_for(url, {"done"})
    deadline = time.monotonic() + 20
    while requests.get(url).status_code != 404:
        assert time.monotonic() < deadline, "the finished job was never removed"
        time.sleep(0.2)


def test_a_job_recorded_by_another_instance_runs_here_at_the_next_poll(run_server, plugin_env, database_url):
    """The poll asks the database which queues hold pending jobs (one read for every model
    and kind), then claims from those: a job that another instance recorded runs here.
    """
    server = run_server("slow", env=plugin_env, database_url=database_url, args=["--job-poll-interval", "0.2"])

    async def record_elsewhere() -> str:
        store = await JobStore.open(database_url)
        try:
            arguments = {"seconds": 0.0, "steps": 2}
            return (await store.create("slow", TRAIN, arguments, arguments)).uuid
        finally:
            await store.close()

    uuid = asyncio.run(record_elsewhere())
    job = wait_for(server + SLOW + f"/train/{uuid}", {"done", "error"}, timeout=30)
    assert job["status"] == "done" and job["result"]["output"] == {"steps": 2}, job


def test_two_instances_share_jobs_and_cancel_across(run_server, plugin_env, postgres_database):
    database_url = postgres_database  # several instances share PostgreSQL; SQLite is for one
    args = ["--job-poll-interval", "0.2"]
    a = run_server("slow", env=plugin_env, database_url=database_url, args=[*args, "--instance-name", "a"])
    b = run_server("slow", env=plugin_env, database_url=database_url, args=[*args, "--instance-name", "b"])
    job = requests.post(a + SLOW + "/train/", data={"seconds": "60"}).json()
    assert job["status"] == "running"
    assert requests.get(b + SLOW + f"/train/{job['uuid']}").json()["status"] == "running"
    time.sleep(0.5)
    started = time.monotonic()
    assert requests.delete(b + SLOW + f"/train/{job['uuid']}").json()["status"] == "cancelled"
    # A kills its worker: its next training starts on a fresh worker within a second or two.
    after = requests.post(a + SLOW + "/train/", data={"seconds": "0"}).json()
    wait_for(a + SLOW + f"/train/{after['uuid']}", {"done"}, timeout=30)
    assert time.monotonic() - started < 30
    log = a.log.read_text()
    assert "SIGKILL" in log or requests.get(a + SLOW + f"/train/{job['uuid']}").json()["status"] == "cancelled"
