"""A multipart body of many tiny parts against a real server (issue 26, item 1), on
127.0.0.1 only: how long ``GET /healthz`` takes while the body arrives, and what the body
is answered.

    python benchmarks/multipart_flood.py [--parts 20000 --parts 50000] [--rounds 3] [--max-form-parts N]

Each body is a predict of the ``predict_only`` test plugin made of ``--parts`` one-byte
form fields (20,000 of them are 1.1 MB, as in the issue), sent at once on one connection.
Meanwhile a second client asks ``/healthz`` on a keep-alive connection, pausing
``--probe-interval`` ms between answers. The server is whichever ``deepaas_like`` comes
first on ``PYTHONPATH`` (``PYTHONPATH=/tmp/main-src python benchmarks/multipart_flood.py``
measures an export of another branch: ``git archive main | tar -x -C /tmp/main-src``); ``--max-form-parts 0`` has a server parse every part (the event loop
must stay free meanwhile). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

ROOT = Path(__file__).resolve().parent.parent
MODEL = "predict_only"
PATH = f"/v2/models/{MODEL}/predict/"
BOUNDARY = "flood"


def plugin_env(site: Path) -> dict[str, str]:
    """The test plugin ``predict_only`` made discoverable (an entry point on PYTHONPATH), after
    whatever PYTHONPATH already names (the ``deepaas_like`` tree measured)."""
    dist = site / "deepaas_like_bench_flood-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: deepaas-like-bench-flood\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[deepaas.v2.model]\n{MODEL} = {MODEL}\n")
    path = [os.environ.get("PYTHONPATH", ""), str(site), str(ROOT / "tests" / "fixtures" / "plugins")]
    return {"PYTHONPATH": os.pathsep.join(entry for entry in path if entry)}


def flood_body(parts: int) -> bytes:
    """``parts`` form fields of one byte each: 55 bytes a part."""
    one = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n'.encode()
    return one * parts + f"--{BOUNDARY}--\r\n".encode()


def send_flood(port: int, body: bytes, timeout: float) -> tuple[str, float]:
    """POST ``body`` on a connection of its own; the answer's status (or why there was none)
    and the seconds from the first byte sent to the answer's head."""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    with socket.create_connection((harness.HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(head + body)
            answer = sock.recv(4096)
        except TimeoutError:
            return f"no answer in {timeout:g} s", time.perf_counter() - started
        except ConnectionError as error:
            return type(error).__name__, time.perf_counter() - started
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
    return status, time.perf_counter() - started


def one_round(url: str, port: int, parts: int, interval: float, timeout: float) -> dict[str, float | str]:
    """One flood with ``/healthz`` probed beside it; the figures."""
    done = threading.Event()
    probes: list[float] = []

    def probe() -> None:
        with requests.Session() as session:
            while not done.is_set():
                started = time.perf_counter()
                session.get(url + "/healthz", timeout=timeout + 30).raise_for_status()
                probes.append(time.perf_counter() - started)
                time.sleep(interval)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.1)  # a few probes of the idle server first
    body = flood_body(parts)
    status, seconds = send_flood(port, body, timeout)
    done.set()
    prober.join()
    return {
        "parts": parts,
        "body_mb": len(body) / 1e6,
        "status": status,
        "seconds": seconds,
        "p50_ms": 1000 * statistics.median(probes),
        "max_ms": 1000 * max(probes),
        "probes": len(probes),
    }


def serve(workdir: Path, extra: list[str]) -> tuple[harness.Server, str]:
    port = harness.free_port()
    argv = [
        shutil.which("deepaas-like-run") or "deepaas-like-run",
        "--listen-ip",
        harness.HOST,
        "--listen-port",
        str(port),
        "--model-name",
        MODEL,
        "--database-url",
        f"sqlite:///{workdir / 'jobs.sqlite'}",
        "--upload-dir",
        str(workdir),
        *extra,
    ]
    env = {**plugin_env(workdir / "site"), "XDG_STATE_HOME": str(workdir / "state")}
    server = harness.start_server("deepaas_like", argv, port, workdir / "server.log", env)
    url = f"http://{harness.HOST}:{port}"
    deadline = time.monotonic() + 120
    while True:
        if server.process.poll() is not None or time.monotonic() > deadline:
            harness.stop_server(server)
            raise harness.BenchmarkError(f"the server did not start:\n{server.tail()}")
        try:
            requests.get(url + "/healthz", timeout=1)
            return server, url
        except requests.ConnectionError:
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, action="append", help="parts of a body (repeat); default 20000 and 50000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probe-interval", type=float, default=5.0, help="ms between two /healthz probes")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a flood's answer is waited for")
    parser.add_argument(
        "--max-form-parts", type=int, help="the server's --max-form-parts (0: no limit; default: the server's own)"
    )
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="deepaas-like-bench-flood-"))
    try:
        extra = [] if options.max_form_parts is None else ["--max-form-parts", str(options.max_form_parts)]
        server, url = serve(workdir, extra)
        try:
            import deepaas_like

            code = Path(deepaas_like.__file__).resolve().parent.parent
            rows = [
                one_round(url, server.port, parts, options.probe_interval / 1000, options.timeout)
                for parts in options.parts or [20000, 50000]
                for _ in range(options.rounds)
            ]
        finally:
            harness.stop_server(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    limit = "" if options.max_form_parts is None else f"; --max-form-parts {options.max_form_parts}"
    print(f"deepaas_like from {code}; {os.cpu_count()} cores; /healthz every {options.probe_interval:g} ms{limit}\n")
    print("| parts | body (MB) | flood answer | flood seconds | /healthz p50 (ms) | /healthz max (ms) | probes |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['parts']} | {row['body_mb']:.2f} | {row['status']} | {row['seconds']:.2f} "
            f"| {row['p50_ms']:.1f} | {row['max_ms']:.0f} | {row['probes']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
