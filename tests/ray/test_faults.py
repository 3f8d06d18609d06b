"""``--executor ray`` in bad situations: a replica killed mid-request, a training cancelled,
a node stopped, the head lost. Each fails only what it must, with a message, and the
model serves again on its own.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.ray.conftest import SLOT, Cluster, RayServers, answered, metric, ready, wait_for


@pytest.fixture(scope="module")
def server(ray_servers: RayServers) -> str:
    return ray_servers("ray_probe", args=("--workers", "2"))


def _pid(path: Path) -> int:
    return wait_for(f"a pid in {path}", lambda: path.exists() and path.read_text() and int(path.read_text()))


def test_a_replica_killed_mid_request_fails_only_that_request(server, tmp_path):
    pidfile = tmp_path / "victim.pid"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        victim = pool.submit(
            requests.post, server + "/v2/models/ray_probe/predict/", data={"seconds": "60", "pidfile": str(pidfile)}
        )
        pid = _pid(pidfile)
        other = pool.submit(requests.post, server + "/v2/models/ray_probe/predict/", data={"seconds": "2"})
        time.sleep(0.5)  # the other request is on the other replica
        os.kill(pid, signal.SIGKILL)
        failed, served = victim.result(timeout=60), other.result(timeout=60)
    assert failed.status_code == 500
    assert "its replica (Ray actor, pid" in failed.json()["message"] and "died" in failed.json()["message"]
    assert served.status_code == 200 and served.json()["predictions"]["pid"] != pid
    answer = requests.post(server + "/v2/models/ray_probe/predict/")
    assert answer.status_code == 200, "the next request is served (by the other replica, or the new one)"
    wait_for(
        "a new replica replaces the dead one", lambda: metric(server, "deepaas_like_workers", 'model="ray_probe"') == 2
    )
    assert metric(server, "deepaas_like_worker_restarts_total", 'model="ray_probe"') >= 1


def test_cancelling_a_running_training_kills_its_replica(server, tmp_path):
    pidfile = tmp_path / "training.pid"
    started = requests.post(
        server + "/v2/models/ray_probe/train/", params={"seconds": "60", "pidfile": str(pidfile)}
    ).json()
    url = f"{server}/v2/models/ray_probe/train/{started['uuid']}"
    pid = _pid(pidfile)
    wait_for("the training reports progress", lambda: requests.get(url).json().get("progress", 0) > 0)
    cancelled = requests.delete(url).json()
    assert cancelled["status"] == "cancelled"
    wait_for(f"the replica running the training (pid {pid}) is gone", lambda: not Path(f"/proc/{pid}").exists())
    assert requests.get(url).json()["status"] == "cancelled"
    again = requests.post(server + "/v2/models/ray_probe/train/", params={"seconds": "0"}).json()
    done = wait_for(
        "a new training runs on a new replica",
        lambda: (
            (j := requests.get(f"{server}/v2/models/ray_probe/train/{again['uuid']}").json())["status"] == "done" and j
        ),
    )
    assert done["result"]["output"]["pid"] != pid


def test_a_stopped_node_leaves_the_model_serving_from_the_other(ray_servers: RayServers, cluster: Cluster):
    # Each node has one "slot", each replica takes one: one replica on each node.
    server = ray_servers("ray_probe", args=("--workers", "2", "--ray-resources", f"{SLOT}:1"))
    nodes = {w["node"] for w in requests.get(server + "/v2/models/ray_probe/").json()["workers"]}
    assert len(nodes) == 2
    stop = threading.Event()
    answers: list[requests.Response] = []

    def load() -> None:
        while not stop.is_set():
            answers.append(requests.post(server + "/v2/models/ray_probe/predict/", data={"seconds": "0.3"}))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        cluster.stop_node2()
        stopped = len(answers)
        wait_for(
            "ten answers in a row from the remaining node",
            lambda: len(answers) >= stopped + 10 and all(a.status_code == 200 for a in answers[-10:]),
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failures = [a for a in answers if a.status_code != 200]
    assert len(failures) <= 2, "only the calls running on the stopped node failed"
    assert all(a.status_code == 500 and "its replica (Ray actor" in a.json()["message"] for a in failures)
    cluster.ensure_running()
    wait_for(
        "the missing replica placed on the node that came back",
        lambda: metric(server, "deepaas_like_workers", 'model="ray_probe"') == 2,
        timeout=90,
    )


def test_losing_the_head_answers_503_until_it_is_back(ray_servers: RayServers, cluster: Cluster):
    server = ray_servers("ray_probe", args=("--ray-head-timeout", "2", "--ray-reconnect-interval", "1"))
    cluster.stop_head()
    lost = f"the Ray cluster at {cluster.address} cannot be reached"
    # At once: 503, its replica on the head is gone; within --ray-head-timeout, the reason.
    wait_for("/readyz says the cluster is lost", lambda: lost in requests.get(server + "/readyz").text)
    assert requests.get(server + "/readyz").status_code == 503
    refused = requests.post(server + "/v2/models/ray_probe/predict/")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert "cannot be reached" in refused.json()["message"]
    # A job waits for the cluster instead of failing.
    job = requests.post(server + "/v2/models/ray_probe/predict/", headers={"Prefer": "respond-async"})
    assert job.status_code == 202
    cluster.ensure_running()
    wait_for("/readyz ready again once the head is back", lambda: ready(server), timeout=120)
    answered("predictions served again", lambda: requests.post(server + "/v2/models/ray_probe/predict/"))
    done = wait_for(
        "the job posted while the head was away runs once it is back",
        lambda: (j := requests.get(server + job.headers["Location"]).json())["status"] != "running" and j,
    )
    assert done["status"] == "done", done.get("message")
