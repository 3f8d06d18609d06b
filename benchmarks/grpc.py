"""gRPC against REST on the same server (issue 14): requests/s and p50/p99 latency.

One command, on 127.0.0.1 only (about 6 minutes on 2 cores; ``--quick`` about 2)::

    python benchmarks/grpc.py [--quick]

Each model is served by one ``deepaas-like-run --grpc-port ...`` process, so both protocols
reach the same workers; the two take turns, round after round, at concurrency 8 and 32:

1. trivial predict: the demo plugin's JSON statistics of a 64x48 PNG (an upload: multipart
   over REST, ``bytes`` over gRPC);
2. the MiniLM ``text_classifier`` plugin on one sentence (form field over REST, a string over
   gRPC), with the server's default batching.

Both load generators are closed-loop asyncio clients in a process of their own, so that
neither protocol gets the faster client: REST with ``loadgen.py``'s aiohttp generator
(``concurrency`` keep-alive connections), gRPC with the ``grpc.aio`` generator below (one
channel, ``concurrency`` calls in flight on HTTP/2 streams, as gRPC clients run). Requests
are built from the ``.proto`` file the server hands out, compiled with ``grpc_tools.protoc``.
Cells are the median of the rounds. It prints Markdown and writes ``results/grpc.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file is named after what it measures: keep it from shadowing the grpc library, which
# is imported before the benchmarks' own folder goes on the path (for harness and loadgen).
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
import grpc  # noqa: E402

sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import loadgen  # noqa: E402
from loadgen import LoadResult  # noqa: E402

RESULT = HERE / "results" / "grpc.md"
SENTENCE = "The weather will be sunny and warm in the afternoon."


@dataclass(frozen=True)
class Workload:
    """One model under load: its REST request and its gRPC request (built once served)."""

    label: str
    model: str
    rest: harness.Request
    options: tuple[str, ...] = ()
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    ready_timeout: float = 60.0


@dataclass
class Cell:
    label: str
    protocol: str
    concurrency: int
    rounds: list[LoadResult] = dataclasses.field(default_factory=list)
    #: CPU seconds of the server (its process and workers) per answered request, per round.
    cpu: list[float] = dataclasses.field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(result, attribute) for result in self.rounds)


def say(message: str) -> None:
    print(f"[grpc-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def small_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def compiled_stubs(http_port: int, model: str, folder: Path):
    """The ``<model>_pb2`` module compiled from the server's own .proto file."""
    with urllib.request.urlopen(f"http://{harness.HOST}:{http_port}/v2/models/{model}/protos", timeout=30) as answer:
        (folder / f"{model}.proto").write_text(answer.read().decode())
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{folder}", f"--python_out={folder}"]
    subprocess.run([*command, str(folder / f"{model}.proto")], check=True)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(f"{model}_pb2")


def grpc_request(model: str, messages) -> bytes:
    if model == "demo":
        return messages.PredictRequest(image=messages.File(content=small_png(), filename="cat.png")).SerializeToString()
    return messages.PredictRequest(text=SENTENCE).SerializeToString()


