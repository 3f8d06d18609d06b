"""``--executor ray``: the routes, plugins, files, timeouts, batching, progress and request
ids, served by replicas (Ray actors) on a real two-node cluster.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import zipfile

import pytest
import requests

from tests.conftest import png_bytes
from tests.ray.conftest import RayServers, answered, metric, wait_for
from tests.versions.helpers import predict, train

CONFIG = """
[model:batching]
workers = 2
max_batch_size = 8
batch_wait_ms = 50

[model:crashy]
predict_timeout = 2
"""


@pytest.fixture(scope="module")
def server(ray_servers: RayServers) -> str:
    return ray_servers("demo", "deepaas_style", "ray_probe", "batching", "crashy", config=CONFIG)


def test_every_route_of_the_demo_plugin(server):
    assert requests.get(server + "/").json()["versions"][0]["id"] == "v2"
    assert requests.get(server + "/v2/").json()["id"] == "v2"
    assert "demo" in {m["id"] for m in requests.get(server + "/v2/models/").json()["models"]}
    metadata = requests.get(server + "/v2/models/demo/").json()
    assert metadata["warm"] is True, "warm() ran in the replica"
    [worker] = metadata["workers"]
    assert worker["device"] == "cpu" and len(worker["node"]) == 8, "a Ray node id, not this machine"

    image = {"image": ("red.png", png_bytes((50, 40), (200, 10, 10)), "image/png")}
    stats = requests.post(server + "/v2/models/demo/predict/", files=image)
    assert stats.status_code == 200, stats.text
    assert stats.json()["width"] == 50 and stats.json()["mean"] == [200.0, 10.0, 10.0]
    png = requests.post(server + "/v2/models/demo/predict/", files=image, headers={"Accept": "image/png"})
    assert png.headers["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    archive = requests.post(server + "/v2/models/demo/predict/", files=image, headers={"Accept": "application/zip"})
    assert archive.status_code == 200 and zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    bad = requests.post(server + "/v2/models/demo/predict/", files=image, data={"size": "2"})
    assert bad.status_code == 422 and "size" in bad.json()

    training = requests.post(server + "/v2/models/demo/train/", params={"epochs": 3})
    assert training.status_code == 200 and training.json()["status"] == "running"
    uuid = training.json()["uuid"]
    done = wait_for(
        "the demo training ends",
        lambda: (t := requests.get(f"{server}/v2/models/demo/train/{uuid}").json())["status"] == "done" and t,
    )
    assert done["progress"] == 1.0 and done["result"]["output"]["final_loss"] > 0
    assert uuid in {t["uuid"] for t in requests.get(server + "/v2/models/demo/train/").json()}
    assert requests.delete(f"{server}/v2/models/demo/train/{uuid}").json()["status"] == "done"
    assert requests.get(f"{server}/v2/models/demo/train/{'0' * 32}").status_code == 404

    assert "/v2/models/demo/predict/" in requests.get(server + "/swagger.json").json()["paths"]
    assert requests.get(server + "/api").status_code == 200
    assert requests.get(server + "/healthz").status_code == 200
    assert requests.get(server + "/readyz").json()["status"] == "ready"
    assert metric(server, "deepaas_like_workers", 'model="demo"') == 1
    assert metric(server, "deepaas_like_workers_target", 'model="demo"') == 1


def test_a_deepaas_style_plugin_runs_unchanged(server):
    files = {"data": ("notes.txt", b"four", "text/plain")}
    answer = requests.post(server + "/v2/models/deepaas_style/predict/", files=files)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "filename": "notes.txt",
        "size": 4,
        "label": "cat",
        "labels": ["cat", "dog"],
        "threshold": 0.5,
        "extra": None,
    }
    png = requests.post(server + "/v2/models/deepaas_style/predict/", files=files, headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    training = requests.post(server + "/v2/models/deepaas_style/train/", params={"sleep": 0})
    uuid = training.json()["uuid"]
    wait_for(
        "the deepaas-style training ends",
        lambda: requests.get(f"{server}/v2/models/deepaas_style/train/{uuid}").json()["status"] == "done",
    )


def test_uploads_and_binary_results_travel_through_the_object_store(server):
    upload = os.urandom(3 * 1024 * 1024 + 7)  # over the size that goes out of band
    answer = requests.post(server + "/v2/models/ray_probe/predict/", files={"data": ("big.bin", upload)})
    assert answer.status_code == 200, answer.text
    echoed = answer.json()["predictions"]
    assert echoed["size"] == len(upload) and echoed["sha256"] == hashlib.sha256(upload).hexdigest()
    assert echoed["filename"] == "big.bin"
    assert not echoed["local"].startswith(str(server.upload_dir)), "the replica read a copy, not the server's file"

    for size in (1000, 5 * 1024 * 1024 + 3):  # in the pickle, and out of band
        result = requests.post(
            server + "/v2/models/ray_probe/predict/",
            data={"size": str(size)},
            headers={"Accept": "application/octet-stream"},
        )
        assert result.status_code == 200, result.text
        assert result.content == bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert list(server.upload_dir.iterdir()) == [], "no upload or result file is left on the server"


def test_large_answers_inside_the_driver_messages_arrive_whole(server):
    # Up to 1 MiB a binary result travels inside the driver's message to the server (beyond,
    # out of band): under the server's default loop (uvloop) such a message is read in parts,
    # which once made the server take its driver for lost and answer nothing (issue 26).
    size = 1000 * 1024

    def predict(n: int) -> requests.Response:
        return requests.post(
            server + "/v2/models/ray_probe/predict/",
            data={"size": str(size + n)},
            headers={"Accept": "application/octet-stream"},
        )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(predict, range(8)))
    for n, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text[:300]
        assert answer.content == bytes(range(256)) * ((size + n) // 256) + bytes((size + n) % 256)
    assert requests.get(server + "/readyz").status_code == 200, "the cluster was never lost"


def test_a_prediction_past_its_timeout_is_504_and_its_replica_replaced(server):
    late = requests.post(server + "/v2/models/crashy/predict/", data={"how": "sleep", "seconds": "30"})
    assert late.status_code == 504 and "did not answer within 2 s" in late.json()["message"]
    answer = answered(
        "a new crashy replica answers",
        lambda: requests.post(server + "/v2/models/crashy/predict/", data={"tag": "after"}),
    )
    assert answer.json()["predictions"] == {"ok": True, "tag": "after"}
    assert metric(server, "deepaas_like_worker_restarts_total", 'model="crashy"') >= 1


def test_a_crash_in_plugin_code_fails_only_that_call(server):
    crash = requests.post(server + "/v2/models/crashy/predict/", data={"how": "exit"})
    assert crash.status_code == 500 and "died" in crash.json()["message"], crash.text
    answer = answered(
        "the next crashy call succeeds",
        lambda: requests.post(server + "/v2/models/crashy/predict/", data={"tag": "next"}),
    )
    assert answer.json()["predictions"]["tag"] == "next"


def test_batching_works_across_replicas(server):
    def predict(x: int) -> dict:
        # A batch takes 0.2 s: the next one forms while it runs, and goes to the idle replica.
        answer = requests.post(server + "/v2/models/batching/predict/", data={"x": str(x), "seconds": "0.2"})
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        results = list(pool.map(predict, range(48)))
    assert [r["y"] for r in results] == [x * x for x in range(48)]
    assert max(r["batch"] for r in results) > 1, "requests were grouped into batches"
    assert len({r["pid"] for r in results}) == 2, "both replicas took batches"


def test_progress_and_request_ids_reach_the_server(server):
    job = requests.post(
        server + "/v2/models/ray_probe/predict/", data={"seconds": "2"}, headers={"Prefer": "respond-async"}
    )
    assert job.status_code == 202, job.text
    location = job.headers["Location"]
    done = wait_for(
        "the asynchronous prediction ends",
        lambda: (j := requests.get(server + location).json())["status"] == "done" and j,
    )
    assert done["progress"] == 1.0
    assert [e["message"] for e in done["events"] if e.get("source") != "server"] == [
        f"step {n} of 4" for n in range(1, 5)
    ]

    request_id = "ray-request-" + os.urandom(4).hex()
    logged = requests.post(
        server + "/v2/models/ray_probe/predict/", data={"log": "hello"}, headers={"X-Request-ID": request_id}
    )
    assert logged.status_code == 200 and logged.headers["X-Request-ID"] == request_id
    wait_for(
        "the replica's log line, with the request id, in the server's log",
        lambda: any(request_id in line and "probe says hello" in line for line in server.log.read_text().splitlines()),
    )


def test_a_training_on_the_cluster_makes_a_version_its_own_replicas_load(ray_servers: RayServers):
    server = ray_servers("versioned", args=("--job-poll-interval", "0.1"))
    training = train(server, value=7, steps=3)
    assert training["status"] == "done", training
    assert training["result"]["version"] == "versioned@1"  # saved by the replica that trained
    answer = predict(server, "versioned@1", x=3)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["predictions"]["value"], answer.json()["predictions"]["loaded"]) == (7, True)
    [worker] = requests.get(server + "/v2/models/versioned@1/").json()["workers"]
    assert len(worker["node"]) == 8, "the version's own replica, on the cluster"
    assert predict(server, "versioned").json()["predictions"]["value"] == 0, "the base model is unchanged"
