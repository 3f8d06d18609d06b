"""``--server-processes``: several server processes on one port, sharing the job database,
their metrics added up; one that dies is started again, one that cannot start stops all.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import pytest
import requests
from oslo_config import cfg

from deepaas_like import config
from tests.cmd.test_run import assert_one_line_failure, start
from tests.conftest import free_port
from tests.jobs.helpers import wait_for

SLOW = "/v2/models/slow"


def children(pid: int) -> list[int]:
    """PIDs of ``pid``'s child processes (/proc's ``children`` of its main thread)."""
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def server_processes(server) -> list[int]:
    """The supervisor's children that are server processes (not a multiprocessing helper)."""
    found = []
    for pid in children(server.process.pid):
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"deepaas-like-run" in cmdline.read():
                found.append(pid)
    return found


def metric(server, name: str, **labels: str) -> float | None:
    """A sample's value in ``/metrics``, None when absent."""
    text = requests.get(server + "/metrics", timeout=10).text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return None


def eventually(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.fixture
def two(run_server, plugin_env):
    """A server of two processes, once both answer (the first may answer before the other)."""
    server = run_server(
        "slow", env=plugin_env, args=["--server-processes", "2", "--workers", "1", "--job-poll-interval", "0.1"]
    )
    assert eventually(lambda: "2 server processes answer" in server.log.read_text()), server.log.read_text()
    return server


def test_two_processes_answer_on_one_port_and_their_metrics_add_up(two):
    assert len(server_processes(two)) == 2
    for _ in range(30):  # a connection each: the kernel gives them to either process
        answer = requests.post(two + SLOW + "/predict/", data={"seconds": "0"}, headers={"Connection": "close"})
        assert answer.json()["predictions"]["slept"] == 0
    # Each process has one worker; the one not scraped publishes within a second.
    assert eventually(lambda: metric(two, "deepaas_like_workers", model="slow") == 2)
    route = "/v2/models/{model_name}/predict/"
    labels = {"model": "slow", "route": route, "method": "POST", "status": "200"}
    assert metric(two, "deepaas_like_requests_total", **labels) == 30


def test_jobs_posted_to_either_process_run_once_and_are_seen_by_both(two):
    posted = [
        requests.post(two + SLOW + "/predict/?async=1", data={"seconds": "0.1"}, headers={"Connection": "close"}).json()
        for _ in range(6)
    ]
    for job in posted:
        done = wait_for(two + SLOW + f"/predict/{job['uuid']}", {"done"})
        assert done["result"]["output"]["predictions"]["slept"] == 0.1
    listed = requests.get(two + SLOW + "/predict/", headers={"Connection": "close"}).json()
    assert {job["uuid"] for job in listed} == {job["uuid"] for job in posted}
    assert metric(two, "deepaas_like_jobs", model="slow", kind="predict", status="done") == 6


def test_a_process_that_dies_is_started_again_and_the_other_keeps_answering(two):
    killed = server_processes(two)[0]
    os.kill(killed, signal.SIGKILL)
    for _ in range(10):
        answer = requests.post(two + SLOW + "/predict/", data={"seconds": "0"}, headers={"Connection": "close"})
        assert answer.status_code == 200
    replaced = eventually(lambda: len(server_processes(two)) == 2 and killed not in server_processes(two))
    assert replaced, server_processes(two)
    assert "ended (killed by SIGKILL); starting it again" in two.log.read_text()
    # The new process starts as the first two did (slowly on a loaded machine: bounds for
    # liveness, not speed), then its worker is counted with the other's (published each second).
    answers = eventually(lambda: two.log.read_text().count("INFO deepaas_like [-] serving slow at ") == 3, timeout=120)
    assert answers, two.log.read_text()[-4000:]
    counted = eventually(lambda: metric(two, "deepaas_like_workers", model="slow") == 2, 60)
    assert counted, (metric(two, "deepaas_like_workers", model="slow"), two.log.read_text()[-4000:])


def test_sigterm_stops_every_process(two):
    processes = server_processes(two)
    assert two.stop() == 0
    for pid in processes:
        assert not os.path.exists(f"/proc/{pid}"), f"server process {pid} outlived the supervisor"
    assert "INFO deepaas_like [-] stopped on SIGTERM in " in two.log.read_text()  # the supervisor's SIGTERM


def test_a_killed_supervisor_takes_its_server_processes_with_it(two):
    processes = server_processes(two)
    two.process.kill()
    two.process.wait()
    for pid in processes:  # reaped by init once they ended on the SIGTERM the kernel sent them
        assert eventually(lambda pid=pid: not os.path.exists(f"/proc/{pid}")), f"{pid} still runs"


def test_a_model_that_cannot_load_stops_every_process(tmp_path):
    started = time.monotonic()
    process = start(tmp_path, "--server-processes", "2", "--model-name", "broken")
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr, process.stderr
    assert re.search(r"^deepaas-like-run: .*broken", process.stderr, re.M), process.stderr
    assert time.monotonic() - started < 60


def test_an_address_in_use_is_reported_by_the_supervisor(tmp_path, run_server, plugin_env):
    server = run_server("slow", env=plugin_env, args=["--server-processes", "2"])
    port = server.rsplit(":", 1)[1]
    env = {**os.environ, **plugin_env}
    command = ["deepaas-like-run", "--listen-ip", "127.0.0.1", "--listen-port", port, "--model-name", "slow"]
    process = subprocess.run([*command, "--server-processes", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert_one_line_failure(process, f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--executor", "ray"], "executor ray"),
        (["--database-url", "sqlite://"], "in memory"),
        (["--database-url", "sqlite:///:memory:"], "in memory"),
    ],
)
def test_combinations_that_cannot_work_are_refused(args, words):
    # Was config.register + conf(...) + config.settings(conf): config.read parses and reads now.
    with pytest.raises(cfg.Error, match=words):
        config.read(["--server-processes", "2", *args], default_config_files=[], default_config_dirs=[])


def test_grpc_is_served_on_one_port_by_every_process(run_server, plugin_env):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    server = run_server("slow", env=plugin_env, args=["--server-processes", "2", "--grpc-port", str(port)])
    assert eventually(lambda: "2 server processes answer" in server.log.read_text())
    assert server.log.read_text().count(f", gRPC 127.0.0.1:{port}); job database") == 2  # each one's start line
    for _ in range(6):  # a channel, so a connection, each
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_grpc_port_in_use_is_reported_by_the_supervisor(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(tmp_path, "--server-processes", "2", "--grpc-port", str(port))
    assert_one_line_failure(process, f"127.0.0.1:{port}", "gRPC")


def test_connection_counts_are_shared_with_processes_forked_after():
    from deepaas_like.cmd.process_server.listening import SharedSocket  # moved out of api/ (issue 27, item 6)

    with socket.socket() as sock:
        shared = SharedSocket(sock, 3)
        pid = os.fork()
        if pid == 0:  # a server process: records its count where the others read it
            shared.index = 2
            shared.record(5)
            os._exit(0)
        os.waitpid(pid, 0)
        shared.record(7, index=1)
        assert shared.fewest_elsewhere() == 5  # this is index 0: processes 1 (7) and 2 (5)
        shared.gone(2)
        assert shared.fewest_elsewhere() == 7, "an ended process takes no connection"
