"""Job figures of issue 4, on 127.0.0.1 only: jobs created per second through HTTP on SQLite
and on PostgreSQL, time for a cancel sent to one instance to stop a training running on
another, and listing latency with 100,000 jobs in the table.

    python benchmarks/jobs.py [--seconds 5] [--rows 100000]

Needs Debian's PostgreSQL (scripts/postgres-throwaway.sh starts a throwaway cluster; run as
root) and the demo plugin installed. Prints a Markdown table and writes it to
benchmarks/results/jobs-<date>-<cores>cores.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuid_module
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TRAIN = "/v2/models/demo/train/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A ``deepaas-like-run`` serving the demo plugin; stopped by PID on exit."""

    def __init__(self, database_url: str, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            "deepaas-like-run",
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            "--model-name",
            "demo",
            "--database-url",
            database_url,
            "--upload-dir",
            str(workdir),
            *args,
        ]
        self.log = open(workdir / f"server-{self.port}.log", "wb")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    async def ready(self, session: aiohttp.ClientSession, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server on port {self.port} exited with {self.process.returncode}")
            try:
                async with session.get(self.url + "/") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def creation_rate(
    session: aiohttp.ClientSession, server: Server, seconds: float, concurrency: int = 8
) -> tuple[float, int]:
    """Trainings created per second by ``concurrency`` clients for ``seconds``; (rate, errors)."""
    created = errors = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal created, errors
        while time.monotonic() < deadline:
            async with session.post(server.url + TRAIN, data={"epochs": "1"}) as answer:
                await answer.read()
                if answer.status == 200:
                    created += 1
                else:
                    errors += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return created / (time.monotonic() - started), errors


def children(pid: int) -> set[int]:
    """PIDs of the direct children of ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


async def cancel_latency(session: aiohttp.ClientSession, a: Server, b: Server, runs: int = 3) -> list[float]:
    """Seconds from a DELETE sent to ``b`` until the training worker running on ``a`` is gone."""
    latencies = []
    for _ in range(runs):
        before = children(a.process.pid)
        async with session.post(a.url + TRAIN, data={"epochs": "10000", "epoch_seconds": "0.01"}) as answer:
            job = await answer.json()
            if answer.status != 200:
                raise RuntimeError(f"cannot start a training: {answer.status} {job}")
        await asyncio.sleep(3.0)  # the training worker starts (first run) and takes the job
        worker = next(iter(children(a.process.pid) - before), None)
        if worker is None:  # a training worker from an earlier run is reused: find the busy one
            worker = max(children(a.process.pid), key=lambda pid: _cpu_ticks(pid))
        started = time.monotonic()
        async with session.delete(b.url + TRAIN + job["uuid"]) as answer:
            await answer.read()
        while Path(f"/proc/{worker}").exists() and _state(worker) != "Z":
            await asyncio.sleep(0.005)
        latencies.append(time.monotonic() - started)
    return latencies


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


async def fill_jobs(database_url: str, rows: int) -> None:
    """Insert ``rows`` finished trainings of the demo model directly."""
    from sqlalchemy import insert

    from deepaas_like.jobs.store import JobStore
    from deepaas_like.jobs.tables import Job

    store = await JobStore.open(database_url)
    start = datetime.datetime.now() - datetime.timedelta(days=1)
    async with store.engine.begin() as connection:
        for first in range(0, rows, 10_000):
            batch = [
                {
                    "uuid": uuid_module.uuid4().hex,
                    "model": "demo",
                    "kind": "train",
                    "status": "done" if i % 10 else "error",
                    "args": {"epochs": 1},
                    "kwargs": {"epochs": 1},
                    "created": start + datetime.timedelta(milliseconds=i),
                    "finished": start + datetime.timedelta(milliseconds=i + 1),
                    "duration": 0.001,
                    "output": {"final_loss": 0.1},
                    "events": [],
                }
                for i in range(first, min(first + 10_000, rows))
            ]
            await connection.execute(insert(Job), batch)
    await store.close()


async def listing_latency(
    session: aiohttp.ClientSession, server: Server, query: str, runs: int = 20
) -> tuple[float, float]:
    """(median, worst) milliseconds of ``GET /train/?query``."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        async with session.get(server.url + TRAIN + query) as answer:
            await answer.read()
            assert answer.status == 200, answer.status
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), max(timings)


def new_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the PostgreSQL at ``server_url``; its SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(server_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def start_postgres() -> tuple[str, str]:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "postgres-throwaway.sh")],
        env={**os.environ, "PGPORT_THROWAWAY": str(free_port())},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], out[1]


async def main(seconds: float, rows: int) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="deepaas-like-bench-"))
    pg_url, pg_dir = start_postgres()
    databases = {"SQLite": f"sqlite+aiosqlite:///{workdir}/jobs.sqlite", "PostgreSQL": new_database(pg_url, "creation")}
    servers: list[Server] = []
    lines = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            for name, url in databases.items():
                server = Server(url, workdir, "--instance-name", f"bench-{name}")
                servers.append(server)
                await server.ready(session)
                rate, errors = await creation_rate(session, server, seconds)
                lines.append(
                    f"| jobs created per second through HTTP, {name} (8 clients) | {rate:.0f} /s | {errors} errors |"
                )
                server.stop()
            shared = new_database(pg_url, "instances")
            a = Server(shared, workdir, "--instance-name", "a", "--job-poll-interval", "0.5")
            b = Server(shared, workdir, "--instance-name", "b", "--job-poll-interval", "0.5")
            servers += [a, b]
            await a.ready(session)
            await b.ready(session)
            latencies = await cancel_latency(session, a, b)
            lines.append(
                f"| cancel sent to instance B stops the worker on A (PostgreSQL, poll 0.5 s) | median {statistics.median(latencies):.2f} s | worst {max(latencies):.2f} s |"
            )
            a.stop()
            b.stop()
            listing = {
                "SQLite": f"sqlite+aiosqlite:///{workdir}/listing.sqlite",
                "PostgreSQL": new_database(pg_url, "listing"),
            }
            for name, url in listing.items():
                await fill_jobs(url, rows)
                server = Server(url, workdir, "--instance-name", f"list-{name}")
                servers.append(server)
                await server.ready(session)
                for query in ("?limit=50", "?status=error&limit=50", "?limit=50&offset=50000", ""):
                    median, worst = await listing_latency(session, server, query, runs=5 if not query else 20)
                    label = query or "(no parameters: every job, the bare DEEPaaS array)"
                    lines.append(
                        f"| listing with {rows:,} jobs, {name}, `{label}` | median {median:.1f} ms | worst {worst:.1f} ms |"
                    )
                server.stop()
    finally:
        for server in servers:
            server.stop()
        subprocess.run(["bash", str(ROOT / "scripts" / "postgres-throwaway.sh"), "stop", pg_dir], check=False)
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    header = [
        f"# Job benchmarks, {datetime.date.today()}",
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}.",
        f"Command: `python benchmarks/jobs.py --seconds {seconds:g} --rows {rows}`",
        "",
        "| measurement | figure | detail |",
        "|---|---|---|",
    ]
    return "\n".join(header + lines) + "\n"


if __name__ == "__main__":
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--seconds", type=float, default=5.0, help="duration of the creation-rate run, per database")
    options.add_argument("--rows", type=int, default=100_000, help="jobs in the table for the listing figures")
    parsed = options.parse_args()
    table = asyncio.run(main(parsed.seconds, parsed.rows))
    print(table)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"jobs-{datetime.date.today()}-{os.cpu_count()}cores.md").write_text(table)
    sys.exit(0)
