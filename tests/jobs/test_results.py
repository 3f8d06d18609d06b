"""Large binary results of asynchronous predictions are files in the results directory,
not SQL rows; they are streamed on GET and deleted with their job (issue 10, item 9).
"""

from __future__ import annotations

import hashlib
import time

import requests

from tests.jobs.helpers import PNG_SIGNATURE, PROBE, plugin_env, wait_for
from tests.jobs.helpers import sql as _sql

SIZE = 24 * 1024 * 1024


def _expected_digest(size: int) -> str:
    pattern = bytes(range(256))
    return hashlib.sha256(PNG_SIGNATURE + (pattern * (size // 256 + 1))[:size]).hexdigest()


def _database_rows(database_url: str) -> tuple[int, int]:
    """(bytes of results in job_results, jobs) as the database itself holds them."""
    return (
        _sql(database_url, "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM job_results")[0],
        _sql(database_url, "SELECT COUNT(*) FROM jobs")[0],
    )


def test_a_large_result_is_a_file_streamed_on_get_and_removed_with_its_job(run_server, database_url, tmp_path):
    results = tmp_path / "results"
    server = run_server(
        "jobs_probe",
        env=plugin_env(tmp_path / "site"),
        database_url=database_url,
        args=["--job-poll-interval", "0.1", "--results-dir", str(results), "--job-retention-hours", "0.0015"],
    )
    job = requests.post(
        server + PROBE + "/predict/",
        data={"accept": "image/png", "size": str(SIZE)},
        headers={"Prefer": "respond-async"},
    ).json()
    url = server + PROBE + f"/predict/{job['uuid']}"
    done = wait_for(url, {"done", "error"})
    assert done["status"] == "done" and done["result"]["media_type"] == "image/png" and done["result"]["output"] is None

    files = [path for path in results.rglob("*") if path.is_file()]
    assert [path.stat().st_size for path in files] == [len(PNG_SIGNATURE) + SIZE], files
    assert _database_rows(database_url) == (0, 1), "no result bytes in the database"

    digest, received = hashlib.sha256(), 0
    with requests.get(url, headers={"Accept": "image/png"}, stream=True, timeout=60) as download:
        assert download.status_code == 200 and download.headers["Content-Type"] == "image/png"
        assert download.headers["Content-Disposition"] == 'attachment; filename="prediction.png"'
        for chunk in download.iter_content(1024 * 1024):
            digest.update(chunk)
            received += len(chunk)
    assert received == len(PNG_SIGNATURE) + SIZE and digest.hexdigest() == _expected_digest(SIZE)

    # Retention (0.0015 h, about 5 s) deletes the job, then its file.
    deadline = time.monotonic() + 40
    while requests.get(url).status_code != 404:
        assert time.monotonic() < deadline, "the job was never removed"
        time.sleep(0.2)
    assert not [path for path in results.rglob("*") if path.is_file()], "the result file went with its job"
    assert _database_rows(database_url) == (0, 0)
