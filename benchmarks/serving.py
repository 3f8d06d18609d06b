"""Serving benchmark of deepaas_like against DEEPaaS 2.6.0 and a bare aiohttp app (issue 5).

One command, on 127.0.0.1 only, with bounded run time (about 7 minutes on 2 cores; ``--quick`` about 2)::

    python benchmarks/serving.py [--quick]

It measures, side by side on this machine:

1. trivial predict (``benchmarks/plugins/trivial``) served by deepaas_like (1 and 2 workers; 2 server processes),
   DEEPaaS 2.6.0 (in ``benchmarks/.venv-deepaas``, created on first use) and a bare aiohttp app,
   at concurrency 1, 8 and 64: requests/s, p50/p99 latency (ms) and errors;
2. dynamic batching on versus off at concurrency 32 on the MiniLM ``text_classifier`` plugin;
3. seconds from process start to the first successful predict (median of 3);
4. peak resident memory of the server (and its workers) while a 1 GiB file is uploaded.

It prints Markdown and writes it to ``benchmarks/results/<date>-<nproc>cores[-quick].md``.
Every server it starts is stopped by PID when it ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import importlib.util
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
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import loadgen
from harness import BenchmarkError, Request

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRIVIAL_PLUGIN = HERE / "plugins" / "trivial"
TEXT_PLUGIN = ROOT / "plugins_example" / "text_classifier"
DEEPAAS_VENV = HERE / ".venv-deepaas"
DEEPAAS_VERSION = "2.6.0"
MIB = 1024 * 1024
UPLOAD_BYTES = 1024 * MIB
SENTENCE = "The weather will be sunny and warm in the afternoon."
START_DEMO = "deepaas_like, demo plugin"
BATCHING = {"off": "batching off (`--max-batch-size 1`)", "on": "batching on (`--max-batch-size 32 --batch-wait-ms 5`)"}


@dataclass(frozen=True)
class Settings:
    """Durations in seconds; ``quick`` shortens the load cells, not what is measured."""

    quick: bool
    rounds: int  # load runs per (server, concurrency); the table shows each figure's median
    cell: int  # measured seconds of one load run
    warmup: int  # seconds of load thrown away before each load run
    batch_rounds: int
    batch_cell: int
    batch_warmup: int
    start_runs: int = 3
    concurrencies: tuple[int, ...] = (1, 8, 64)
    batch_concurrency: int = 32

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(quick=True, rounds=1, cell=2, warmup=1, batch_rounds=1, batch_cell=4, batch_warmup=3)
        return cls(quick=False, rounds=5, cell=4, warmup=1, batch_rounds=3, batch_cell=8, batch_warmup=3)


def say(message: str) -> None:
    """Progress on stderr, so that stdout carries only the Markdown."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- set-up


def pip_install(python: str | Path, *args: str) -> None:
    """``python -m pip install -q ARGS``; raises BenchmarkError with pip's output on failure."""
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchmarkError(f"pip install {' '.join(args)} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")


def ensure_wrk() -> str:
    """wrk's version line; installs Debian's wrk when missing and we are root; '' to fall back."""
    if not loadgen.have_wrk() and os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing wrk (apt-get install -y wrk)")
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
            subprocess.run(install, capture_output=True, check=False)
    if not loadgen.have_wrk():
        return ""
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0]


def has_model(name: str) -> bool:
    """Whether this interpreter sees entry point ``name`` in ``deepaas.v2.model``."""
    return bool(entry_points(group="deepaas.v2.model", name=name))


def ensure_trivial_plugin() -> None:
    """Install the trivial plugin (editable) into this interpreter if it is not there."""
    if not has_model("trivial"):
        say(f"installing {TRIVIAL_PLUGIN.relative_to(ROOT)} into {sys.executable}")
        pip_install(sys.executable, "-e", str(TRIVIAL_PLUGIN))


