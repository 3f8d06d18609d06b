"""What comes back from a plugin, against a real server: predictions that are not JSON (one
rule, synchronous and asynchronous), large binary results (streamed from a file, never
held by the server, bounded by --max-result-size), and progress reported after a call
returned (issue 10, items 9, 13 and 14).
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

UNRULY = "/v2/models/unruly/predict/"
MIB = 1024 * 1024
MAX_RESULT = 80 * MIB


@pytest.fixture(scope="module")
def unruly(module_server, tmp_path_factory):
    from tests.conftest import TEST_PLUGINS, make_plugin_site

    env = make_plugin_site(tmp_path_factory.mktemp("site"), TEST_PLUGINS)
    return module_server("unruly", env=env, args=["--max-result-size", str(MAX_RESULT), "--job-poll-interval", "0.1"])


def _worker_pid(server: str) -> int:
    return requests.post(server + UNRULY, data={"how": "ok"}, timeout=60).json()["predictions"]["pid"]


def _job(server: str, data: dict[str, str]) -> dict:
    """Run an asynchronous prediction to its end; its job object."""
    answer = requests.post(server + UNRULY, data=data, headers={"Prefer": "respond-async"}, timeout=10)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 60
    while (job := requests.get(urljoin(server, answer.headers["Location"]), timeout=5).json())["status"] in (
        "pending",
        "running",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"how": "nan"}, '["scores"][1] is nan (a float'),
        ({"how": "infinity"}, '["scores"][0] is inf (a float'),
        ({"how": "set"}, '["labels"] is of type set'),
        ({"how": "object"}, '["model"] is of type unruly.Widget'),
        ({"how": "deep"}, "nested too deeply: a list"),
        ({"how": "deep", "size": "600"}, "nested too deeply: a list"),
    ],
)
def test_a_prediction_that_is_not_json_is_a_clear_500_sync_and_async(unruly, data, named):
    worker = _worker_pid(unruly)
    answer = requests.post(unruly + UNRULY, data=data, timeout=60)
    assert answer.status_code == 500 and answer.headers["Content-Type"].startswith("application/json")
    message = answer.json()["message"]
    assert message.startswith("the prediction of model 'unruly' is not JSON: ") and named in message
    job = _job(unruly, data)
    assert job["status"] == "error" and job["message"] == message
    assert _worker_pid(unruly) == worker, "the worker was kept"


def _peak_rss_reset(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM (Linux 4.0+)


def _peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024


def test_a_large_result_is_streamed_from_a_file_the_server_never_holds(unruly):
    size = 64 * MIB
    _peak_rss_reset(unruly.process.pid)
    before = _peak_rss(unruly.process.pid)
    with requests.post(unruly + UNRULY, data={"how": "bytes", "size": str(size)}, stream=True, timeout=120) as answer:
        assert answer.status_code == 200 and int(answer.headers["Content-Length"]) == size
        assert answer.headers["Content-Disposition"] == 'attachment; filename="prediction.bin"'
        received = 0
        for chunk in answer.iter_content(MIB):
            assert chunk.count(b"x") == len(chunk)
            received += len(chunk)
    assert received == size
    grown = _peak_rss(unruly.process.pid) - before
    assert grown < 32 * MIB, f"the server's peak memory grew by {grown / MIB:.0f} MiB for a {size / MIB:.0f} MiB result"
    assert list(unruly.upload_dir.iterdir()) == [], "the worker's file is deleted once sent"


def test_a_result_over_max_result_size_is_507_and_the_worker_is_kept(unruly):
    worker = _worker_pid(unruly)
    answer = requests.post(unruly + UNRULY, data={"how": "bytes", "size": str(MAX_RESULT + 1)}, timeout=60)
    assert answer.status_code == 507, answer.text[:200]
    assert answer.json()["message"] == (
        f"the prediction of model 'unruly' is {MAX_RESULT + 1} bytes, more than this server sends "
        f"({MAX_RESULT} bytes, --max-result-size)"
    )
    assert _worker_pid(unruly) == worker
    job = _job(unruly, {"how": "bytes", "size": str(MAX_RESULT + 1)})
    assert job["status"] == "error" and job["message"] == answer.json()["message"]


def test_a_report_made_after_its_call_returned_reaches_no_job(unruly):
    # The first prediction leaves a thread behind that reports 1.5 s later, while the
    # second one runs.
    first = _job(unruly, {"how": "straggler", "seconds": "1.5", "tag": "first"})
    second = _job(unruly, {"how": "sleep", "seconds": "3", "tag": "second"})
    assert [event["message"] for event in first["events"] if event.get("source") != "server"] == [
        "first: from a thread of the call",
        "first: from the call",
    ]
    assert [event["message"] for event in second["events"] if event.get("source") != "server"] == ["second slept"]
