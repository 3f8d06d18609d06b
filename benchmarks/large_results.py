"""A plugin returning a large binary result (issue 10, item 9), on 127.0.0.1 only: the
server's and its workers' peak memory, and how long ``GET /healthz`` takes while the result
travels from the worker to the client.

    python benchmarks/large_results.py [--size-mb 512] [--rounds 3] [--pythonpath DIR]

``--pythonpath`` puts another copy of the ``deepaas_like`` package first (e.g. an export of
an older commit, to compare). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

PLUGIN = """
from marshmallow import fields


def get_predict_args():
    return {"size": fields.Int(required=True)}


def predict(size):
    return b"x" * size
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plugin_site(directory: Path) -> str:
    """A plugin ``large_result`` found through a real entry point; returns its PYTHONPATH entry."""
    (directory / "large_result.py").write_text(PLUGIN)
    dist = directory / "large_result-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: large-result\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[deepaas.v2.model]\nlarge_result = large_result\n")
    return str(directory)


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (FileNotFoundError, ProcessLookupError):
        return 0


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except FileNotFoundError:
                continue
            found += map(int, children)
            todo += map(int, children)
    return found


def one_round(url: str, server_pid: int, size: int) -> dict[str, float]:
    """Stream one result while sampling memory and probing /healthz; the figures."""
    done = threading.Event()
    peaks = {"server": 0, "workers": 0}
    probes: list[float] = []

    def sample() -> None:
        while not done.is_set():
            peaks["server"] = max(peaks["server"], rss(server_pid))
            peaks["workers"] = max(peaks["workers"], sum(rss(pid) for pid in descendants(server_pid)))
            time.sleep(0.02)

    def probe() -> None:
        with requests.Session() as session:
            while not done.is_set():
                started = time.perf_counter()
                session.get(url + "/healthz", timeout=60).raise_for_status()
                probes.append(time.perf_counter() - started)
                time.sleep(0.02)

    threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    received = 0
    with requests.post(
        url + "/v2/models/large_result/predict/", data={"size": size}, stream=True, timeout=600
    ) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_content(1024 * 1024):
            received += len(chunk)
    elapsed = time.perf_counter() - started
    done.set()
    for thread in threads:
        thread.join()
    assert received == size, f"received {received} bytes of {size}"
    probes.sort()
    return {
        "seconds": elapsed,
        "server_peak_mib": peaks["server"] / 2**20,
        "workers_peak_mib": peaks["workers"] / 2**20,
        "healthz_p50_ms": 1000 * statistics.median(probes),
        "healthz_max_ms": 1000 * probes[-1],
        "probes": len(probes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pythonpath", help="directory put first on PYTHONPATH (another deepaas_like)")
    options = parser.parse_args()
    size = options.size_mb * 2**20
    workdir = Path(tempfile.mkdtemp(prefix="deepaas-like-bench-"))
    site = workdir / "site"
    site.mkdir()
    path = [entry for entry in (options.pythonpath, plugin_site(site), os.environ.get("PYTHONPATH")) if entry]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        shutil.which("deepaas-like-run") or "deepaas-like-run",
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--model-name",
        "large_result",
        "--database-url",
        f"sqlite:///{workdir / 'jobs.sqlite'}",
        "--upload-dir",
        str(workdir),
        "--noaccess-log",
    ]
    with open(workdir / "server.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the server did not start:\n{(workdir / 'server.log').read_text()}")
            try:
                requests.get(url + "/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        idle = {"server": rss(server.pid), "workers": sum(rss(pid) for pid in descendants(server.pid))}
        rounds = [one_round(url, server.pid, size) for _ in range(options.rounds)]
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{options.size_mb} MiB binary result, {options.rounds} rounds; idle: server "
        f"{idle['server'] / 2**20:.0f} MiB, workers {idle['workers'] / 2**20:.0f} MiB; {os.cpu_count()} cores\n"
    )
    print(
        "| round | seconds | server peak RSS (MiB) | workers peak RSS (MiB) | /healthz p50 (ms) | /healthz max (ms) | probes |"
    )
    print("|---|---|---|---|---|---|---|")
    for number, figures in enumerate(rounds, 1):
        print(
            f"| {number} | {figures['seconds']:.2f} | {figures['server_peak_mib']:.0f} | {figures['workers_peak_mib']:.0f} "
            f"| {figures['healthz_p50_ms']:.1f} | {figures['healthz_max_ms']:.0f} | {figures['probes']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
