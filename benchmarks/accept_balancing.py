"""Several server processes on one port: the kernel's SO_REUSEPORT against the mmap accept
balancer (issue 27, item 6).

Both serve the trivial plugin (``benchmarks/plugins/trivial``) with ``--server-processes 2
--workers 1``, taking turns round by round in one run; wrk keeps ``--concurrency`` keep-alive
connections busy. Per cell: requests/s, p50 and p99 (median of the rounds), and how evenly the
two processes shared the work: their established connections (sampled with ``ss`` during the
load) and the busier one's share of the two processes' CPU time::

    python benchmarks/accept_balancing.py                    # each from its git revision
    python benchmarks/accept_balancing.py --rounds 10 --seconds 5 --mmap-code . --reuse-port-code DIR

The mmap balancer is what this tree serves (``--mmap-code``, default: git ``85ac5e6``, the
same code before it moved to ``cmd/process_server/``); ``SO_REUSEPORT`` (a socket of its own
per process) was tried in git ``be7f434`` and not kept (``--reuse-port-code``). Each variant
runs from its source tree on ``PYTHONPATH``.

Prints Markdown; ``--out FILE`` also writes it there.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import loadgen
import serving

ROOT = Path(__file__).resolve().parent.parent
MMAP_REVISION = "85ac5e6"  # the mmap accept balancer, then in deepaas_like/api/listening.py
REUSE_PORT_REVISION = "be7f434"  # SO_REUSEPORT in deepaas_like/cmd/process_server/listening.py
RUN = "import sys; from deepaas_like.cmd import run_main; sys.exit(run_main())"
REQUEST = harness.form_request("/v2/models/trivial/predict/", n="3")


@dataclass
class Round:
    load: loadgen.LoadResult
    connections: list[int]  # per server process, median of the samples, fewest first
    busier_cpu_share: float  # of the two processes' CPU time, 0.5 is even
    cpu_us_per_request: float  # both processes' CPU, workers included, per answered request


@dataclass
class Cell:
    variant: str
    concurrency: int
    rounds: list[Round] = field(default_factory=list)

    def median(self, figure) -> float:
        return statistics.median(figure(r) for r in self.rounds)


def variant(label: str, code: Path) -> serving.ServerSpec:
    """deepaas_like from ``code`` (a source tree: PYTHONPATH) with two server processes."""

    def argv(port: int, workdir: Path) -> list[str]:
        return [
            sys.executable,
            "-c",
            RUN,
            *("--listen-ip", harness.HOST, "--listen-port", str(port), "--model-name", "trivial"),
            *("--server-processes", "2", "--workers", "1"),
            *("--database-url", f"sqlite+aiosqlite:///{workdir / 'jobs.db'}", "--upload-dir", str(workdir / "uploads")),
        ]

    return serving.ServerSpec(label, argv, {"PYTHONPATH": str(code)})


def server_processes(supervisor: int) -> list[int]:
    """The supervisor's children that run the server (forks: the same command line)."""
    with open(f"/proc/{supervisor}/cmdline", "rb") as own:
        command = own.read()
    found = []
    for pid in harness.children(supervisor):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if cmdline.read() == command:
                found.append(pid)
    return found


def connections(port: int, pids: list[int]) -> list[int]:
    """Established connections to ``port`` that each of ``pids`` holds (``ss -tnp``)."""
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    held = [int(pid) for pid in re.findall(r"pid=(\d+)", listing)]
    return [held.count(pid) for pid in pids]


