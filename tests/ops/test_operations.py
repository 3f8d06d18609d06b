"""Operations through real servers: API keys, CORS, probes, metrics, request ids in the
server's and the worker's log lines, tracebacks only with --debug, graceful shutdown."""

from __future__ import annotations

import json
import signal
import threading
import time

import requests

from tests.conftest import png_bytes

PREDICT = "/v2/models/demo/predict/"


def test_api_keys_guard_predict_and_train(run_server, monkeypatch):
    monkeypatch.setenv("DEEPAAS_LIKE_AUTH_TOKENS", "from-env")
    server = run_server("demo", args=["--auth-token", "s3cret"])
    refused = requests.post(server + PREDICT, files={"image": png_bytes()})
    assert refused.status_code == 401 and "API key" in refused.json()["message"]
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        requests.post(
            server + PREDICT, files={"image": png_bytes()}, headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    assert (
        requests.post(
            server + PREDICT, files={"image": png_bytes()}, headers={"Authorization": "Bearer s3cret"}
        ).status_code
        == 200
    )
    assert (
        requests.post(server + PREDICT, files={"image": png_bytes()}, headers={"X-API-Key": "from-env"}).status_code
        == 200
    )
    assert requests.get(server + "/v2/models/demo/train/").status_code == 401
    for open_path in ("/", "/v2/models/", "/openapi.json", "/healthz", "/readyz", "/metrics"):
        assert requests.get(server + open_path).status_code == 200, open_path


def test_auth_docs_closes_everything_but_health(run_server):
    server = run_server("demo", args=["--auth-token", "k", "--auth-docs"])
    for path in ("/v2/models/", "/openapi.json", "/metrics"):
        assert requests.get(server + path).status_code == 401, path
        assert requests.get(server + path, headers={"X-API-Key": "k"}).status_code == 200, path
    assert requests.get(server + "/healthz").status_code == 200


def test_cors_for_configured_origins(run_server):
    server = run_server("demo", args=["--cors-origin", "http://app.example"])
    preflight = requests.options(
        server + PREDICT,
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers.get("Access-Control-Allow-Origin") == "http://app.example"
    simple = requests.get(server + "/v2/models/", headers={"Origin": "http://app.example"})
    assert simple.headers.get("Access-Control-Allow-Origin") == "http://app.example"
    other = requests.get(server + "/v2/models/", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_probes_and_metrics(run_server, plugin_env):
    server = run_server("demo", "batching", env=plugin_env)
    assert requests.get(server + "/healthz").json() == {"status": "ok"}
    assert requests.get(server + "/readyz").json() == {"status": "ready", "models": ["demo", "batching"]}
    requests.post(server + PREDICT, files={"image": png_bytes()})
    requests.post(server + PREDICT, data={"size": "1"})
    threads = [
        threading.Thread(
            target=requests.post, args=(server + "/v2/models/batching/predict/",), kwargs={"data": {"x": str(i)}}
        )
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    requests.post(server + "/v2/models/demo/train/", data={"epochs": "1"})
    text = requests.get(server + "/metrics").text
    assert (
        'deepaas_like_requests_total{method="POST",model="demo",route="/v2/models/{model_name}/predict/",status="200"} 1.0'  # noqa: E501 - the exposition line as served
        in text
    )
    assert (
        'deepaas_like_requests_total{method="POST",model="demo",route="/v2/models/{model_name}/predict/",status="422"} 1.0'  # noqa: E501
        in text
    )
    assert (
        'deepaas_like_request_duration_seconds_count{method="POST",model="demo",route="/v2/models/{model_name}/predict/"} 2.0'  # noqa: E501
        in text
    )
    assert 'deepaas_like_queue_depth{model="demo"} 0.0' in text
    assert 'deepaas_like_workers{model="demo"} 1.0' in text
    assert 'deepaas_like_batch_size_count{model="batching"}' in text
    assert 'deepaas_like_jobs{kind="train",model="demo",status=' in text
    unknown = requests.post(server + "/v2/models/nope-123/predict/")
    assert unknown.status_code == 404 and 'model="nope-123"' not in requests.get(server + "/metrics").text


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


def test_tracebacks_only_with_debug(run_server, plugin_env):
    quiet = run_server("failing", env=plugin_env)
    assert "traceback" not in requests.post(quiet + "/v2/models/failing/predict/", data={"how": "raise"}).json()
    debug = run_server("failing", env=plugin_env, args=["--debug"])
    body = requests.post(debug + "/v2/models/failing/predict/", data={"how": "raise"}).json()
    assert "RuntimeError: the model broke" in body["traceback"]
    assert requests.get(quiet + "/debug").status_code == 404, "the debug endpoint is off by default"


def test_sigterm_lets_requests_finish_and_marks_running_jobs_interrupted(run_server, plugin_env):
    import asyncio

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
            return (await store.get("slow", training["uuid"])).to_view()
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
    assert requests.get(server + "/v2/models/demo/").json()["workers"] == [{"node": "local", "device": "cpu"}]
    seen = {requests.post(server + "/v2/models/class_style/predict/", data={"x": 1}).json()["predictions"]["gpu"]}
    for _ in range(20):
        seen.add(requests.post(server + "/v2/models/class_style/predict/", data={"x": 1}).json()["predictions"]["gpu"])
    assert seen <= {"0", "1"}
    text = requests.get(server + "/metrics").text
    for device in ("gpu:0", "gpu:1"):
        assert f'deepaas_like_workers_by_device{{device="{device}",model="class_style",node="local"}} 1.0' in text
    assert 'deepaas_like_workers_target{model="class_style"} 2.0' in text
