"""``--executor ray``: where replicas are placed (fake GPUs, node labels), what a start that
cannot succeed says, and autoscaling by queue length.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import threading
import time
from pathlib import Path

import requests

from tests.conftest import free_port
from tests.ray.conftest import NODE2_GPUS, Cluster, RayServers, answered, metric, wait_for


def test_two_replicas_are_placed_on_two_gpus(ray_servers: RayServers):
    config = "[model:ray_probe]\nworkers = 2\nray_num_gpus = 1\n\n[model:class_style]\nray_node_labels = zone:b\n"
    server = ray_servers("ray_probe", "class_style", config=config)
    workers = requests.get(server + "/v2/models/ray_probe/").json()["workers"]
    assert sorted(w["device"] for w in workers) == ["gpu:0", "gpu:1"]
    [gpu_node] = {w["node"] for w in workers}  # the only node with GPUs
    [labelled] = requests.get(server + "/v2/models/class_style/").json()["workers"]
    assert labelled == {"node": gpu_node, "device": "cpu"}, "placed on the node labelled zone=b"

    def predict(_: int) -> str:
        answer = requests.post(server + "/v2/models/ray_probe/predict/", data={"seconds": "0.4"})
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]["gpu"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        seen = set(pool.map(predict, range(8)))
    assert seen == {"0", "1"}, "each replica sees the GPU Ray gave it through CUDA_VISIBLE_DEVICES"
    for device in ("gpu:0", "gpu:1"):
        labels = f'device="{device}",model="ray_probe",node="{gpu_node}"'
        assert metric(server, "deepaas_like_workers_by_device", labels) == 1


def _start_fails(cluster: Cluster, env: dict[str, str], workdir: Path, *args: str) -> str:
    """Run a server that must not start; its last line on stderr."""
    cluster.ensure_running()
    command = ["deepaas-like-run", "--listen-port", str(free_port()), "--executor", "ray", *args]
    command += ["--database-url", f"sqlite:///{workdir}/jobs.sqlite"]
    env = {**cluster.env, **env, "XDG_STATE_HOME": str(workdir)}
    started = time.monotonic()
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    assert time.monotonic() - started < 90, "it did not wait for resources that never come"
    return run.stderr.strip().splitlines()[-1]


def test_a_model_no_node_can_hold_fails_its_start_naming_the_resource(cluster: Cluster, ray_env, tmp_path):
    common = ["--ray-address", cluster.address, "--model-name", "ray_probe"]
    line = _start_fails(cluster, ray_env, tmp_path, *common, "--ray-num-gpus", str(NODE2_GPUS + 2))
    assert line == (
        "deepaas-like-run: model 'ray_probe' cannot run on the Ray cluster: "
        "no node of the Ray cluster has 4 GPU (the most one node has: 2)"
    )
    line = _start_fails(cluster, ray_env, tmp_path, *common, "--ray-node-labels", "zone:c")
    assert line.endswith("no node of the Ray cluster has the label zone=c")


def test_an_unreachable_ray_address_is_a_one_line_error(cluster: Cluster, ray_env, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    line = _start_fails(cluster, ray_env, tmp_path, "--ray-address", address, "--model-name", "ray_probe")
    assert line.startswith(f"deepaas-like-run: cannot reach the Ray cluster at {address} (--ray-address): ")
    assert "nothing answers" in line


def test_autoscaling_adds_a_replica_under_load_and_removes_it_when_idle(ray_servers: RayServers):
    server = ray_servers("ray_probe", args=("--max-workers", "2", "--scale-up-delay", "0.5", "--scale-down-delay", "2"))
    assert metric(server, "deepaas_like_workers_target", 'model="ray_probe"') == 1
    stop = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        while not stop.is_set():
            answer = requests.post(server + "/v2/models/ray_probe/predict/", data={"seconds": "0.5"})
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(
            "a second replica placed under load",
            lambda: metric(server, "deepaas_like_workers", 'model="ray_probe"') == 2,
        )
        assert metric(server, "deepaas_like_workers_target", 'model="ray_probe"') == 2
        time.sleep(1)
        assert metric(server, "deepaas_like_workers_target", 'model="ray_probe"') == 2, "never past max-workers"
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200}
    wait_for(
        "back to one replica when idle",
        lambda: (
            metric(server, "deepaas_like_workers", 'model="ray_probe"') == 1
            and metric(server, "deepaas_like_workers_target", 'model="ray_probe"') == 1
        ),
    )
    answered("the remaining replica answers", lambda: requests.post(server + "/v2/models/ray_probe/predict/"))