def run_grpc(target: str, method: str, body: bytes, concurrency: int, duration: float) -> LoadResult:
    """The grpc.aio generator (this file's ``--load``) in a process of its own."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as request:
        request.write(body)
        request.flush()
        argv = [sys.executable, __file__, "--load", target, method, request.name, str(concurrency), str(duration)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 90, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"gRPC load failed ({done.returncode}): {done.stderr[-800:]}")
    return LoadResult(**json.loads(done.stdout.strip().splitlines()[-1]))


async def _grpc_load(target: str, method: str, body: bytes, concurrency: int, duration: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out: no client-side (de)serialising
        start = time.perf_counter()
        deadline = start + duration

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    await call(body, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    latencies.sort()
    p50, p99 = (loadgen._percentile(latencies, q) * 1000 for q in (0.50, 0.99))
    return LoadResult(len(latencies) + errors, errors, seconds, p50, p99, errors)


def measure(workload: Workload, concurrencies: tuple[int, ...], rounds: int, seconds: int, warmup: int, workdir: Path):
    """Serve ``workload`` with REST and gRPC in one process and load both, taking turns."""
    http_port, grpc_port = harness.free_port(), harness.free_port()
    own = Path(tempfile.mkdtemp(prefix=f"{workload.model}-", dir=workdir))
    (own / "uploads").mkdir()
    argv = [
        harness_script("deepaas-like-run"),
        f"--listen-ip={harness.HOST}",
        f"--listen-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--model-name={workload.model}",
        f"--database-url=sqlite+aiosqlite:///{own / 'jobs.db'}",
        f"--upload-dir={own / 'uploads'}",
        "--noaccess-log",
        *workload.options,
    ]
    cells = {(protocol, c): Cell(workload.label, protocol, c) for c in concurrencies for protocol in ("REST", "gRPC")}
    with harness.running(workload.label, argv, http_port, own / "server.log", workload.env, cwd=own) as server:
        say(
            f"{workload.label}: ready in {harness.wait_until_predicts(server, workload.rest, workload.ready_timeout):.1f} s"
        )
        messages = compiled_stubs(http_port, workload.model, own)
        body = grpc_request(workload.model, messages)
        (service,) = messages.DESCRIPTOR.services_by_name.values()
        method = f"/{service.full_name}/Predict"
        target = f"{harness.HOST}:{grpc_port}"
        url = f"http://{harness.HOST}:{http_port}{workload.rest.path}"
        rest_body = workload.rest.body
        loads = {
            "REST": lambda c, s: loadgen.run_aiohttp(url, rest_body, c, s, workload.rest.content_type),
            "gRPC": lambda c, s: run_grpc(target, method, body, c, s),
        }
        for concurrency in concurrencies:
            for round_ in range(1, rounds + 1):
                for protocol, load in loads.items():
                    load(concurrency, warmup)
                    cpu_before = harness.tree_cpu_seconds(server.pid)
                    result = load(concurrency, seconds)
                    cpu = harness.tree_cpu_seconds(server.pid) - cpu_before
                    cells[(protocol, concurrency)].rounds.append(result)
                    cells[(protocol, concurrency)].cpu.append(cpu / max(1, result.requests - result.errors))
                    say(
                        f"  {workload.label} {protocol} c={concurrency} round {round_}/{rounds}: "
                        f"{result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                        f"errors {result.errors}, server CPU {cells[(protocol, concurrency)].cpu[-1] * 1e6:.0f} us/request"
                    )
    return list(cells.values())


def harness_script(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def render(cells: list[Cell], quick: bool, rounds: int, seconds: int, elapsed: float) -> str:
    lines = [
        "# gRPC beside REST: the same server, the same workers",
        "",
        f"`python benchmarks/grpc.py{' --quick' if quick else ''}`, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores (shared), {rounds} round(s) of {seconds} s per cell (median shown), "
        f"{elapsed / 60:.1f} minutes in all. REST: aiohttp client, keep-alive connections; gRPC: grpc.aio client, "
        "one channel. Both clients are Python asyncio processes on the same machine, and take CPU from "
        "the server and its workers; server CPU is that of the server process and its workers, per request.",
        "",
        "| workload | protocol | concurrency | req/s | p50 ms | p99 ms | server CPU µs/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        errors = sum(result.errors for result in cell.rounds)
        lines.append(
            f"| {cell.label} | {cell.protocol} | {cell.concurrency} | {cell.median('rps'):.0f} | "
            f"{cell.median('p50_ms'):.1f} | {cell.median('p99_ms'):.1f} | "
            f"{statistics.median(cell.cpu) * 1e6:.0f} | {errors} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--load"]:
        target, method, request, concurrency, duration = args[1:6]
        body = Path(request).read_bytes()
        result = asyncio.run(_grpc_load(target, method, body, int(concurrency), float(duration)))
        print(json.dumps(asdict(result)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round per cell")
    options = parser.parse_args(args)
    rounds, seconds, warmup = (1, 4, 1) if options.quick else (3, 6, 2)
    started = time.monotonic()
    data = Path(tempfile.mkdtemp(prefix="grpc-bench-"))
    text_env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR": str(data)}
    workloads = [
        Workload(
            "trivial predict (demo, 64x48 PNG)",
            "demo",
            harness.multipart_request("/v2/models/demo/predict/", "image", "cat.png", small_png(), "image/png"),
        ),
        Workload(
            "MiniLM text_classifier",
            "text_classifier",
            harness.form_request("/v2/models/text_classifier/predict/", text=SENTENCE),
            env=text_env,
            ready_timeout=240.0,
        ),
    ]
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as workdir:
        try:
            for workload in workloads:
                cells += measure(workload, (8, 32), rounds, seconds, warmup, Path(workdir))
        finally:
            harness.stop_all()
    markdown = render(cells, options.quick, rounds, seconds, time.monotonic() - started)
    print(markdown)
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(markdown)
    say(f"written to {RESULT.relative_to(HERE.parent)}")
    with contextlib.suppress(OSError):
        data.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
