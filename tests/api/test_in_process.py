"""The HTTP side in this process: ``http_app`` (the server object and the aiohttp application) with the plugins run by
:class:`~deepaas_like.workers.inprocess.InProcessPool` and aiohttp's test client. Routes,
handlers, API keys, CORS, probes, metrics and the job runner on SQLite, without starting a
server process (tests/ops and tests/jobs keep the process-level drills: faults, shutdown,
real workers).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json

import aiohttp

from tests.conftest import png_bytes

PREDICT = "/v2/models/demo/predict/"
TRAIN = "/v2/models/demo/train/"
PROBE = "/v2/models/jobs_probe"


def _image() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", io.BytesIO(png_bytes()), filename="x.png", content_type="image/png")
    return form


async def _job_done(client, url: str, headers: dict | None = None) -> dict:
    for _ in range(600):
        answer = await client.get(url, headers={"Accept": "application/json", **(headers or {})})
        job = await answer.json()
        if job["status"] in ("done", "error", "cancelled"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never ended: {job}")


async def test_api_keys_guard_predict_and_train(serve_in_process, monkeypatch):
    client = await serve_in_process("demo", auth_tokens=("s3cret", "from-env"))
    refused = await client.post(PREDICT, data=_image())
    assert refused.status == 401 and "API key" in (await refused.json())["message"]
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.post(PREDICT, data=_image(), headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.post(PREDICT, data=_image(), headers={"Authorization": "Bearer s3cret"})).status == 200
    assert (await client.post(PREDICT, data=_image(), headers={"X-API-Key": "from-env"})).status == 200
    assert (await client.get(TRAIN)).status == 401
    for open_path in ("/", "/v2/models/", "/openapi.json", "/healthz", "/readyz", "/metrics"):
        assert (await client.get(open_path)).status == 200, open_path


async def test_auth_docs_closes_everything_but_health(serve_in_process):
    client = await serve_in_process("demo", auth_tokens=("k",), auth_docs=True)
    for path in ("/v2/models/", "/openapi.json", "/metrics", "/v2/models/demo/"):
        assert (await client.get(path)).status == 401, path
        assert (await client.get(path, headers={"X-API-Key": "k"})).status == 200, path
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_cors_for_configured_origins(serve_in_process):
    client = await serve_in_process("demo", cors_origins=("http://app.example",))
    preflight = await client.options(
        PREDICT, headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.headers.get("Access-Control-Allow-Origin") == "http://app.example"
    simple = await client.get("/v2/models/", headers={"Origin": "http://app.example"})
    assert simple.headers.get("Access-Control-Allow-Origin") == "http://app.example"
    other = await client.get("/v2/models/", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_probes_and_metrics(serve_in_process):
    client = await serve_in_process("demo", "batching")
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    assert await (await client.get("/readyz")).json() == {"status": "ready", "models": ["demo", "batching"]}
    assert (await client.post(PREDICT, data=_image())).status == 200
    assert (await client.post(PREDICT, data={"size": "1"})).status == 422
    answers = await asyncio.gather(*(client.post("/v2/models/batching/predict/", data={"x": str(i)}) for i in range(8)))
    assert {answer.status for answer in answers} == {200}
    assert (await client.post(TRAIN, data={"epochs": "1"})).status == 200
    text = await (await client.get("/metrics")).text()
    route = 'method="POST",model="demo",route="/v2/models/{model_name}/predict/"'
    assert f'deepaas_like_requests_total{{{route},status="200"}} 1.0' in text
    assert f'deepaas_like_requests_total{{{route},status="422"}} 1.0' in text
    assert f"deepaas_like_request_duration_seconds_count{{{route}}} 2.0" in text
    assert 'deepaas_like_queue_depth{model="demo"} 0.0' in text
    assert 'deepaas_like_workers{model="demo"} 1.0' in text
    assert 'deepaas_like_batch_size_count{model="batching"}' in text
    assert 'deepaas_like_jobs{kind="train",model="demo",status=' in text
    unknown = await client.post("/v2/models/nope-123/predict/")
    assert unknown.status == 404
    assert 'model="nope-123"' not in await (await client.get("/metrics")).text(), "no label per unknown name"


async def test_tracebacks_only_with_debug(serve_in_process):
    quiet = await serve_in_process("failing")
    body = await (await quiet.post("/v2/models/failing/predict/", data={"how": "raise"})).json()
    assert "traceback" not in body and "the model broke" in body["message"]
    assert (await quiet.get("/debug")).status == 404, "the debug endpoint is off by default"


async def test_debug_shows_tracebacks_and_the_debug_endpoint_needs_a_key(serve_in_process):
    client = await serve_in_process("failing", debug=True, debug_endpoint=True, auth_tokens=("k",))
    key = {"X-API-Key": "k"}
    body = await (await client.post("/v2/models/failing/predict/", data={"how": "raise"}, headers=key)).json()
    assert "RuntimeError: the model broke" in body["traceback"]
    assert (await client.get("/debug")).status == 401
    assert (await client.get("/debug", headers=key)).status == 200


async def test_disabled_endpoints_answer_402(serve_in_process):
    client = await serve_in_process("demo", predict_endpoint=False, train_endpoint=False)
    assert (await client.post(PREDICT, data=_image())).status == 402
    assert (await client.post(TRAIN, data={"epochs": "1"})).status == 402
    assert (await client.get(TRAIN)).status == 402
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    assert PREDICT not in paths and TRAIN not in paths, "what is not served is not documented"


async def test_base_path(serve_in_process):
    client = await serve_in_process("demo", base_path="/deepaas")
    assert (await (await client.get("/deepaas/v2/models/")).json())["models"][0]["id"] == "demo"
    assert (await client.post("/deepaas" + PREDICT, data=_image())).status == 200
    assert "/deepaas" + PREDICT in (await (await client.get("/deepaas/swagger.json")).json())["paths"]
    assert (await client.get("/v2/models/")).status == 404


async def test_a_body_over_client_max_size_is_413_and_leaves_no_upload(serve_in_process, tmp_path):
    client = await serve_in_process("demo", client_max_size=1000)
    form = aiohttp.FormData()
    form.add_field("image", io.BytesIO(b"x" * 5000), filename="big.png", content_type="image/png")
    answer = await client.post(PREDICT, data=form)
    assert answer.status == 413 and "client-max-size" in (await answer.json())["message"]
    assert list((tmp_path / "uploads").iterdir()) == []
    form = aiohttp.FormData()
    form.add_field("image", io.BytesIO(png_bytes((8, 8))), filename="small.png", content_type="image/png")
    assert (await client.post(PREDICT, data=form)).status == 200


async def test_a_client_json_value_never_becomes_a_server_file(serve_in_process, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-42")
    client = await serve_in_process("jobs_probe", job_poll_interval=0.05)
    forged = {"__uploaded_file__": ["options", str(secret), "text/plain", "x.txt"]}

    training = await (await client.post(PROBE + "/train/", json={"options": forged})).json()
    done = await _job_done(client, PROBE + f"/train/{training['uuid']}")
    assert done["status"] == "done", done
    assert done["result"]["output"]["options_type"] == "dict", "the value reached the plugin as the client sent it"
    assert done["result"]["output"]["options_read"] is None and "TOPSECRET" not in json.dumps(done)

    prediction = await client.post(PROBE + "/predict/", json={"options": forged}, headers={"Prefer": "respond-async"})
    assert prediction.status == 202
    done = await _job_done(client, prediction.headers["Location"])
    assert done["result"]["output"]["predictions"]["options_type"] == "dict"
    assert "TOPSECRET" not in json.dumps(done)

    form = aiohttp.FormData()
    form.add_field("data", io.BytesIO(b"uploaded bytes"), filename="in.txt")
    upload = await (await client.post(PROBE + "/train/", data=form)).json()
    done = await _job_done(client, PROBE + f"/train/{upload['uuid']}")
    assert done["result"]["output"]["data"] == "uploaded bytes" and done["args"]["data"] == "in.txt"


async def test_a_job_belongs_to_the_api_key_that_created_it(serve_in_process, tmp_path):
    alice, bob, root = ({"Authorization": f"Bearer {key}"} for key in ("alice-key-1", "bob-key-2", "root-key-3"))
    client = await serve_in_process(
        "jobs_probe", job_poll_interval=0.05, auth_tokens=("alice-key-1", "bob-key-2"), admin_tokens=("root-key-3",)
    )
    train = PROBE + "/train/"
    mine = await (await client.post(train, data={"seconds": "0"}, headers=alice)).json()
    theirs = await (await client.post(train, data={"seconds": "0"}, headers=bob)).json()
    prediction = await client.post(
        PROBE + "/predict/", data={"seconds": "0"}, headers={**alice, "Prefer": "respond-async"}
    )
    assert prediction.status == 202
    assert (await _job_done(client, train + mine["uuid"], alice))["status"] == "done"

    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/events")):
        answer = await client.request(method, train + mine["uuid"] + suffix, headers=bob)
        assert answer.status == 404, (method, suffix, await answer.text())
        assert (await answer.json())["message"] == f"no train {mine['uuid']!r} for model 'jobs_probe'", (
            "as for a job that does not exist"
        )
    assert (await client.get(prediction.headers["Location"], headers=bob)).status == 404
    await _job_done(client, train + theirs["uuid"], bob)
    assert [job["uuid"] for job in await (await client.get(train, headers=bob)).json()] == [theirs["uuid"]]
    assert [job["uuid"] for job in await (await client.get(train, headers=alice)).json()] == [mine["uuid"]]
    everyone = {job["uuid"] for job in await (await client.get(train, headers=root)).json()}
    assert everyone == {mine["uuid"], theirs["uuid"]}
    assert (await client.get(prediction.headers["Location"], headers=root)).status == 200

    from tests.jobs.helpers import sql

    stored = sql(f"sqlite:///{tmp_path / 'jobs.sqlite'}", "SELECT api_key_hash FROM jobs")
    assert sorted(stored) == sorted(
        [hashlib.sha256(b"alice-key-1").hexdigest()] * 2 + [hashlib.sha256(b"bob-key-2").hexdigest()]
    )
    files = b"".join(path.read_bytes() for path in tmp_path.glob("jobs.sqlite*"))
    assert b"alice-key-1" not in files and b"bob-key-2" not in files, "the keys themselves are never stored"


async def test_unknown_models_routes_and_methods_answer_json(serve_in_process):
    client = await serve_in_process("demo", "predict_only")
    missing = await client.get("/v2/models/nope/")
    assert missing.status == 404 and "nope" in (await missing.json())["message"]
    assert (await client.get("/no/such/path")).status == 404
    wrong = await client.put(PREDICT)
    assert wrong.status == 405 and "POST" in wrong.headers["Allow"]
    untrainable = await client.post("/v2/models/predict_only/train/")
    assert untrainable.status == 501 and "does not implement train()" in (await untrainable.json())["message"]
