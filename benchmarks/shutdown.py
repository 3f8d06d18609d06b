"""Seconds from SIGTERM to exit with ``--shutdown-timeout`` (issue 26, item 5): the whole
shutdown, clean-up included, should fit in the timeout.

    python benchmarks/shutdown.py [--code DIR] [--timeouts 6,2] [--rounds 3] [--hogs 0]

Two cases, on 127.0.0.1: ``busy``, the test plugin ``slow`` with 2 workers running 3
predictions and a training of 60 s each when SIGTERM arrives; ``lingering``, the test plugin
``lingering`` whose 2 idle workers do not leave when asked (a non-daemon thread). ``--code
DIR`` serves the deepaas_like package found in DIR (e.g. ``git archive main | tar -x -C
/tmp/main-src``) instead of the installed one, so that one script measures before and after.
``--hogs N`` runs N CPU-bound processes beside (a busy machine). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import TEST_PLUGINS, free_port, make_plugin_site  # noqa: E402

PLUGINS = {**TEST_PLUGINS, "lingering": "lingering"}


def start(workdir: Path, code: str | None, model: str, timeout: float) -> tuple[subprocess.Popen, str]:
    """``deepaas-like-run`` serving ``model`` with 2 workers; (process, base URL) once it answers."""
    port = free_port()
    site = make_plugin_site(workdir / "site", PLUGINS)
    path = os.pathsep.join(p for p in (code, site["PYTHONPATH"]) if p)
    command = [
        sys.executable,
        "-m",
        "deepaas_like.cmd.run",
        "--listen-port",
        str(port),
        "--model-name",
        model,
        "--workers",
        "2",
        "--shutdown-timeout",
        str(timeout),
        "--database-url",
        f"sqlite:///{workdir / 'jobs.sqlite'}",
    ]
    log = open(workdir / f"server-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "PYTHONPATH": path, "XDG_STATE_HOME": str(workdir / "state")}
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}: see {log.name}")
        try:
            requests.get(url + "/", timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not answer within 120 s: see {log.name}")


def busy(url: str) -> list[threading.Thread]:
    """3 predictions and a training of 60 s each, running."""

    def predict() -> None:
        try:
            requests.post(url + "/v2/models/slow/predict/", data={"seconds": "60"}, timeout=90)
        except requests.RequestException:
            pass

    clients = [threading.Thread(target=predict) for _ in range(3)]
    for client in clients:
        client.start()
    requests.post(url + "/v2/models/slow/train/", data={"seconds": "60"}, timeout=30).raise_for_status()
    return clients


def one_round(code: str | None, case: str, timeout: float) -> float:
    with tempfile.TemporaryDirectory() as folder:
        process, url = start(Path(folder), code, "slow" if case == "busy" else "lingering", timeout)
        try:
            clients = busy(url) if case == "busy" else []
            time.sleep(2)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=timeout + 60)
            seconds = time.monotonic() - sent
            for client in clients:
                client.join(30)
            return seconds
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--code", help="serve the deepaas_like package in this directory")
    parser.add_argument("--timeouts", default="6,2", help="values of --shutdown-timeout, seconds, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=0, help="CPU-bound processes running beside")
    options = parser.parse_args()
    code = str(Path(options.code).resolve()) if options.code else None
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(options.hogs)]
    try:
        print(f"Shutdown; code: {code or 'installed'}; {options.hogs} CPU-bound processes beside\n")
        print("| case | --shutdown-timeout (s) | SIGTERM to exit, median (s) | max (s) | rounds |")
        print("|---|---|---|---|---|")
        for timeout in (float(value) for value in options.timeouts.split(",")):
            for case in ("busy", "lingering"):
                seconds = [one_round(code, case, timeout) for _ in range(options.rounds)]
                median, most = statistics.median(seconds), max(seconds)
                print(f"| {case} | {timeout:g} | {median:.2f} | {most:.2f} | {len(seconds)} |", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


if __name__ == "__main__":
    main()
