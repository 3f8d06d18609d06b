"""Two things landing at once: two servers starting together on one new SQLite file, and a
cancel racing a job's own end (issue 10, item 20).
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import requests

from deepaas_like.jobs.states import CANCELLED, DONE
from deepaas_like.jobs.store import JobStore
from deepaas_like.kinds import TRAIN
from tests.conftest import start_server
from tests.jobs.helpers import SLOW, plugin_env


def test_two_servers_started_at_once_on_one_new_sqlite_file(tmp_path):
    env = plugin_env(tmp_path / "site")
    for attempt in range(3):
        workdir = tmp_path / f"try{attempt}"
        database_url = f"sqlite:///{workdir / 'jobs.sqlite'}"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            starts = [
                pool.submit(
                    start_server,
                    ["slow"],
                    workdir / name,
                    env=env,
                    database_url=database_url,
                    args=["--instance-name", name],
                )
                for name in ("a", "b")
            ]
            servers, failures = [], []
            for start in starts:
                try:
                    servers.append(start.result())
                except RuntimeError as error:
                    failures.append(str(error))
        try:
            assert not failures, failures[0]
            jobs = [requests.post(server + SLOW + "/train/", data={"seconds": "0"}).json() for server in servers]
            assert all(job["status"] in ("pending", "running") for job in jobs)
        finally:
            for server in servers:
                server.stop()


async def test_a_cancel_and_a_done_landing_together_never_both_win(database_url):
    """Two instances end the same job at the same moment: exactly one write wins, the other
    is told so, and the row is the winner's.
    """
    first, second = await JobStore.open(database_url), await JobStore.open(database_url)
    try:
        for _ in range(20):
            job = await first.create("demo", TRAIN, {}, {})
            await first.claim("demo", TRAIN, "a")
            outcomes = await asyncio.gather(
                first.finish(job.uuid, DONE, output={"loss": 0.1}),
                second.finish(job.uuid, CANCELLED, message="cancelled by a DELETE request"),
                return_exceptions=True,
            )
            assert not any(isinstance(outcome, BaseException) for outcome in outcomes), outcomes
            assert sorted(map(bool, outcomes)) == [False, True], outcomes
            stored = await first.get("demo", job.uuid)
            winner = DONE if outcomes[0] else CANCELLED
            assert stored.status == winner
            assert (stored.output == {"loss": 0.1}) == (winner == DONE)
    finally:
        await first.close()
        await second.close()
