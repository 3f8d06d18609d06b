"""``deepaas-like-cli --url``: a real server on 127.0.0.1 with API keys, driven only through
the CLI (its predict and train flags read from the server's OpenAPI document), and a
pseudo-terminal that shows the progress bar of a training moving.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cmd.test_cli import COLLIDING
from tests.conftest import ServerFactory, ServerURL, make_plugin_site

KEY = "user-key-0123"
ADMIN = "admin-key-4567"
PLUGINS = {"reporting": "reporting", "cli_probe": "cli_probe", "slow": "slow"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = make_plugin_site(tmp_path_factory.mktemp("site"), PLUGINS)
    state = {"XDG_STATE_HOME": str(tmp_path_factory.mktemp("state"))}
    return {**os.environ, **site, **state}


@pytest.fixture(scope="module")
def server(module_server: ServerFactory, env: dict[str, str]) -> ServerURL:
    return module_server(
        "reporting",
        "cli_probe",
        "slow",
        env=env,
        args=["--auth-token", KEY, "--admin-token", ADMIN, "--job-poll-interval", "0.1"],
    )


@pytest.fixture
def remote(server: ServerURL, env: dict[str, str], tmp_path: Path) -> Iterator:
    """Runs ``deepaas-like-cli --url SERVER --api-key KEY ARGS`` (``key=None``: no key)."""

    def run(*args: str, key: str | None = KEY, model: str | None = "reporting") -> subprocess.CompletedProcess:
        command = ["deepaas-like-cli", "--url", server]
        command += [] if key is None else ["--api-key", key]
        command += [] if model is None else ["--model-name", model]
        return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    yield run


def run_in_terminal(
    command: list[str],
    env: dict[str, str],
    answer: str | None = None,
    interrupt: bytes | None = None,
    exit_code: int = 0,
    limit: float = 120,
) -> str:
    """What ``command`` writes to a pseudo-terminal of 24 x 100 characters (stdout and
    stderr both, as a person sees them; ``\r\n`` read as ``\n``), checking it exits with
    ``exit_code``. ``answer`` is typed, with Enter, once a ``[y/N]`` question appears;
    Ctrl-C (SIGINT) is sent once ``interrupt`` appears. ``limit``: seconds, a liveness bound.
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        # As a person's shell starts it: a suite started in the background by a
        # non-interactive shell ignores SIGINT, which exec would pass on to the CLI.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execvpe(command[0], command, env)
    output, answered, interrupted, deadline = b"", False, False, time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 1)[0]:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
            if answer is not None and not answered and b"[y/N]" in output:
                os.write(fd, answer.encode() + b"\r")
                answered = True
            if interrupt is not None and not interrupted and interrupt in output:
                os.kill(pid, signal.SIGINT)
                interrupted = True
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    assert os.waitstatus_to_exitcode(status) == exit_code, text
    return text


def percentages(output: str) -> list[int]:
    """The percentages of the progress bars drawn in ``output``, in order (``running:  37%|``)."""
    return [int(value) for value in re.findall(r"(\d+)%\|", output)]


def local(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["deepaas-like-cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_predict_help_is_the_local_help_read_from_the_server(remote, env):
    usage = remote("predict", "--help")
    assert usage.returncode == 0, usage.stderr
    assert "--data DATA" in usage.stdout and "[--data DATA]" not in usage.stdout, "a required argument"
    assert "one of: size, name; default: size" in usage.stdout
    assert "--labels LABELS" in usage.stdout and "repeat the flag, or give a JSON list" in usage.stdout
    assert usage.stdout == local(env, "--model-name", "reporting", "predict", "--help").stdout
    training = remote("train", "--help")
    assert "--seconds SECONDS" in training.stdout and "How long the training takes; default: 0.0" in training.stdout


def test_predict_sends_files_lists_numbers_and_booleans(remote, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 12)
    ran = remote("predict", "--data", str(data), "--labels", "a", "--labels", "b", "--scale", "2", "--loud", "true")
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)["predictions"]
    assert answer["answer"] == 24.0
    assert answer["received"] == {"mode": "size", "labels": ["a", "b"], "scale": 2.0, "loud": True}
    as_json = remote("predict", "--data", str(data), "--labels", '["x", "y"]', "--mode", "name")
    assert json.loads(as_json.stdout)["predictions"]["received"]["labels"] == ["x", "y"], "DEEPaaS's JSON list"
    assert json.loads(as_json.stdout)["predictions"]["answer"] == "data.bin"
    written = tmp_path / "out" / "answer.json"
    kept = remote("predict", "--data", str(data), "--output", str(written))
    assert json.loads(written.read_text()) == json.loads(kept.stdout)


def test_api_key_is_sent_and_a_missing_or_wrong_one_is_an_error(remote, server, env):
    for key in (None, "wrong"):
        refused = remote("train", "--steps", "1", key=key)
        assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
        assert refused.stdout == ""
    from_env = subprocess.run(
        ["deepaas-like-cli", "--url", server, "--model-name", "reporting", "train", "--steps", "1"],
        capture_output=True,
        text=True,
        env={**env, "DEEPAAS_LIKE_API_KEY": KEY},
        timeout=120,
    )
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout)["status"] == "done"


