"""A thousand event streams on one job: one reader of the database for all of them, and
every stream gets every change (issue 10, item 18).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import aiohttp
import psycopg
import requests

from tests.jobs.helpers import PROBE, plugin_env

STREAMS = 1000
WINDOW = 4.0  # seconds over which database transactions and server CPU are counted


def _transactions(database_url: str) -> int:
    """Transactions the database has counted (PostgreSQL's own statistics)."""
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        return connection.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _rates(server, database_url: str) -> tuple[float, float]:
    """(database transactions per second, server CPU share) over :data:`WINDOW`."""
    transactions, cpu, started = _transactions(database_url), _cpu_seconds(server.process.pid), time.monotonic()
    await asyncio.sleep(WINDOW)
    elapsed = time.monotonic() - started
    return ((_transactions(database_url) - transactions) / elapsed, (_cpu_seconds(server.process.pid) - cpu) / elapsed)


async def _follow(session: aiohttp.ClientSession, url: str, connected: asyncio.Event, counter: list[int]) -> list[str]:
    """Read a stream to its end; returns the event names seen."""
    names, name = [], None
    async with session.get(url) as stream:
        assert stream.status == 200
        async for raw in stream.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and name:
                names.append(name)
                if len(names) == 1:
                    counter[0] += 1
                    if counter[0] == STREAMS:
                        connected.set()
                if name == "end":
                    assert json.loads(line.split(":", 1)[1]) == {"status": "cancelled"}
                    return names
    return names


async def test_a_thousand_streams_on_one_job_share_one_reader(run_server, postgres_database, tmp_path):
    server = run_server(
        "jobs_probe",
        env=plugin_env(tmp_path / "site"),
        database_url=postgres_database,
        args=["--job-poll-interval", "0.5"],
    )
    job = requests.post(server + PROBE + "/train/", data={"seconds": "120"}).json()
    url = server + PROBE + f"/train/{job['uuid']}/events"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        one = asyncio.create_task(session.get(url))
        await asyncio.sleep(1.0)
        alone, cpu_alone = await _rates(server, postgres_database)

        connected, counter = asyncio.Event(), [0]
        streams = [asyncio.create_task(_follow(session, url, connected, counter)) for _ in range(STREAMS)]
        await asyncio.wait_for(connected.wait(), 60)
        crowded, cpu_crowded = await _rates(server, postgres_database)
        print(
            f"\n1 stream: {alone:.1f} transactions/s, server CPU {cpu_alone:.0%}; "
            f"{STREAMS} streams: {crowded:.1f} transactions/s, server CPU {cpu_crowded:.0%}"
        )
        # Polling per stream would add STREAMS / (poll interval / 2) = 4,000 reads a second.
        assert crowded < alone + 20, f"{STREAMS} streams: {crowded:.0f} transactions/s against {alone:.0f} for one"

        assert requests.delete(server + PROBE + f"/train/{job['uuid']}").json()["status"] == "cancelled"
        seen = await asyncio.wait_for(asyncio.gather(*streams), 60)
        assert all(names[0] == "job" and names[-1] == "end" for names in seen), "every stream saw the job end"
        (await one).close()
