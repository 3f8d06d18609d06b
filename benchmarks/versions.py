"""Model version figures of issue 13, on 127.0.0.1 only: the time from a training's end to the
version's first answer (its workers start, warm and load it on that first call), and the
lazy-load latency of a version called while unloaded, beside a call to a loaded one.

    python benchmarks/versions.py [--rounds 5] [--models versioned,text_classifier]

``versioned`` is the test plugin (tests/fixtures/plugins/versioned.py: the server's own
cost); ``text_classifier`` the example plugin (MiniLM: a real model's warm and load). A
server runs with ``--max-loaded-versions 1``, so calling two versions in turn loads each
one every time. Prints a Markdown table and writes it to benchmarks/results/versions.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PREDICT = {"versioned": {"x": 1}, "text_classifier": {"text": "It snowed all night."}}
TRAIN = {"versioned": {"value": 3}, "text_classifier": {"epochs": 5}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plugin_env(workdir: Path) -> dict[str, str]:
    """The test plugin ``versioned`` made discoverable (an entry point on PYTHONPATH)."""
    dist = workdir / "site" / "deepaas_like_bench_versions-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: deepaas-like-bench-versions\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[deepaas.v2.model]\nversioned = versioned\n")
    fixtures = ROOT / "tests" / "fixtures" / "plugins"
    return {"PYTHONPATH": os.pathsep.join([str(workdir / "site"), str(fixtures)])}


class Server:
    """A ``deepaas-like-run`` serving ``model``; stopped by its PID."""

    def __init__(self, model: str, workdir: Path) -> None:
        self.model = model
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, **plugin_env(workdir), "XDG_STATE_HOME": str(workdir / "state")}
        env["DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR"] = str(workdir / "text_classifier")
        command = [
            "deepaas-like-run",
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            self.url.rsplit(":", 1)[1],
            "--model-name",
            model,
            "--database-url",
            f"sqlite:///{workdir / 'jobs.sqlite'}",
            "--job-poll-interval",
            "0.05",
            "--max-loaded-versions",
            "1",
        ]
        self.log = (workdir / "server.log").open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)
        self.log.close()

    def train(self) -> dict:
        """Train and wait (polling every 10 ms); returns the training object."""
        training = requests.post(f"{self.url}/v2/models/{self.model}/train/", json=TRAIN[self.model], timeout=60).json()
        while training["status"] in ("pending", "running"):
            time.sleep(0.01)
            training = requests.get(f"{self.url}/v2/models/{self.model}/train/{training['uuid']}", timeout=60).json()
        assert training["status"] == "done", training
        return training

    def predict(self, model: str) -> float:
        """Seconds one prediction of ``model`` (a model or a version id) took."""
        started = time.perf_counter()
        answer = requests.post(f"{self.url}/v2/models/{model}/predict/", data=PREDICT[self.model], timeout=600)
        assert answer.status_code == 200, answer.text
        return time.perf_counter() - started


def measure(model: str, rounds: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"end_to_answer": [], "lazy_load": [], "loaded": []}
    with tempfile.TemporaryDirectory(prefix="deepaas-like-bench-versions-") as directory:
        server = Server(model, Path(directory))
        try:
            server.predict(model)  # the base model's workers are warm
            for _ in range(rounds):
                training = server.train()
                ended = datetime.datetime.fromisoformat(training["finish_date"])
                server.predict(training["result"]["version"])
                figures["end_to_answer"].append((datetime.datetime.now() - ended).total_seconds())
            # With one version loaded at most, calling two in turn loads each every time.
            first, second = f"{model}@1", f"{model}@2"
            for _ in range(rounds):
                figures["lazy_load"].append(server.predict(first))
                figures["lazy_load"].append(server.predict(second))
                figures["loaded"].append(server.predict(second))
        finally:
            server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="versioned,text_classifier")
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        figures = measure(model, args.rounds)
        for name, label in (
            ("end_to_answer", "training's end → version's first answer"),
            ("lazy_load", "call of an unloaded version (lazy load)"),
            ("loaded", "call of a loaded version"),
        ):
            values = figures[name]
            rows.append(
                f"| {model} | {label} | {len(values)} | {statistics.median(values) * 1000:.0f} | "
                f"{min(values) * 1000:.0f} | {max(values) * 1000:.0f} |"
            )
    cores = os.cpu_count()
    table = "\n".join(
        [
            f"# Model versions: {datetime.date.today()}, {platform.machine()}, {cores} cores",
            "",
            "Each version gets one worker process (`version-workers` 1) that imports the plugin, "
            "warms it and calls its `load`; `--max-loaded-versions 1`. Times in milliseconds, measured "
            "by the client on the same machine (`finish_date` is the server's clock, which is the same).",
            "",
            "| model | what | n | median ms | min ms | max ms |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(table)
    out = ROOT / "benchmarks" / "results" / "versions.md"
    out.write_text(table)


if __name__ == "__main__":
    main()
