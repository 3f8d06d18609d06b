"""Operations through real servers: request ids in the server's and the worker's log
lines, JSON logs, graceful shutdown. (API keys, CORS, probes, metrics and tracebacks are
tested in this process: tests/api/test_in_process.py.)"""

from __future__ import annotations

import json
import signal
import threading
import time

import requests

PREDICT = "/v2/models/demo/predict/"


def test_request_id_is_echoed_and_in_the_workers_log(run_server, plugin_env):
    server = run_server("crashy", env=plugin_env)
    answer = requests.post(
        server + "/v2/models/crashy/predict/", data={"how": "log", "tag": "x"}, headers={"X-Request-ID": "req-42"}
    )
    assert answer.headers["X-Request-ID"] == "req-42"
    generated = requests.get(server + "/v2/models/").headers["X-Request-ID"]
    assert len(generated) == 32
    assert requests.get(server + "/nope", headers={"X-Request-ID": "bad id!"}).headers["X-Request-ID"] != "bad id!"
    deadline = time.monotonic() + 10
    while "[req-42] predicting for tag x" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()[-2000:]
        time.sleep(0.1)


def test_json_logs(run_server):
    server = run_server("demo", args=["--log-json"])
    requests.get(server + "/v2/models/", headers={"X-Request-ID": "json-1"})
    requests.post(server + "/v2/models/demo/train/", data={"epochs": "1"}, headers={"X-Request-ID": "json-2"})
    server.stop()
    records = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert records and all({"levelname", "name", "message", "request_id"} <= set(record) for record in records)
    (access,) = [r for r in records if r["name"] == "deepaas_like.access" and r["request_id"] == "json-1"]
    assert access["message"].startswith('127.0.0.1 "GET /v2/models/ HTTP/1.1" 200 ')
    assert access["message"].endswith(" json-1")
    assert (access["method"], access["path"], access["status"], access["remote_address"]) == (
        "GET",
        "/v2/models/",
        200,
        "127.0.0.1",
    )
    # aiohttp times the line by loop.time(): whole milliseconds under uvloop, so 0.0 is a fast answer.
    assert access["response_size"] > 0 and 0 <= access["seconds"] < 10


def test_sigterm_lets_requests_finish_and_marks_running_jobs_interrupted(run_server, plugin_env):
    import asyncio

    from deepaas_like.jobs.states import view
    from deepaas_like.jobs.store import JobStore

    server = run_server("crashy", "slow", env=plugin_env, args=["--shutdown-timeout", "20"])
    training = requests.post(server + "/v2/models/slow/train/", data={"seconds": "60"}).json()
    results = {}

    def slow_request():
        results["answer"] = requests.post(
            server + "/v2/models/crashy/predict/", data={"how": "sleep", "seconds": "2", "tag": "inflight"}
        )

    inflight = threading.Thread(target=slow_request)
    inflight.start()
    time.sleep(0.7)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    inflight.join()
    assert results["answer"].status_code == 200 and results["answer"].json()["predictions"]["tag"] == "inflight"
    assert server.process.wait(30) == 0
    assert time.monotonic() - started < 20

    async def read():
        store = await JobStore.open(server.database_url)
        try:
            # Rewritten for issue 27: a job row's view is jobs.states.view (the table is the database room's).
            return view(await store.get("slow", training["uuid"]))
        finally:
            await store.close()

    job = asyncio.run(read())
    assert job.status == "error" and "interrupted" in job.message


def test_shutdown_ends_event_streams_instead_of_waiting_for_them(run_server, plugin_env):
    server = run_server("slow", env=plugin_env, args=["--shutdown-timeout", "15"])
    job = requests.post(server + "/v2/models/slow/train/", data={"seconds": "1000"}).json()
    lines = []

    def follow():
        with requests.get(server + f"/v2/models/slow/train/{job['uuid']}/events", stream=True, timeout=60) as stream:
            lines.extend(stream.iter_lines(decode_unicode=True))

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(1.0)
    started = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(30) == 0
    follower.join(10)
    assert time.monotonic() - started < 10, "the open stream held the shutdown"
    assert any(line.startswith("event: job") for line in lines)


def test_each_worker_gets_its_own_gpu_shown_in_metadata_and_metrics(run_server, plugin_env):
    config = "[model:class_style]\nworkers = 2\ngpus = 0,1\n"
    path = run_server.workdir / "gpus.conf"
    path.write_text(config)
    server = run_server("class_style", "demo", env=plugin_env, args=["--config-file", str(path)])
    workers = requests.get(server + "/v2/models/class_style/").json()["workers"]
    assert sorted(workers, key=str) == [{"device": "gpu:0", "node": "local"}, {"device": "gpu:1", "node": "local"}]
    assert "workers" not in requests.get(server + "/v2/models/demo/").json(), "CPU workers: as DEEPaaS has it"
    seen = {requests.post(server + "/v2/models/class_style/predict/", data={"x": 1}).json()["predictions"]["gpu"]}
    for _ in range(20):
        seen.add(requests.post(server + "/v2/models/class_style/predict/", data={"x": 1}).json()["predictions"]["gpu"])
    assert seen <= {"0", "1"}
    text = requests.get(server + "/metrics").text
    for device in ("gpu:0", "gpu:1"):
        assert f'deepaas_like_workers_by_device{{device="{device}",model="class_style",node="local"}} 1.0' in text
    assert 'deepaas_like_workers_target{model="class_style"} 2.0' in text


def test_a_worker_that_does_not_leave_is_killed_before_the_shutdown_timeout_ends(run_server, tmp_path):
    from tests.conftest import make_plugin_site

    # The plugin's non-daemon thread keeps its idle workers from leaving when asked to.
    env = make_plugin_site(tmp_path / "site", {"lingering": "lingering"})
    server = run_server("lingering", env=env, args=["--shutdown-timeout", "2", "--workers", "2"])
    assert requests.post(server + "/v2/models/lingering/predict/").json()["predictions"]["threads"] >= 2
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0  # liveness only: the figures are benchmarks/shutdown.py's
    log = server.log.read_text()
    assert "killed 2 worker process(es) still running near the end of the shutdown timeout (2 s)" in log, log[-2000:]
