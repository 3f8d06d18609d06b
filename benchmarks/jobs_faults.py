"""Figures of issue 10's job items, on 127.0.0.1 only: server CPU and database reads with
many event streams on one job (item 18), the time from the job database coming back to a
job's outcome being readable (item 2), and the server's memory while it serves a large
stored result (item 9).

    python benchmarks/jobs_faults.py [--code DIR] [--streams 1000] [--only streams|recovery|result]

``--code DIR`` serves the deepaas_like package found in DIR (e.g. an export of another
branch: ``git archive main | tar -x -C /tmp/main-src``) instead of the installed one, so
that the same script measures before and after. Needs the test plugins (tests/fixtures) and,
for PostgreSQL, Debian's PostgreSQL (scripts/postgres-throwaway.sh; run as root). Prints
Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import TEST_PLUGINS, free_port, make_plugin_site  # noqa: E402
from tests.jobs.helpers import PostgresControl  # noqa: E402

PROBE = "/v2/models/jobs_probe"


class Server:
    """``deepaas-like-run`` (as ``python -m deepaas_like.cmd.run``) serving jobs_probe."""

    def __init__(self, workdir: Path, database_url: str, code: str | None, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        site = make_plugin_site(workdir / "site", {**TEST_PLUGINS, "jobs_probe": "jobs_probe"})
        path = os.pathsep.join(p for p in (code, site["PYTHONPATH"]) if p)
        (workdir / "uploads").mkdir(exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "deepaas_like.cmd.run",
            "--listen-port",
            str(self.port),
            "--model-name",
            "jobs_probe",
            "--database-url",
            database_url,
            "--upload-dir",
            str(workdir / "uploads"),
            *args,
        ]
        self.log = open(workdir / f"server-{self.port}.log", "wb")
        # cwd outside the repository: the package comes from --code or the installed one.
        self.process = subprocess.Popen(
            command, cwd=workdir, env={**os.environ, "PYTHONPATH": path}, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {(workdir / f'server-{self.port}.log').read_text()[-2000:]}")
            try:
                requests.get(self.url + "/", timeout=1)
                return
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def transactions(database_url: str) -> int | None:
    if not database_url.startswith("postgresql"):
        return None
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        return connection.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]


def wait_status(url: str, statuses: set[str], timeout: float, interval: float = 0.02) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = requests.get(url, timeout=5)
            if answer.status_code == 200 and answer.json()["status"] in statuses:
                return answer.json()["status"]
        except requests.RequestException:
            pass
        time.sleep(interval)
    return None


async def streams_figure(server: Server, database_url: str, count: int, seconds: float) -> dict:
    job = requests.post(server.url + PROBE + "/train/", data={"seconds": "600"}).json()
    url = server.url + PROBE + f"/train/{job['uuid']}/events"
    connected = 0
    all_connected = asyncio.Event()

    async def follow(session: aiohttp.ClientSession) -> None:
        nonlocal connected
        try:
            async with session.get(url) as stream:
                await stream.content.readline()
                connected += 1
                if connected == count:
                    all_connected.set()
                async for _ in stream.content:
                    pass
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None, sock_connect=60)
    ) as session:
        tasks = [asyncio.create_task(follow(session)) for _ in range(count)]
        started = time.monotonic()
        try:
            await asyncio.wait_for(all_connected.wait(), 90)
        except TimeoutError:
            pass
        connect_time = time.monotonic() - started
        cpu, xacts, t0 = cpu_seconds(server.process.pid), transactions(database_url), time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds(server.process.pid) - cpu) / elapsed
        after = transactions(database_url)
        rate = None if xacts is None else (after - xacts) / elapsed
        health = time.monotonic()
        healthz = await (await session.get(server.url + "/healthz")).text()
        health = time.monotonic() - health
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    requests.delete(server.url + PROBE + f"/train/{job['uuid']}", timeout=60)
    return {
        "connected": connected,
        "connect_s": connect_time,
        "cpu": cpu,
        "xacts_per_s": rate,
        "healthz_ms": health * 1000 if "ok" in healthz else None,
    }


def recovery_figure(server: Server, database_url: str, workdir: Path) -> tuple[float | None, str]:
    """Seconds from the database being back to the job reading ended, and how it ended
    (None, "running": never within 60 s).
    """
    job = requests.post(server.url + PROBE + "/train/", data={"seconds": "1"}).json()
    url = server.url + PROBE + f"/train/{job['uuid']}"
    wait_status(url, {"running"}, 30)
    if database_url.startswith("postgresql"):
        control = PostgresControl(database_url)
        control.stop()
        time.sleep(6)
        control.start()
    else:
        lock = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(12)
        lock.execute("COMMIT")
        lock.close()
    back = time.monotonic()
    status = wait_status(url, {"done", "error", "cancelled"}, 60)
    return (time.monotonic() - back, status) if status else (None, "running")


def result_figure(server: Server, megabytes: int, database_url: str) -> dict:
    import threading

    size = megabytes * 1024 * 1024
    peak, received, stop = rss_mib(server.process.pid), 0, False

    def sample() -> None:
        nonlocal peak
        while not stop:
            peak = max(peak, rss_mib(server.process.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    job = requests.post(
        server.url + PROBE + "/predict/",
        data={"accept": "image/png", "size": str(size)},
        headers={"Prefer": "respond-async"},
    ).json()
    url = server.url + PROBE + f"/predict/{job['uuid']}"
    status = wait_status(url, {"done", "error"}, 300, interval=0.2)
    job_peak = peak
    time.sleep(1)
    before = peak = rss_mib(server.process.pid)
    started = time.monotonic()
    health = []
    with requests.get(url, headers={"Accept": "image/png"}, stream=True, timeout=300) as download:
        for chunk in download.iter_content(1024 * 1024):
            received += len(chunk)
            if len(health) < 20 and received % (16 * 1024 * 1024) < 1024 * 1024:
                t = time.monotonic()
                requests.get(server.url + "/healthz", timeout=30)
                health.append(time.monotonic() - t)
    elapsed = time.monotonic() - started
    stop = True
    sampler.join()
    database_mib = None
    if database_url.startswith("sqlite"):
        path = Path(database_url.split(":///", 1)[1])
        database_mib = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    return {
        "status": status,
        "received_mib": received / 2**20,
        "rss_job": job_peak,
        "rss_before": before,
        "rss_peak": peak,
        "seconds": elapsed,
        "healthz_max_ms": max(health) * 1000 if health else None,
        "database_mib": database_mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", help="directory holding the deepaas_like package to serve")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--result-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", choices=["streams", "recovery", "result"])
    parser.add_argument("--database", action="append", choices=["sqlite", "postgresql"])
    options = parser.parse_args()
    sections = options.only or ["streams", "recovery", "result"]
    databases = options.database or ["sqlite", "postgresql"]
    code = os.path.abspath(options.code) if options.code else None
    workdir = Path(tempfile.mkdtemp(prefix="deepaas-like-bench-"))
    cluster = None
    try:
        urls = {"sqlite": lambda name: f"sqlite:///{workdir / name / 'jobs.sqlite'}"}
        if "postgresql" in databases:
            script = ROOT / "scripts" / "postgres-throwaway.sh"
            out = subprocess.run(
                ["bash", str(script)],
                env={**os.environ, "PGPORT_THROWAWAY": str(free_port())},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            admin, cluster = out
            import psycopg

            def pg(name: str, admin: str = admin) -> str:
                database = f"bench_{name}_{os.urandom(3).hex()}"
                with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
                    c.execute(f'CREATE DATABASE "{database}"')
                return admin.rsplit("/", 1)[0] + "/" + database

            urls["postgresql"] = pg
        print(f"code: {code or 'installed'}; {os.cpu_count()} cores\n")
        for database in databases:
            for section in sections:
                name = f"{section}-{database}"
                (workdir / name).mkdir()
                url = urls[database](name)
                extra = ["--results-dir", str(workdir / name / "results")] if section == "result" and not code else []
                server = Server(workdir / name, url, code, *extra)
                try:
                    if section == "streams":
                        figure = asyncio.run(streams_figure(server, url, options.streams, options.seconds))
                        print(
                            f"| {database} | {options.streams} streams | connected {figure['connected']} in "
                            f"{figure['connect_s']:.1f} s | server CPU {figure['cpu']:.0%} | "
                            f"database transactions/s {figure['xacts_per_s'] if figure['xacts_per_s'] is None else round(figure['xacts_per_s'], 1)} | "
                            f"/healthz {figure['healthz_ms'] if figure['healthz_ms'] is None else round(figure['healthz_ms'])} ms |"
                        )
                    elif section == "recovery":
                        rounds = [recovery_figure(server, url, workdir / name) for _ in range(options.rounds)]
                        shown = ", ".join("never" if s is None else f"{s:.2f} s ({st})" for s, st in rounds)
                        done = [s for s, _ in rounds if s is not None]
                        print(
                            f"| {database} | recovery | rounds: {shown} | median {statistics.median(done):.2f} s |"
                            if done
                            else f"| {database} | recovery | {shown} |"
                        )
                    else:
                        figure = result_figure(server, options.result_mb, url)
                        print(
                            f"| {database} | {options.result_mb} MiB result | {figure['status']} | received "
                            f"{figure['received_mib']:.0f} MiB in {figure['seconds']:.1f} s | server RSS peak while the "
                            f"job ran {figure['rss_job']:.0f} MiB; during GET {figure['rss_before']:.0f} -> "
                            f"{figure['rss_peak']:.0f} MiB | /healthz max "
                            f"{figure['healthz_max_ms'] if figure['healthz_max_ms'] is None else round(figure['healthz_max_ms'])} ms | "
                            f"SQLite files {figure['database_mib'] if figure['database_mib'] is None else round(figure['database_mib'], 1)} MiB |"
                        )
                    sys.stdout.flush()
                finally:
                    server.stop()
    finally:
        if cluster:
            subprocess.run(["bash", str(ROOT / "scripts" / "postgres-throwaway.sh"), "stop", cluster], check=False)
            shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