def ensure_deepaas_venv() -> Path:
    """The bin/ directory of a venv with DEEPaaS 2.6.0 and the trivial plugin; created if needed."""
    python = DEEPAAS_VENV / "bin" / "python"
    check = (
        f"import importlib.metadata as m; assert m.version('deepaas') == '{DEEPAAS_VERSION}'; "
        "assert m.entry_points(group='deepaas.v2.model', name='trivial')"
    )
    if python.exists() and subprocess.run([python, "-c", check], capture_output=True, check=False).returncode == 0:
        return python.parent
    say(f"creating {DEEPAAS_VENV.relative_to(ROOT)} with deepaas=={DEEPAAS_VERSION} (once)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DEEPAAS_VENV)], check=True)
    pip_install(python, f"deepaas=={DEEPAAS_VERSION}", "-e", str(TRIVIAL_PLUGIN))
    return python.parent


def ensure_text_classifier() -> None:
    """Install torch (exactly 2.13.0, the CPU wheel) and the text classifier plugin if missing.

    Raises BenchmarkError when the plugin is not in this checkout or cannot be installed.
    """
    if has_model("text_classifier"):
        return
    if not (TEXT_PLUGIN / "setup.cfg").exists():
        raise BenchmarkError(f"{TEXT_PLUGIN.relative_to(ROOT)} is not in this checkout")
    if importlib.util.find_spec("torch") is None:
        say("installing torch==2.13.0")
        pip_install(sys.executable, "torch==2.13.0")
    say(f"installing {TEXT_PLUGIN.relative_to(ROOT)}")
    pip_install(sys.executable, "-e", str(TEXT_PLUGIN))


def console_script(name: str, bin_dir: Path | None = None) -> str:
    """Path of console script ``name`` beside the interpreter (or in ``bin_dir``)."""
    candidate = (bin_dir or Path(sys.executable).parent) / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise BenchmarkError(f"{name} is not installed (pip install -e . from the repository root)")
    return found


# ------------------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: a label for the table and argv given a port and a work dir."""

    label: str
    argv: Callable[[int, Path], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 60.0  # seconds


def deepaas_like(
    label: str, model: str, *options: str, env: dict[str, str] | None = None, ready_timeout: float = 60.0
) -> ServerSpec:
    """deepaas_like serving ``model``, with its job database and uploads in the work dir."""
    run = console_script("deepaas-like-run")

    def argv(port: int, workdir: Path) -> list[str]:
        return [
            run,
            "--listen-ip",
            harness.HOST,
            "--listen-port",
            str(port),
            "--model-name",
            model,
            "--database-url",
            f"sqlite+aiosqlite:///{workdir / 'jobs.db'}",
            "--upload-dir",
            str(workdir / "uploads"),
            *options,
        ]

    return ServerSpec(label, argv, env or {}, ready_timeout)


def deepaas(bin_dir: Path, model: str = "trivial") -> ServerSpec:
    """DEEPaaS 2.6.0 (``deepaas-run``, its default single worker) from the benchmark venv."""
    run = str(bin_dir / "deepaas-run")
    return ServerSpec(
        f"DEEPaaS {DEEPAAS_VERSION} (1 worker)",
        lambda port, _: [run, "--listen-ip", harness.HOST, "--listen-port", str(port), "--model-name", model],
    )


def bare(model: str = "trivial") -> ServerSpec:
    """The bare aiohttp app, predict called in the server process."""
    script = str(HERE / "bare_app.py")
    return ServerSpec(
        "bare aiohttp (in-process)",
        lambda port, _: [sys.executable, script, "--port", str(port), "--model-name", model],
    )


@contextlib.contextmanager
def serve(spec: ServerSpec, probe: Request, workdir: Path):
    """Start ``spec`` in a fresh sub-directory of ``workdir``; yields (server, seconds to first 200)."""
    own = Path(tempfile.mkdtemp(prefix="server-", dir=workdir))
    (own / "uploads").mkdir()
    port = harness.free_port()
    with harness.running(spec.label, spec.argv(port, own), port, own / "server.log", spec.env, cwd=own) as server:
        ready = harness.wait_until_predicts(server, probe, spec.ready_timeout)
        yield server, ready


def url(server: harness.Server, request: Request) -> str:
    return f"http://{harness.HOST}:{server.port}{request.path}"


# ------------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class Run:
    """One measured load run and the CPU time the server (with its workers) spent on it."""

    load: loadgen.LoadResult
    server_cpu_s: float  # seconds of CPU, user + system, of the server's whole process tree
    other_cores: float = 0.0  # cores kept busy meanwhile by processes other than the server and wrk

    @property
    def cpu_us_per_request(self) -> float:
        """Server CPU per answered request, in microseconds: the serving overhead, far less
        sensitive than requests/s to other work on the machine."""
        return self.server_cpu_s * 1e6 / self.load.requests if self.load.requests else 0.0


@dataclass
class Cell:
    """The load runs (rounds) of one server at one concurrency."""

    server: str
    concurrency: int
    rounds: list[Run] = field(default_factory=list)

    def _median(self, figure: Callable[[Run], float]) -> float:
        return statistics.median(figure(r) for r in self.rounds)

    @property
    def rps(self) -> float:
        """Median over the rounds of successful requests per second."""
        return self._median(lambda r: r.load.rps)

    @property
    def p50_ms(self) -> float:
        """Median over the rounds of the median latency, in milliseconds."""
        return self._median(lambda r: r.load.p50_ms)

    @property
    def p99_ms(self) -> float:
        """Median over the rounds of the 99th-percentile latency, in milliseconds."""
        return self._median(lambda r: r.load.p99_ms)

    @property
    def cpu_us_per_request(self) -> float:
        """Median over the rounds of the server's CPU per request, in microseconds."""
        return self._median(lambda r: r.cpu_us_per_request)

    @property
    def other_cores(self) -> float:
        """Median over the rounds of the cores that other processes kept busy during the run."""
        return self._median(lambda r: r.other_cores)

    @property
    def errors(self) -> int:
        """Errors summed over all rounds."""
        return sum(r.load.errors for r in self.rounds)

    def spread(self) -> str:
        """Lowest and highest requests/s of the rounds, e.g. ``"950-1020"``; empty for one round."""
        if len(self.rounds) < 2:
            return ""
        values = sorted(r.load.rps for r in self.rounds)
        return f"{values[0]:.0f}-{values[-1]:.0f}"


@dataclass
class Report:
    """Everything measured; a section that failed keeps its reason in ``notes``."""

    trivial: list[Cell] = field(default_factory=list)
    batching: list[Cell] = field(default_factory=list)  # labels: BATCHING["off"], BATCHING["on"]
    start: dict[str, list[float]] = field(default_factory=dict)  # label -> seconds per run
    upload: dict[str, float | int | str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def start_servers(
    specs: list[ServerSpec], request: Request, workdir: Path, stack: contextlib.ExitStack, report: Report
) -> list[tuple[str, harness.Server]]:
    """Start each server of ``specs`` (stopped when ``stack`` closes); (label, server) of those that
    answered ``request`` with 200. A server that did not start is noted in ``report``.
    """
    started = []
    for spec in specs:
        try:
            server, seconds = stack.enter_context(serve(spec, request, workdir))
            say(f"{spec.label}: ready in {seconds:.1f} s (port {server.port})")
            started.append((spec.label, server))
        except BenchmarkError as error:
            report.notes.append(f"{spec.label}: not measured: {error}")
            say(f"{spec.label}: failed: {error}")
    return started


def drain(server: harness.Server, request: Request, timeout: float = 120.0) -> None:
    """Wait until the requests a load run left behind are answered: a client that disconnects does
    not cancel its request, so one more request, queued behind them, answers once they are done.
    """
    with contextlib.suppress(OSError):
        harness.post(server.port, request, timeout=timeout)


def measure(
    servers: list[tuple[str, harness.Server]],
    request: Request,
    concurrencies: tuple[int, ...],
    rounds: int,
    seconds: int,
    warmup: int,
    report: Report,
) -> list[Cell]:
    """Load every server at every concurrency ``rounds`` times, the servers taking turns so that
    they share any background load of the machine alike. Each run: ``warmup`` s of load thrown
    away, a drain, then ``seconds`` s measured.
    """
    cells = {(label, c): Cell(label, c) for c in concurrencies for label, _ in servers}
    body = request.body.decode()
    for concurrency in concurrencies:
        for round_ in range(1, rounds + 1):
            for label, server in servers:
                try:
                    loadgen.run(url(server, request), body, concurrency, warmup, request.content_type)
                    drain(server, request)
                    cpu_before = harness.tree_cpu_seconds(server.pid)
                    busy_before, own_before = harness.machine_busy_seconds(), harness.own_cpu_seconds()
                    result = loadgen.run(url(server, request), body, concurrency, seconds, request.content_type)
                    cpu = harness.tree_cpu_seconds(server.pid) - cpu_before
                    busy = harness.machine_busy_seconds() - busy_before
                    own = harness.own_cpu_seconds() - own_before  # this process and wrk
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    report.notes.append(f"{label}, concurrency {concurrency}, round {round_}: no result: {error}")
                    say(f"  {label} c={concurrency}: load failed: {error}")
                    continue
                run = Run(result, cpu, max(0.0, busy - cpu - own) / result.seconds if result.seconds else 0.0)
                cells[(label, concurrency)].rounds.append(run)
                say(
                    f"  {label} c={concurrency} round {round_}/{rounds}: {result.rps:.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, errors {result.errors}, "
                    f"server CPU {run.cpu_us_per_request:.0f} us/request"
                )
    order = [label for label, _ in servers]
    return sorted((c for c in cells.values() if c.rounds), key=lambda c: (order.index(c.server), c.concurrency))


def trivial_predict(settings: Settings, workdir: Path, deepaas_bin: Path | None, report: Report) -> None:
    """Section 1: the same trivial plugin behind each server, at each concurrency."""
    request = harness.form_request("/v2/models/trivial/predict/", n="3")
    specs = [
        deepaas_like("deepaas_like (1 worker)", "trivial", "--workers", "1"),
        deepaas_like("deepaas_like (2 workers)", "trivial", "--workers", "2"),
        deepaas_like(
            "deepaas_like (2 server processes, 1 worker each)", "trivial", "--server-processes", "2", "--workers", "1"
        ),
    ]
    if deepaas_bin is not None:
        specs.append(deepaas(deepaas_bin))
    specs.append(bare())
    say("1. trivial predict")
    with contextlib.ExitStack() as stack:
        servers = start_servers(specs, request, workdir, stack, report)
        report.trivial = measure(
            servers, request, settings.concurrencies, settings.rounds, settings.cell, settings.warmup, report
        )


def batching(settings: Settings, workdir: Path, report: Report) -> None:
    """Section 2: text_classifier at concurrency 32, max-batch-size 32 (5 ms wait) versus 1."""
    say("2. batching")
    try:
        ensure_text_classifier()
    except BenchmarkError as error:
        report.notes.append(f"batching: not measured: {error}")
        say(f"batching skipped: {error}")
        return
    data = workdir / "text_classifier_data"
    data.mkdir(exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR": str(data)}
    request = harness.form_request("/v2/models/text_classifier/predict/", text=SENTENCE)
    specs = [
        deepaas_like(BATCHING[mode], "text_classifier", "--workers", "1", *options, env=env, ready_timeout=240.0)
        for mode, options in (
            ("off", ("--max-batch-size", "1")),
            ("on", ("--max-batch-size", "32", "--batch-wait-ms", "5")),
        )
    ]
    with contextlib.ExitStack() as stack:
        servers = start_servers(specs, request, workdir, stack, report)
        report.batching = measure(
            servers,
            request,
            (settings.batch_concurrency,),
            settings.batch_rounds,
            settings.batch_cell,
            settings.batch_warmup,
            report,
        )


def small_png() -> bytes:
    """A 64x48 RGB PNG, made with Pillow (the demo plugin's own dependency)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def start_times(settings: Settings, workdir: Path, deepaas_bin: Path | None, report: Report) -> None:
    """Section 3: seconds from Popen to the first 200 predict, ``start_runs`` fresh starts each."""
    demo = harness.multipart_request("/v2/models/demo/predict/", "image", "small.png", small_png(), "image/png")
    trivial = harness.form_request("/v2/models/trivial/predict/", n="3")
    cases = [
        (deepaas_like(START_DEMO, "demo"), demo),
        (deepaas_like("deepaas_like, trivial plugin", "trivial"), trivial),
    ]
    if deepaas_bin is not None:
        cases.append((deepaas(deepaas_bin), trivial))
    for spec, request in cases:
        label = spec.label if "DEEPaaS" not in spec.label else f"DEEPaaS {DEEPAAS_VERSION}, trivial plugin"
        try:
            for _ in range(settings.start_runs):
                with serve(spec, request, workdir) as (_, seconds):
                    report.start.setdefault(label, []).append(seconds)
            say(f"start to first predict, {label}: {', '.join(f'{s:.2f}' for s in report.start[label])} s")
        except BenchmarkError as error:
            report.notes.append(f"start time, {label}: not measured: {error}")
            say(f"  failed: {error}")


async def upload_file(port: int, handle: BinaryIO) -> int:
    """POST the open file ``handle`` as multipart field ``image`` to the demo predict; the HTTP status.

    aiohttp streams the file in 64 KiB reads, so the client never holds it whole.
    """
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("image", handle, filename="big.bin", content_type="application/octet-stream")
    predict = f"http://{harness.HOST}:{port}/v2/models/demo/predict/"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session,
        session.post(predict, data=form) as response,
    ):
        await response.read()
        return response.status


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def upload_memory(workdir: Path, report: Report) -> None:
    """Section 4: RSS of the demo server tree while 1 GiB is uploaded; the upload dir after."""
    probe = harness.multipart_request("/v2/models/demo/predict/", "image", "small.png", small_png(), "image/png")
    big = workdir / "big.bin"
    try:
        with serve(deepaas_like("deepaas_like, demo plugin", "demo"), probe, workdir) as (server, _):
            uploads = Path(server.log.parent / "uploads")
            time.sleep(0.5)
            baseline = max(harness.tree_rss_bytes(server.pid) for _ in range(5))
            with open(big, "wb") as handle:
                handle.truncate(UPLOAD_BYTES)  # sparse: reads back as zeros without using the disk
            sampler = harness.RssSampler(server.pid)
            sampler.start()
            began = time.monotonic()
            try:
                with open(big, "rb") as handle:
                    status = asyncio.run(upload_file(server.port, handle))
            finally:
                peak = sampler.stop()
            seconds = time.monotonic() - began
            time.sleep(0.2)
            left = files_under(uploads)
        report.upload = {
            "status": status,
            "seconds": seconds,
            "baseline_mib": baseline / MIB,
            "peak_mib": peak / MIB,
            "growth_mib": (peak - baseline) / MIB,
            "samples": len(sampler.samples),
            "files_left": len(left),
        }
        say(
            f"upload 1 GiB: HTTP {status} in {seconds:.1f} s, RSS {baseline / MIB:.0f} -> {peak / MIB:.0f} MiB, "
            f"{len(left)} file(s) left in the upload dir"
        )
    except (BenchmarkError, OSError) as error:
        report.notes.append(f"upload memory: not measured: {error}")
        say(f"  failed: {error}")
    finally:
        big.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------- report


def cpu_model() -> str:
    """The first ``model name`` of /proc/cpuinfo (empty when unreadable)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def nproc() -> int:
    """Cores this process may use, as ``nproc`` prints it."""
    return len(os.sched_getaffinity(0))


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def source_revision() -> str:
    """The repository's commit, e.g. ``"946a9a1"``, with ``" + uncommitted changes"`` when the
    package's tree differs from it; ``"unknown"`` outside a git checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--", "deepaas_like") else "")


def load_average() -> str:
    """The 1-minute load average from /proc/loadavg, e.g. ``"0.42"``: other work on the machine."""
    with contextlib.suppress(OSError, IndexError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "?"


def machine_lines(settings: Settings, context: dict[str, str], elapsed: float) -> list[str]:
    """The Markdown bullet list that says when, where and how the figures were taken."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return [
        f"- date: {context['date']}",
        (
            f"- machine: {nproc()} cores (`nproc`), CPU {cpu_model() or 'unknown'}, {memory:.0f} GiB, "
            f"Linux {platform.release()}"
        ),
        (
            f"- other work on the machine: processes outside this benchmark kept {context['others']} cores busy "
            f"on average during the run; 1-minute load average {context['load_before']} before it, "
            f"{load_average()} after"
        ),
        (
            f"- Python {platform.python_version()}; deepaas_like {package_version('deepaas_like')} at commit "
            f"{context['revision']}, aiohttp {package_version('aiohttp')}; DEEPaaS {DEEPAAS_VERSION} in its own venv"
        ),
        (
            f"- load generator: {context['wrk'] or 'benchmarks/loadgen.py (aiohttp; wrk is not installed)'}, "
            f"keep-alive connections, closed loop, on the same cores as the servers; each run is "
            f"{settings.warmup} s of warm-up then {settings.cell} s measured "
            f"(batching: {settings.batch_warmup} s + {settings.batch_cell} s); the servers take turns, "
            f"{settings.rounds} round(s) each (batching: {settings.batch_rounds}); the tables show each figure's "
            f"median over the rounds and the range of requests/s"
        ),
        (
            f"- command: `python benchmarks/serving.py{' --quick' if settings.quick else ''}` "
            f"(whole run {elapsed / 60:.1f} min)"
        ),
    ]


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def verdict(value: float | None, passes: Callable[[float], bool]) -> str:
    if value is None:
        return "not measured"
    return "pass" if passes(value) else "**miss**"


def find_cell(cells: list[Cell], label: str, concurrency: int) -> Cell | None:
    return next((c for c in cells if c.server == label and c.concurrency == concurrency), None)


def _fmt(value: float | None, unit: str = "x") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def target_rows(report: Report) -> list[list[str]]:
    """[target, measured, goal, pass/miss] for each target of issue 5."""
    ours = find_cell(report.trivial, "deepaas_like (1 worker)", 8)
    theirs = find_cell(report.trivial, f"DEEPaaS {DEEPAAS_VERSION} (1 worker)", 8)
    limit = find_cell(report.trivial, "bare aiohttp (in-process)", 8)
    on = find_cell(report.batching, BATCHING["on"], 32)
    off = find_cell(report.batching, BATCHING["off"], 32)
    rps_vs_deepaas = ratio(ours.rps, theirs.rps) if ours and theirs else None
    p99_vs_deepaas = ratio(ours.p99_ms, theirs.p99_ms) if ours and theirs else None
    rps_vs_bare = ratio(ours.rps, limit.rps) if ours and limit else None
    speedup = ratio(on.rps, off.rps) if on and off else None
    demo = report.start.get(START_DEMO)
    start = statistics.median(demo) if demo else None
    growth = report.upload.get("growth_mib")
    return [
        [
            "trivial, c=8: requests/s of deepaas_like (1 worker) / DEEPaaS 2.6",
            _fmt(rps_vs_deepaas),
            ">= 3x",
            verdict(rps_vs_deepaas, lambda v: v >= 3),
        ],
        [
            "trivial, c=8: p99 of deepaas_like (1 worker) / DEEPaaS 2.6",
            _fmt(p99_vs_deepaas),
            "<= 0.33x",
            verdict(p99_vs_deepaas, lambda v: v <= 1 / 3),
        ],
        [
            "trivial, c=8: requests/s of deepaas_like (1 worker) / bare aiohttp",
            _fmt(rps_vs_bare),
            ">= 0.5x",
            verdict(rps_vs_bare, lambda v: v >= 0.5),
        ],
        ["MiniLM, c=32: requests/s batching on / off", _fmt(speedup), ">= 3x", verdict(speedup, lambda v: v >= 3)],
        ["start to first predict, demo plugin (median)", _fmt(start, " s"), "< 2 s", verdict(start, lambda v: v < 2)],
        [
            "server RSS growth while 1 GiB is uploaded",
            _fmt(growth, " MiB"),
            "< 100 MiB",
            verdict(growth, lambda v: v < 100),
        ],
    ]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def load_table(cells: list[Cell], digits: int) -> list[str]:
    """One row per (server, concurrency): medians over the rounds, errors summed."""
    rows = [
        [
            c.server,
            str(c.concurrency),
            f"{c.rps:.{digits}f}",
            c.spread(),
            f"{c.p50_ms:.2f}",
            f"{c.p99_ms:.2f}",
            str(c.errors),
            f"{c.cpu_us_per_request:.0f}",
        ]
        for c in cells
    ]
    header = [
        "server",
        "concurrency",
        "requests/s",
        "rounds' range",
        "p50 ms",
        "p99 ms",
        "errors",
        "server CPU us/request",
    ]
    return table(header, rows)


def render(settings: Settings, report: Report, context: dict[str, str], elapsed: float) -> str:
    """The whole report as Markdown."""
    out = ["# deepaas_like serving benchmark", "", *machine_lines(settings, context, elapsed), ""]
    out += ["## Targets (issue 5)", "", *table(["target", "measured", "goal", "result"], target_rows(report))]
    out += ["", "## 1. Trivial predict (`benchmarks/plugins/trivial`, form `n=3`)", ""]
    out += load_table(report.trivial, 0)
    out += [
        "",
        (
            "Errors: non-2xx answers plus socket errors and timeouts, summed over the rounds. Server CPU: "
            "user + system time of the server process and all its workers during the measured run, "
            "per answered request (from /proc/PID/stat)."
        ),
    ]
    out += [
        "",
        (
            f"## 2. Dynamic batching: MiniLM `text_classifier`, 1 worker, concurrency "
            f"{settings.batch_concurrency}, form `text={SENTENCE}`"
        ),
        "",
    ]
    out += load_table(report.batching, 1)
    out += ["", f"## 3. Start to first successful predict (seconds; {settings.start_runs} fresh starts each)", ""]
    out += table(
        ["server", "median s", "runs s"],
        [
            [label, f"{statistics.median(runs):.2f}", ", ".join(f"{r:.2f}" for r in runs)]
            for label, runs in report.start.items()
        ],
    )
    out += ["", "From `Popen` to the first 200 answer to a predict POSTed every 20 ms; a new job database each start."]
    out += [
        "",
        "## 4. Server memory while a 1 GiB file is uploaded (demo predict; the upload is not an image: 422)",
        "",
    ]
    if report.upload:
        u = report.upload
        out += table(
            ["HTTP status", "upload s", "baseline RSS MiB", "peak RSS MiB", "growth MiB", "upload files left"],
            [
                [
                    str(u["status"]),
                    f"{u['seconds']:.1f}",
                    f"{u['baseline_mib']:.0f}",
                    f"{u['peak_mib']:.0f}",
                    f"{u['growth_mib']:.1f}",
                    str(u["files_left"]),
                ]
            ],
        )
        out += [
            "",
            (
                f"RSS summed over the server process and all its children, sampled every 20 ms "
                f"({u['samples']} samples); the file is streamed from a sparse file by an aiohttp client."
            ),
        ]
    if report.notes:
        out += ["", "## Notes", "", *[f"- {note}" for note in report.notes]]
    return "\n".join(out) + "\n"


def write_result(settings: Settings, markdown: str) -> Path:
    """Save ``markdown`` as benchmarks/results/<date>-<nproc>cores[-quick].md; its path."""
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{time.strftime('%Y-%m-%d')}-{nproc()}cores{'-quick' if settings.quick else ''}.md"
    path.write_text(markdown)
    return path


# ----------------------------------------------------------------------------------------- main


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks that stop the servers


SECTIONS = ("trivial", "batching", "start", "upload")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short load runs, one round (whole run under 3 minutes)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable); the result is printed, not written",
    )
    args = parser.parse_args(argv)
    settings = Settings.make(args.quick)
    sections = args.only or list(SECTIONS)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    atexit.register(harness.stop_all)
    began = time.monotonic()
    context = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_before": load_average(),
        "wrk": "",
        "revision": source_revision(),
    }
    busy_before, own_before = harness.machine_busy_seconds(), harness.own_cpu_seconds()
    report = Report()
    workdir = Path(tempfile.mkdtemp(prefix="deepaas-like-bench-"))
    try:
        context["wrk"] = ensure_wrk()
        ensure_trivial_plugin()
        deepaas_bin: Path | None = None
        if {"trivial", "start"} & set(sections):
            try:
                deepaas_bin = ensure_deepaas_venv()
            except (BenchmarkError, subprocess.CalledProcessError) as error:
                report.notes.append(f"DEEPaaS {DEEPAAS_VERSION}: not measured: {error}")
        if "trivial" in sections:
            trivial_predict(settings, workdir, deepaas_bin, report)
        if "batching" in sections:
            batching(settings, workdir, report)
        if "start" in sections:
            start_times(settings, workdir, deepaas_bin, report)
        if "upload" in sections:
            upload_memory(workdir, report)
    except KeyboardInterrupt:
        say("interrupted: stopping the servers")
        return 130
    finally:
        harness.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - began
    others = (harness.machine_busy_seconds() - busy_before) - (harness.own_cpu_seconds() - own_before)
    context["others"] = f"{max(0.0, others) / elapsed:.2f}"
    markdown = render(settings, report, context, elapsed)
    print(markdown)
    if not args.only:
        say(f"written to {write_result(settings, markdown).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
