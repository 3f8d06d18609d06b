"""``deepaas-like-cli`` without a server: the plugin's ``report()`` progress and metrics
shown as they come, and a training of a plugin with ``save`` kept as a model version that
a server on the same job database serves.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cmd.test_remote_cli import percentages, run_in_terminal
from tests.conftest import ServerFactory, make_plugin_site


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    site = make_plugin_site(tmp_path / "site", {"reporting": "reporting"})
    return {**os.environ, **site, "XDG_STATE_HOME": str(tmp_path / "state")}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["deepaas-like-cli", "--model-name", "reporting", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _json_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_train_shows_reports_as_json_lines_and_returns_metrics(env):
    ran = cli(env, "--no-keep-version", "train", "--seconds", "0.4", "--steps", "4")
    assert ran.returncode == 0, ran.stderr
    training = json.loads(ran.stdout)
    assert training["status"] == "done" and training["metrics"] == {"loss": 0.25, "accuracy": 1.0}
    assert "version" not in training["result"]
    every_line = _json_lines(ran.stderr)
    assert every_line[0]["source"] == "server", "the server says what it does before the plugin reports"
    lines = [line for line in every_line if line.get("source") != "server"]
    assert [line["message"] for line in lines if "message" in line] == ["loading the data"] + [
        f"epoch {n} of 4" for n in (1, 2, 3, 4)
    ]
    assert [line["progress"] for line in lines if "message" in line][1:] == [0.25, 0.5, 0.75, 1.0]
    assert lines[1]["metrics"] == {"loss": 1.0, "accuracy": 0.25} and lines[-1]["status"] == "done"
    predicted = cli(env, "predict", "--data", str(Path(__file__)))
    assert predicted.returncode == 0, predicted.stderr
    plugin_lines = [line for line in _json_lines(predicted.stderr) if line.get("source") != "server"]
    assert plugin_lines[0]["message"] == "reading the file", "a prediction's reports too"


def test_without_a_terminal_a_training_is_kept_only_with_keep_version(env, tmp_path):
    database = f"sqlite:///{tmp_path / 'db' / 'jobs.sqlite'}"
    store = tmp_path / "db" / "model-store"
    untold = cli(env, "--database-url", database, "train", "--value", "4")
    assert untold.returncode == 0, untold.stderr
    assert "version" not in json.loads(untold.stdout)["result"]
    assert "this training is not kept as one (--keep-version keeps it)" in untold.stderr
    assert not store.exists(), "nothing saved when nothing is kept"
    kept = cli(env, "--database-url", database, "--keep-version", "train", "--value", "4")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["result"]["version"] == "reporting@1"
    assert "kept as version reporting@1" in kept.stderr
    assert [path.name for path in (store / "reporting").iterdir()] != []


def test_a_kept_version_is_served_by_a_server_on_that_database(env, tmp_path, run_server: ServerFactory):
    database = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    kept = cli(env, "--database-url", database, "--keep-version", "train", "--value", "17", "--steps", "2")
    assert json.loads(kept.stdout)["result"]["version"] == "reporting@1", kept.stderr
    server = run_server("reporting", env=env, database_url=database)
    command = ["deepaas-like-cli", "--url", server, "--model-name", "reporting"]
    version = subprocess.run([*command, "versions", "show", "1"], capture_output=True, text=True, env=env, timeout=120)
    document = json.loads(version.stdout)
    assert document["arguments"] == {"seconds": 0.0, "steps": 2, "value": 17}
    assert document["metrics"]["loss"] == 0.5 and document["metrics"]["value"] == 17
    predicted = subprocess.run(
        ["deepaas-like-cli", "--url", server, "--model-name", "reporting@1", "predict", "--data", __file__],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["predictions"]["value"] == 17


@pytest.mark.parametrize("answer", ["y", "n"])
def test_a_terminal_shows_the_bar_moving_and_asks_to_keep_the_version(env, tmp_path, answer):
    database = tmp_path / "jobs.sqlite"
    store = tmp_path / "model-store"
    command = ["deepaas-like-cli", "--model-name", "reporting", "--database-url", f"sqlite:///{database}", "train"]
    output = run_in_terminal([*command, "--seconds", "3", "--steps", "6", "--value", "8"], env, answer=answer)
    question = f"Keep this training as version 1 of reporting in {store}? [y/N] {answer}"
    assert question in output, output
    bar, _, result = output.partition(question)
    moving = [value for value in percentages(bar) if 0 < value < 100]
    assert len(set(moving)) >= 2, f"the bar did not move: {bar!r}"
    assert "epoch 2 of 6" in bar and "loss=" in bar
    training = json.loads(result[result.index("{") :])
    versions = list((store / "reporting").iterdir())
    if answer == "y":
        assert training["result"]["version"] == "reporting@1" and len(versions) == 1
    else:
        assert "version" not in training["result"] and versions == [], "what save() wrote is removed"