class Sampler(threading.Thread):
    """Samples :func:`connections` every ``interval`` seconds until stopped."""

    def __init__(self, port: int, pids: list[int], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.port, self.pids, self.interval = port, pids, interval
        self.samples: list[list[int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.samples.append(sorted(connections(self.port, self.pids)))

    def stop(self) -> list[int]:
        """Per process (fewest first), the median of the samples."""
        self.done.set()
        self.join()
        if not self.samples:
            return [0 for _ in self.pids]
        return [int(statistics.median(column)) for column in zip(*self.samples, strict=True)]


def one_round(server: harness.Server, concurrency: int, seconds: int, warmup: int) -> Round:
    url = f"http://{harness.HOST}:{server.port}{REQUEST.path}"
    body = REQUEST.body.decode()
    loadgen.run(url, body, concurrency, warmup, REQUEST.content_type)
    serving.drain(server, REQUEST)
    pids = server_processes(server.pid)
    cpu_before = [harness.tree_cpu_seconds(pid) for pid in pids]
    sampler = Sampler(server.port, pids)
    sampler.start()
    try:
        load = loadgen.run(url, body, concurrency, seconds, REQUEST.content_type)
    finally:
        held = sampler.stop()
    cpu = [harness.tree_cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
    per_request = sum(cpu) * 1e6 / load.requests if load.requests else 0.0
    return Round(load, held, max(cpu) / sum(cpu) if sum(cpu) else 0.0, per_request)


def measure(
    specs: list[serving.ServerSpec], concurrencies: list[int], rounds: int, seconds: int, warmup: int, workdir: Path
) -> list[Cell]:
    cells = {(s.label, c): Cell(s.label, c) for c in concurrencies for s in specs}
    with contextlib.ExitStack() as stack:
        servers = []
        for spec in specs:
            server, ready = stack.enter_context(serving.serve(spec, REQUEST, workdir))
            serving.say(f"{spec.label}: ready in {ready:.1f} s (port {server.port})")
            servers.append((spec.label, server))
        for concurrency in concurrencies:
            for number in range(1, rounds + 1):
                # Each round the other variant goes first, so that neither always follows the other.
                for label, server in servers if number % 2 else servers[::-1]:
                    result = one_round(server, concurrency, seconds, warmup)
                    cells[(label, concurrency)].rounds.append(result)
                    serving.say(
                        f"  {label} c={concurrency} round {number}/{rounds}: {result.load.rps:.0f} req/s, "
                        f"p50 {result.load.p50_ms:.2f} ms, p99 {result.load.p99_ms:.2f} ms, "
                        f"connections {result.connections}, busier CPU {result.busier_cpu_share:.0%}, "
                        f"CPU {result.cpu_us_per_request:.0f} us/request, errors {result.load.errors}"
                    )
    return list(cells.values())


def render(cells: list[Cell], command: str, seconds: int, rounds: int) -> str:
    lines = [
        "# Accept balancing: SO_REUSEPORT against the mmap balancer (2 server processes)",
        "",
        f"- command: `{command}`",
        f"- machine: {serving.cpu_model()}, {serving.nproc()} cores (shared with other work; load average "
        f"{serving.load_average()}); wrk on the same cores",
        f"- trivial plugin, `--server-processes 2 --workers 1`, {rounds} rounds of {seconds} s per cell "
        "(the variants take turns, each first every other round); medians of the rounds, req/s range in brackets",
        "",
        "| accept | clients | req/s | p50 ms | p99 ms | server CPU us/request | connections per process "
        "| busier process's CPU | errors |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for cell in sorted(cells, key=lambda c: (c.concurrency, c.variant)):
        rps = [r.load.rps for r in cell.rounds]
        split = " / ".join("-".join(str(n) for n in sorted({r.connections[i] for r in cell.rounds})) for i in range(2))
        lines.append(
            f"| {cell.variant} | {cell.concurrency} | {cell.median(lambda r: r.load.rps):.0f} "
            f"({min(rps):.0f}-{max(rps):.0f}) | {cell.median(lambda r: r.load.p50_ms):.2f} | "
            f"{cell.median(lambda r: r.load.p99_ms):.2f} | {cell.median(lambda r: r.cpu_us_per_request):.0f} | "
            f"{split} | "
            f"{cell.median(lambda r: r.busier_cpu_share):.0%} | {sum(r.load.errors for r in cell.rounds)} |"
        )
    lines += [
        "",
        "connections per process: fewest / most, the median of samples taken every 0.5 s, each round's "
        "value (a range when the rounds differ). busier process's CPU: its share of the two server "
        "processes' CPU time (workers included); 50% is even.",
    ]
    return "\n".join(lines) + "\n"


def checkout(revision: str, into: Path) -> Path:
    """``deepaas_like/`` as of ``revision``, extracted into ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "deepaas_like"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mmap-code", type=Path, help=f"source tree with the mmap balancer (default: git {MMAP_REVISION})"
    )
    parser.add_argument(
        "--reuse-port-code", type=Path, help=f"source tree with SO_REUSEPORT (default: git {REUSE_PORT_REVISION})"
    )
    parser.add_argument("--concurrency", type=int, action="append", help="repeatable (default: 8 and 64)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="accept-balancing-") as temporary:
        workdir = Path(temporary)
        mmap_code = args.mmap_code or checkout(MMAP_REVISION, Path(tempfile.mkdtemp(dir=workdir)))
        reuse_port_code = args.reuse_port_code or checkout(REUSE_PORT_REVISION, Path(tempfile.mkdtemp(dir=workdir)))
        specs = [variant("mmap balancer", mmap_code), variant("SO_REUSEPORT", reuse_port_code)]
        try:
            cells = measure(specs, args.concurrency or [8, 64], args.rounds, args.seconds, args.warmup, workdir)
        finally:
            harness.stop_all()
    command = "python benchmarks/accept_balancing.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(cells, command.strip(), args.seconds, args.rounds)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