def test_bad_arguments_exit_2_naming_the_argument(remote, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"1")
    refused = remote("predict", "--data", str(data), "--mode", "nope")
    assert refused.returncode == 2 and set(json.loads(refused.stderr)) == {"mode"}, refused.stderr
    missing = remote("predict", "--data", str(tmp_path / "missing.bin"))
    assert missing.returncode == 2 and json.loads(missing.stderr) == {"data": [f"no such file: {tmp_path}/missing.bin"]}
    not_a_number = remote("train", "--steps", "many")
    assert not_a_number.returncode == 2 and set(json.loads(not_a_number.stderr)) == {"steps"}
    required = remote("predict", "--mode", "name")
    assert required.returncode == 2 and "required: --data" in required.stderr
    unknown = remote("train", "--epochs", "3")
    assert unknown.returncode == 2 and "unrecognized arguments: --epochs" in unknown.stderr
    no_model = remote("metadata", model="nope")
    assert no_model.returncode == 1 and "404" in no_model.stderr
    no_model = remote("predict", "--data", str(data), model="nope")
    assert no_model.returncode == 1 and "404" in no_model.stderr and "'nope'" in no_model.stderr, no_model.stderr
    no_server = subprocess.run(
        ["deepaas-like-cli", "--url", "http://127.0.0.1:9", "models"], capture_output=True, text=True, timeout=120
    )
    assert no_server.returncode == 1 and "http://127.0.0.1:9" in no_server.stderr and no_server.stdout == ""


def test_train_shows_json_lines_on_stderr_and_the_result_alone_on_stdout(remote):
    ran = remote("train", "--seconds", "0.8", "--steps", "4", "--value", "3")
    assert ran.returncode == 0, ran.stderr
    training = json.loads(ran.stdout)
    assert training["status"] == "done" and training["result"]["output"]["value"] == 3
    assert training["metrics"] == {"loss": 0.25, "accuracy": 1.0}
    lines = [json.loads(line) for line in ran.stderr.splitlines()]
    assert {line["uuid"] for line in lines} == {training["uuid"]}
    messages = [line["message"] for line in lines if "message" in line]
    assert messages[-4:] == [f"epoch {n} of 4" for n in (1, 2, 3, 4)], lines
    assert any(line.get("metrics", {}).get("loss") == 0.25 for line in lines)
    assert lines[-1]["status"] == "done"
    verbose = remote("--verbose", "train", "--steps", "2")
    assert verbose.returncode == 0, verbose.stderr
    assert "HTTP Request: POST" in verbose.stderr and "/v2/models/reporting/train/" in verbose.stderr
    assert 'event: {"uuid"' in verbose.stderr and '"status": "done"' in verbose.stderr, "the events followed"


def test_jobs_list_show_follow_and_cancel(remote):
    started = remote("--no-wait", "train", "--seconds", "60", "--steps", "60")
    assert started.returncode == 0, started.stderr
    uuid = json.loads(started.stdout)["uuid"]
    shown = json.loads(remote("jobs", "show", uuid).stdout)
    assert shown["uuid"] == uuid and shown["status"] in ("pending", "running")
    listed = json.loads(remote("jobs", "list", "--order", "desc", "--limit", "1").stdout)
    assert [job["uuid"] for job in listed] == [uuid]
    cancelled = remote("jobs", "cancel", uuid)
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelled", cancelled.stderr
    followed = remote("jobs", "follow", uuid)
    assert followed.returncode == 1 and json.loads(followed.stdout)["status"] == "cancelled"
    assert f"train {uuid} ended cancelled" in followed.stderr
    done = json.loads(remote("train", "--steps", "1").stdout)["uuid"]
    again = remote("jobs", "follow", done)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "done"
    assert remote("jobs", "show", "0" * 32).returncode == 1
    assert uuid in [job["uuid"] for job in json.loads(remote("jobs", "list", "--status", "cancelled").stdout)]


