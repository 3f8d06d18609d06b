"""The job database going away while a server runs, as an operator meets it: PostgreSQL
stopped and started with ``pg_ctl``, a SQLite file locked by another connection (issue 10,
items 2 and 11); servers killed with ``kill -9`` (items 4 and 6).
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.jobs.helpers import PROBE, DatabaseFault, plugin_env, wait_for

FAST = ["--job-poll-interval", "0.1"]
SQL_WORDS = ("[SQL", "SELECT ", "INSERT ", "UPDATE ")


def wait_for_log(server, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log.read_text():
        assert time.monotonic() < deadline, f"the server never logged {text!r}"
        time.sleep(0.1)


@pytest.fixture
def probe_env(tmp_path):
    return plugin_env(tmp_path / "site")


@pytest.fixture
def fault(database_url):
    fault = DatabaseFault(database_url)
    yield fault
    fault.end()


def test_a_job_that_ends_while_the_database_is_away_is_recorded_once_it_is_back(run_server, probe_env, database_url, fault):
    server = run_server("jobs_probe", env=probe_env, database_url=database_url, args=FAST)
    job = requests.post(server + PROBE + "/train/", data={"seconds": "1.5", "note": "kept"}).json()
    url = server + PROBE + f"/train/{job['uuid']}"
    wait_for(url, {"running"})
    fault.begin()
    # The training ends while the database is away; its end waits in memory, retried (a
    # SQLite writer waits out its busy timeout, 5 s, before each failure).
    wait_for_log(server, f"job {job['uuid']} waits for the job database", timeout=40)
    during = requests.get(url, timeout=30)
    if fault.sqlite:
        assert during.status_code == 200 and during.json()["status"] == "running", "reads work; the end waits"
    else:
        assert during.status_code == 503 and during.headers["Retry-After"]
    fault.end()
    back = time.monotonic()
    done = wait_for(url, {"done", "error", "cancelled"}, timeout=60)
    recovery = time.monotonic() - back
    print(f"recorded {recovery:.2f} s after the database came back ({database_url.split(':')[0]})")
    assert done["status"] == "done", done
    assert done["result"]["output"]["note"] == "kept" and done["progress"] == 1.0
    log = server.log.read_text()
    assert "Task exception was never retrieved" not in log
    assert "is back after" in log


def test_routes_that_need_the_database_answer_503_while_it_is_away(run_server, probe_env, database_url, fault):
    server = run_server("jobs_probe", env=probe_env, database_url=database_url, args=FAST)
    first = requests.post(server + PROBE + "/train/", data={"seconds": "0"}).json()
    wait_for(server + PROBE + f"/train/{first['uuid']}", {"done"})
    metrics = requests.get(server + "/metrics").text
    assert "deepaas_like_job_database_up 1.0" in metrics and 'status="' in metrics
    fault.begin()
    try:
        answer = requests.post(server + PROBE + "/train/", data={"seconds": "0"}, timeout=60)
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) > 0
        message = answer.json()["message"]
        assert "job database" in message and not any(word in message for word in SQL_WORDS), message
        ready = requests.get(server + "/readyz", timeout=30)
        assert ready.status_code == 503 and "job database" in ready.json()["database"], ready.text
        metrics = requests.get(server + "/metrics", timeout=30)
        assert metrics.status_code == 200 and "deepaas_like_job_database_up 0.0" in metrics.text
        assert 'deepaas_like_jobs{kind="train",model="jobs_probe",status="done"} 1.0' in metrics.text, "last known counts"
        assert requests.get(server + "/healthz").status_code == 200
        if not fault.sqlite:  # reads of a locked SQLite file still work
            listing = requests.get(server + PROBE + "/train/", timeout=30)
            assert listing.status_code == 503 and listing.headers["Retry-After"]
    finally:
        fault.end()
    assert requests.post(server + PROBE + "/train/", data={"seconds": "0"}, timeout=30).status_code == 200
    assert requests.get(server + "/readyz").status_code == 200
    assert "deepaas_like_job_database_up 1.0" in requests.get(server + "/metrics").text
