"""Workers as an operator meets them: killed while idle, outliving a server killed by
``kill -9``, out of memory under --worker-memory-limit; and a server stopped by SIGTERM
while predictions run and wait (issue 10, items 3, 5, 10 and 12).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import requests

UNRULY = "/v2/models/unruly/predict/"


def _pid_of_worker(server: str) -> int:
    answer = requests.post(server + UNRULY, data={"how": "ok"}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]["pid"]


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_worker_killed_while_idle_is_replaced_at_once(run_server, plugin_env, tmp_path):
    slow_warm = tmp_path / "slow-warm"
    server = run_server("unruly", env={**plugin_env, "UNRULY_SLOW_WARM": str(slow_warm)})
    first = _pid_of_worker(server)
    slow_warm.write_text("")  # the replacement takes 3 s to warm: time to look at /readyz
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (ready := requests.get(server + "/readyz", timeout=5)).status_code == 200:
        assert time.monotonic() < deadline, "/readyz says ready with no live worker"
        time.sleep(0.05)
    assert ready.status_code == 503 and "no live worker" in ready.json()["models"]["unruly"]
    # Waits for the replacement instead of failing on the dead worker's pipe.
    assert _pid_of_worker(server) != first
    assert requests.get(server + "/readyz", timeout=5).status_code == 200
    metrics = requests.get(server + "/metrics", timeout=5).text
    assert 'deepaas_like_worker_restarts_total{model="unruly"} 1.0' in metrics


def test_kill_9_of_the_server_ends_its_workers_and_their_processes(run_server, plugin_env, tmp_path):
    pids_file = tmp_path / "pids"
    server = run_server("unruly", env={**plugin_env, "UNRULY_PIDS": str(pids_file)})
    training = requests.post(server + "/v2/models/unruly/train/", data={"seconds": "60"}, timeout=10)
    assert training.status_code == 200, training.text
    deadline = time.monotonic() + 60
    while len(pids_file.read_text().split() if pids_file.exists() else []) < 3:
        assert time.monotonic() < deadline, "the training never started"
        time.sleep(0.1)
    # The training's worker, a multiprocessing child and a subprocess it started.
    pids = [int(pid) for pid in pids_file.read_text().split()]
    try:
        assert all(_running(pid) for pid in pids)
        server.process.kill()
        server.process.wait()
        deadline = time.monotonic() + 10
        while survivors := [pid for pid in pids if _running(pid)]:
            assert time.monotonic() < deadline, f"still running 10 s after the server was killed: {survivors}"
            time.sleep(0.1)
    finally:
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_that_ran_out_of_memory_is_replaced(run_server, plugin_env):
    server = run_server("unruly", env=plugin_env, args=["--worker-memory-limit", "1500"])
    first = _pid_of_worker(server)
    # The plugin keeps what it allocated (a cache that grows without bound), so the worker
    # would fail every later call that needs memory.
    answer = requests.post(server + UNRULY, data={"how": "leak"}, timeout=60)
    assert answer.status_code == 500 and "MemoryError" in answer.json()["message"]
    assert _pid_of_worker(server) != first


def test_sigterm_answers_what_cannot_finish_503_and_exits_within_the_timeout(run_server, plugin_env):
    server = run_server("unruly", env=plugin_env, args=["--shutdown-timeout", "4"])
    answers: dict[str, requests.Response | Exception] = {}

    def predict(tag: str) -> None:
        try:
            answers[tag] = requests.post(
                server + UNRULY, data={"how": "sleep", "seconds": "25", "tag": tag}, timeout=60
            )
        except requests.RequestException as error:
            answers[tag] = error

    clients = [threading.Thread(target=predict, args=(tag,)) for tag in ("running", "queued")]
    for client in clients:
        client.start()
        time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    # 4 s of shutdown timeout, and a little for the clean-up: far less than the 25 s
    # prediction running (or the 50 s that the queued one needs).
    assert server.process.wait(timeout=10) == 0
    for client in clients:
        client.join(10)
    for tag in ("running", "queued"):
        answer = answers[tag]
        assert isinstance(answer, requests.Response), f"{tag}: no answer: {answer}"
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", answer.text
        assert "shutting down" in answer.json()["message"]