def test_versions_list_show_promote_rollback_delete(remote):
    training = json.loads(remote("train", "--value", "42").stdout)
    version = training["result"]["version"]
    name, number = version.split("@")
    assert name == "reporting"
    listed = json.loads(remote("versions", "list").stdout)
    assert version in [entry["id"] for entry in listed]
    assert json.loads(remote("versions", "show", number).stdout)["metrics"]["loss"] == 1.0 / 4
    refused = remote("versions", "promote", number)
    assert refused.returncode == 1 and "403" in refused.stderr, "promoting takes an admin key"
    promoted = remote("versions", "promote", number, key=ADMIN)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["promoted_version"] == version
    data_file = remote("--verbose", "models", model=None)
    assert version in [entry["id"] for entry in json.loads(data_file.stdout)]
    assert "HTTP Request: GET" in data_file.stderr, "--verbose shows the requests"
    assert json.loads(remote("versions", "rollback", key=ADMIN).stdout)["promoted_version"] is None
    deleted = remote("versions", "delete", number, key=ADMIN)
    assert deleted.returncode == 0 and json.loads(deleted.stdout)["id"] == version
    gone = remote("versions", "show", number)
    assert gone.returncode == 1 and "404" in gone.stderr


@pytest.mark.parametrize("command", ["predict", "train"])
def test_plugin_arguments_may_have_the_names_of_the_cli_s_options(remote, command):
    flags = [item for name in COLLIDING for item in (f"--{name}", f"value of {name}")]
    ran = remote(command, *flags, model="cli_probe")
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    received = answer["predictions"]["received"] if command == "predict" else answer["result"]["output"]["received"]
    assert received == {name: f"value of {name}" for name in COLLIDING}


def test_a_terminal_shows_the_progress_bar_moving(server, env):
    """The Done-when test of issue 28: in a pseudo-terminal, the bar of a training that
    reports for a few seconds is drawn at several percentages before it ends."""
    command = ["deepaas-like-cli", "--url", server, "--api-key", KEY, "--model-name", "reporting", "train"]
    output = run_in_terminal([*command, "--seconds", "4", "--steps", "8"], env)
    bar, _, result = output.partition("\n{")
    assert json.loads("{" + result)["status"] == "done", output
    moving = [value for value in percentages(bar) if 0 < value < 100]
    assert len(set(moving)) >= 2, f"the bar did not move: {bar!r}"
    assert "epoch 3 of 8" in bar and "loss=" in bar, "the plugin's messages and metrics are shown"
    assert bar.startswith("training ") and "jobs follow|cancel" in bar, "says how to find the training again"


def test_ctrl_c_stops_following_not_the_training(server, env, remote):
    command = ["deepaas-like-cli", "--url", server, "--api-key", KEY, "--model-name", "reporting", "train"]
    output = run_in_terminal(
        [*command, "--seconds", "60", "--steps", "60"], env, interrupt=b"epoch 2 of", exit_code=130
    )
    uuid = output.split()[1]
    assert f"the training {uuid} goes on on the server" in output and f"jobs cancel {uuid}" in output, output
    assert json.loads(remote("jobs", "show", uuid).stdout)["status"] == "running"
    assert json.loads(remote("jobs", "cancel", uuid).stdout)["status"] == "cancelled"


def test_async_predict_is_followed_with_progress_then_prints_its_result(remote, tmp_path):
    ran = remote("--async", "predict", "--seconds", "0.8", model="slow")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"status": "OK", "predictions": {"slept": 0.8, "data": None}}
    lines = list(map(json.loads, ran.stderr.splitlines()))
    messages = [line.get("message") for line in lines if line.get("source") != "server"]
    assert [f"step {n} of 4" for n in (1, 2, 3, 4)] == [m for m in messages if m], ran.stderr
    assert "running predict" in [line.get("message") for line in lines if line.get("source") == "server"]
    image = tmp_path / "answer.png"
    media = remote("--async", "predict", "--accept", "image/png", "--output", str(image), model="slow")
    assert media.returncode == 0, media.stderr
    assert json.loads(media.stdout)["media_type"] == "image/png" and image.read_bytes().startswith(b"\x89PNG")
    no_output = remote("--async", "predict", "--accept", "image/png", model="slow")
    assert no_output.returncode == 1 and "give --output FILE" in no_output.stderr
