"""The job database going away while a server runs, as an operator meets it: PostgreSQL
stopped and started with ``pg_ctl``, a SQLite file locked by another connection (issue 10,
items 2 and 11); servers killed with ``kill -9`` (items 4 and 6).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import start_server
from tests.jobs.helpers import PROBE, SLOW, DatabaseFault, kill_9, plugin_env, wait_for

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


def test_a_job_that_ends_while_the_database_is_away_is_recorded_once_it_is_back(
    run_server, probe_env, database_url, fault
):
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
        assert 'deepaas_like_jobs{kind="train",model="jobs_probe",status="done"} 1.0' in metrics.text, (
            "last known counts"
        )
        assert requests.get(server + "/healthz").status_code == 200
        if not fault.sqlite:  # reads of a locked SQLite file still work
            listing = requests.get(server + PROBE + "/train/", timeout=30)
            assert listing.status_code == 503 and listing.headers["Retry-After"]
    finally:
        fault.end()
    assert requests.post(server + PROBE + "/train/", data={"seconds": "0"}, timeout=30).status_code == 200
    assert requests.get(server + "/readyz").status_code == 200
    assert "deepaas_like_job_database_up 1.0" in requests.get(server + "/metrics").text


HEARTBEAT = ["--heartbeat-interval", "0.2", "--heartbeat-expiry", "1.5"]


def test_jobs_of_a_killed_server_are_reported_by_the_next_one_under_any_name(
    run_server, probe_env, database_url, fault
):
    """A server's training ends while the database is away, the server is killed with
    ``kill -9`` before it could record it, and comes back under another name (another
    port): once the dead one's heartbeat expires, its job reads as interrupted. A live
    instance's jobs are never taken for lost.
    """
    a = run_server(
        "jobs_probe", env=probe_env, database_url=database_url, args=[*FAST, *HEARTBEAT, "--instance-name", "a"]
    )
    kept = requests.post(a + PROBE + "/train/", data={"seconds": "1"}).json()
    wait_for(a + PROBE + f"/train/{kept['uuid']}", {"running"})
    watcher = run_server(
        "jobs_probe", env=probe_env, database_url=database_url, args=[*FAST, *HEARTBEAT, "--instance-name", "w"]
    )
    time.sleep(2)  # over the expiry: "a" beats, so "w" leaves its job alone
    assert requests.get(watcher + PROBE + f"/train/{kept['uuid']}").json()["status"] in ("running", "done")
    wait_for(a + PROBE + f"/train/{kept['uuid']}", {"done"})
    watcher.stop()

    lost = requests.post(a + PROBE + "/train/", data={"seconds": "1", "note": "lost"}).json()
    wait_for(a + PROBE + f"/train/{lost['uuid']}", {"running"})
    fault.begin()
    wait_for_log(a, f"job {lost['uuid']} waits for the job database", timeout=40)
    kill_9(a)
    fault.end()
    b = run_server(
        "jobs_probe", env=probe_env, database_url=database_url, args=[*FAST, *HEARTBEAT, "--instance-name", "b"]
    )
    started = time.monotonic()
    job = wait_for(b + PROBE + f"/train/{lost['uuid']}", {"error", "done", "cancelled"}, timeout=30)
    print(f"reported {time.monotonic() - started:.2f} s after the next server answered")
    assert job["status"] == "error" and "interrupted" in job["message"] and "heartbeat" in job["message"], job
    assert requests.get(b + PROBE + f"/train/{kept['uuid']}").json()["status"] == "done"


class SlowUpload:
    """A multipart POST whose file arrives in two halves, the second when :meth:`finish`
    is called: its upload folder exists in between, as during a large upload.
    """

    def __init__(self, url: str, field: str = "data") -> None:
        self._go_on = threading.Event()
        self.answer: requests.Response | Exception | None = None
        boundary = "deepaaslikeboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body():
            yield head + b"x" * 1024
            self._go_on.wait(60)
            yield b"y" * 1024 + tail

        def send():
            try:
                self.answer = requests.post(
                    url, data=body(), timeout=60, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
                )
            except requests.RequestException as error:
                self.answer = error

        self._thread = threading.Thread(target=send, daemon=True)
        self._thread.start()

    def finish(self) -> requests.Response | Exception | None:
        self._go_on.set()
        self._thread.join(60)
        return self.answer


def _folders(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def _wait_for_folders(directory: Path, count: int) -> set[str]:
    deadline = time.monotonic() + 30
    while len(folders := _folders(directory)) < count:
        assert time.monotonic() < deadline, f"expected {count} upload folders, have {folders}"
        time.sleep(0.05)
    return folders


def test_upload_folders_left_by_a_killed_server_are_removed_at_the_next_start(probe_env, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    database_url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    common = ["--upload-dir", str(uploads), *FAST, *HEARTBEAT]
    servers = []

    def start(model, name):
        server = start_server(
            [model], tmp_path / name, env=probe_env, database_url=database_url, args=[*common, "--instance-name", name]
        )
        servers.append(server)
        return server

    try:
        a = start("jobs_probe", "a")
        sibling = start("slow", "sibling")  # a live server of the same database and upload folder
        running = requests.post(a + PROBE + "/train/", data={"seconds": "30"}, files={"data": ("r.txt", b"r")}).json()
        pending = requests.post(a + PROBE + "/train/", data={"note": "p"}, files={"data": ("p.txt", b"p")}).json()
        assert (running["status"], pending["status"]) == ("running", "pending")
        jobs_folders = _wait_for_folders(uploads, 2)
        in_flight = SlowUpload(a + PROBE + "/predict/")
        orphan = _wait_for_folders(uploads, 3) - jobs_folders
        siblings_upload = SlowUpload(sibling + SLOW + "/predict/")
        live = _wait_for_folders(uploads, 4) - jobs_folders - orphan

        kill_9(a)
        in_flight.finish()
        b = start("jobs_probe", "b")
        assert not orphan & _folders(uploads), "the killed server's request upload is removed at start"
        assert live <= _folders(uploads), "a live server's upload in flight is kept"
        assert wait_for(b + PROBE + f"/train/{pending['uuid']}", {"done"})["result"]["output"]["data"] == "p"
        lost = wait_for(b + PROBE + f"/train/{running['uuid']}", {"error"}, timeout=30)
        assert "interrupted" in lost["message"]
        answer = siblings_upload.finish()
        assert answer.status_code == 200, answer
        deadline = time.monotonic() + 10
        while _folders(uploads):
            assert time.monotonic() < deadline, f"left behind: {_folders(uploads)}"
            time.sleep(0.1)
        assert "removed 1 upload folder(s)" in b.log.read_text()
    finally:
        for server in servers:
            server.stop()
