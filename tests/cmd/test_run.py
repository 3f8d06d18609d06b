"""``deepaas-like-run`` start-up: the URL forms users write, and every start-up failure as
one ``deepaas-like-run: ...`` line with exit code 1, never a traceback.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from deepaas_like.settings import SECTIONS
from tests.conftest import TEST_PLUGINS, free_port, make_plugin_site


def start(
    tmp_path,
    *args: str,
    model: str = "predict_only",
    plugins: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Run ``deepaas-like-run`` serving ``model`` (of ``plugins``, default the test plugins)
    on ``port`` (default a free one) until it exits; ``timeout`` is a liveness bound.
    """
    site = make_plugin_site(tmp_path / "run-site", plugins or TEST_PLUGINS)
    command = [
        "deepaas-like-run",
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        str(port or free_port()),
        "--model-name",
        model,
        *args,
    ]
    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    return subprocess.run(
        command, env={**os.environ, **state, **site, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_failure(process: subprocess.CompletedProcess, *words: str) -> None:
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr, process.stderr
    lines = [line for line in process.stderr.splitlines() if line.startswith("deepaas-like-run: ")]
    assert len(lines) == 1, process.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_plain_sqlite_url_is_served(run_server, plugin_env, tmp_path):
    server = run_server("predict_only", env=plugin_env, database_url=f"sqlite:///{tmp_path / 'plain.sqlite'}")
    assert requests.post(server + "/v2/models/predict_only/predict/").json()["predictions"] == [1, 2, 3]
    assert (tmp_path / "plain.sqlite").exists()


def test_a_file_that_is_not_a_database(tmp_path):
    corrupt = tmp_path / "jobs.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    assert_one_line_failure(start(tmp_path, "--database-url", f"sqlite:///{corrupt}"), "job database", str(corrupt))


def test_a_read_only_database(tmp_path):
    path = tmp_path / "ro.sqlite"
    import sqlite3

    sqlite3.connect(path).close()
    process = start(tmp_path, "--database-url", f"sqlite:///file:{path}?mode=ro&uri=true")
    assert_one_line_failure(process, "job database", "readonly")


def test_an_unreachable_database_server(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once closed
    url = f"postgresql://deepaas:secret@127.0.0.1:{port}/jobs"
    process = start(tmp_path, "--database-url", url)
    assert_one_line_failure(process, "job database", f"127.0.0.1:{port}")
    assert "secret" not in process.stderr, "the password is never printed"


@pytest.mark.parametrize(("directory", "words"), [("missing", ("does not exist",)), ("/proc", ("cannot write",))])
def test_an_unusable_upload_directory(tmp_path, directory, words):
    path = str(tmp_path / directory) if directory == "missing" else directory
    process = start(tmp_path, "--upload-dir", path, "--database-url", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    assert_one_line_failure(process, "upload directory", *words)


@pytest.mark.parametrize("port_option", ["--listen-port", "--grpc-port"])
def test_a_port_in_use_is_reported_before_any_model_starts(tmp_path, port_option):
    warmed = tmp_path / "warmed"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc = ["--grpc-port", str(port)] if port_option == "--grpc-port" else []
        process = start(
            tmp_path,
            "--database-url",
            f"sqlite:///{tmp_path / 'jobs.sqlite'}",
            *grpc,
            model="lingering",
            plugins={"lingering": "lingering"},
            env={"LINGERING_WARMED": str(warmed)},
            port=None if grpc else port,
        )
    assert_one_line_failure(process, f"127.0.0.1:{port}", *(["--grpc-port"] if grpc else []))
    assert not warmed.exists(), "the model was loaded and warmed before the port was tried"


def test_help_shows_defaults_and_where_jobs_are_kept():
    text = subprocess.run(["deepaas-like-run", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "Default: 5000." in text and "Default: 127.0.0.1." in text
    assert "job database" in text and "jobs.sqlite" in text


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_event_loop_chosen_serves(run_server, plugin_env, loop):
    server = run_server("predict_only", env=plugin_env, args=["--event-loop", loop])
    assert requests.post(server + "/v2/models/predict_only/predict/").json()["predictions"] == [1, 2, 3]
    assert f"connections, {loop} event loop\n" in server.log.read_text()


def test_auto_is_uvloop_where_it_is_installed(monkeypatch):
    import uvloop

    from deepaas_like.cmd.run import loop_factory
    from deepaas_like.exceptions import StartupError

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("auto", processes=2) is None, "several server processes: asyncio's loop"
    assert loop_factory("uvloop", processes=2) is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed: importing it fails
    assert loop_factory("auto") is None
    with pytest.raises(StartupError, match="uvloop is not installed"):
        loop_factory("uvloop")


def test_help_shows_the_options_under_their_section_titles_and_no_longer_than_before():
    text = subprocess.run(["deepaas-like-run", "--help"], capture_output=True, text=True, timeout=60).stdout
    for section in SECTIONS:
        assert f"\n{section.name}:\n  {' '.join(section.help.split()[:4])}" in text
    assert "\n  --listen-port LISTEN_PORT" in text[text.index("\nhttp:") : text.index("\nsecurity:")]
    assert "--warm, --nowarm" in text and "--no-warm" not in text, "one negative spelling documented"
    assert len(text.splitlines()) <= 361, "the flat list the sections replaced had 361 lines"


@pytest.mark.parametrize("flag", ["--nowarm", "--no-warm"])
def test_the_server_takes_either_negative_spelling(flag):
    """A bad value after the flag is reported (exit 1), not the flag (exit 2: unrecognized)."""
    process = subprocess.run(
        ["deepaas-like-run", flag, "--nodoc-endpoint", "--no-access-log", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 1 and process.stderr.startswith("deepaas-like-run: --workers: "), process.stderr


def test_the_deprecated_per_model_options_say_what_replaces_them(tmp_path):
    """Said before the server starts (here: refused for a later reason)."""
    args = ["--model-workers", "predict_only:2", "--heartbeat-interval", "1", "--heartbeat-expiry", "1"]
    process = start(tmp_path, *args)
    assert_one_line_failure(process, "heartbeat-expiry")
    assert "model-workers is deprecated: set workers in a [model:NAME] section" in process.stderr
    assert "[model:predict_only] workers = 2" in process.stderr


def _log_until(path, text: str, process: subprocess.Popen, timeout: float = 120) -> str:
    """The log at ``path`` once it holds ``text`` (``timeout``: a liveness bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = path.read_text()
        if text in log:
            return log
        assert process.poll() is None, log
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} within {timeout} s:\n{path.read_text()}")


def test_one_start_line_and_one_shutdown_line(tmp_path):
    # Started as a user starts it: no --database-url, so the per-user default database.
    port, grpc_port = free_port(), free_port()
    state = tmp_path / "state"
    log = tmp_path / "server.log"
    command = ["deepaas-like-run", "--listen-ip", "127.0.0.1", "--listen-port", str(port)]
    command += ["--model-name", "predict_only", "--grpc-port", str(grpc_port)]
    env = {**os.environ, "XDG_STATE_HOME": str(state), **make_plugin_site(tmp_path / "site", TEST_PLUGINS)}
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        started = _log_until(log, "serving predict_only at ", process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    lines = [line.split(" [-] ", 1)[1] for line in log.read_text().splitlines() if " INFO " in line]
    base = f"http://127.0.0.1:{port}"
    database = f"sqlite+aiosqlite:///{state}/deepaas_like/jobs.sqlite"
    assert (
        lines[-2]
        == (
            f"serving predict_only at {base} (REST {base}/v2/, Swagger UI {base}/api, web page {base}/web/, "
            f"gRPC 127.0.0.1:{grpc_port}); "
            f"job database {database} (the default: shared by every server of this user; --database-url for one of its "
            f"own); model store {state}/deepaas_like/model-store; at most "
        )
        + lines[-2].split("; at most ", 1)[1]
    ), started
    assert re.fullmatch(
        r"stopped on SIGTERM in \d+\.\d\d s: 0 request\(s\) answered while draining \(0 with 503\); "
        r"jobs: none interrupted",
        lines[-1],
    ), lines[-1]
    # The tables were made: one line says so, and alembic says nothing at INFO.
    assert lines[0] == f"job database {database}: tables created (schema revision 0010)"
    assert not [line for line in log.read_text().splitlines() if " INFO alembic" in line]


def test_the_start_line_hides_a_password_and_names_a_database_of_its_own():
    from deepaas_like.cmd.process_server.server_lines import start_line
    from deepaas_like.settings import Settings

    settings = Settings(database_url="postgresql://jobs:s3cret@db.example/jobs", model_store="s3://bucket/models")
    line = start_line(settings, ["demo", "other"], "http://0.0.0.0:5000", 100, "asyncio")
    assert line == (
        "serving demo, other at http://0.0.0.0:5000 (REST http://0.0.0.0:5000/v2/, Swagger UI "
        "http://0.0.0.0:5000/api, web page http://0.0.0.0:5000/web/); "
        "job database postgresql://jobs:***@db.example/jobs; model store "
        "s3://bucket/models; at most 100 connections, asyncio event loop"
    )


def test_the_shutdown_line_says_what_was_drained_and_interrupted():
    from deepaas_like.cmd.process_server.server_lines import Drained, stop_line
    from deepaas_like.jobs.service import JobsStopped

    jobs = JobsStopped({"train": 1, "predict": 2}, abandoned=0, pending=4)
    assert stop_line("SIGINT", 1.234, Drained(3, 1), jobs) == (
        "stopped on SIGINT in 1.23 s: 3 request(s) answered while draining (1 with 503); "
        "jobs: 2 predict interrupted, 1 train interrupted, 4 pending left for the next server"
    )


def test_the_shutdown_line_of_a_server_with_a_running_and_a_pending_training(run_server, plugin_env):
    server = run_server("slow", env=plugin_env, args=["--job-poll-interval", "0.1"])
    first = requests.post(server + "/v2/models/slow/train/", data={"seconds": "60"}, timeout=30).json()
    second = requests.post(server + "/v2/models/slow/train/", data={"seconds": "60"}, timeout=30).json()
    assert (first["status"], second["status"]) == ("running", "pending")
    deadline = time.monotonic() + 60  # liveness bound: the training's worker starts
    while time.monotonic() < deadline:
        job = requests.get(server + f"/v2/models/slow/train/{first['uuid']}", timeout=30).json()
        if any(event["message"] == "running train" for event in job.get("events", [])):
            break
        time.sleep(0.1)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    last = server.log.read_text().splitlines()[-1]
    assert re.search(
        r"INFO deepaas_like \[-\] stopped on SIGTERM in \d+\.\d\d s: \d+ request\(s\) answered while draining "
        r"\(0 with 503\); jobs: 1 train interrupted, 1 pending left for the next server$",
        last,
    ), last
