"""Model versions against real servers: a training of a plugin with ``save``/``load`` makes a
version, served under its own id, lazily loaded, promoted, rolled back and deleted; versions
survive restarts and are shared by instances on one database; failures of ``save`` and
``load`` are reported, never a 500.
"""

from __future__ import annotations

import shutil
import time

import pytest
import requests

from tests.conftest import make_plugin_site
from tests.versions.helpers import FAST, MODEL, predict, train, until, versions


def test_a_training_makes_a_version_that_outlives_restarts_is_promoted_and_deleted(run_server, versioned_env, tmp_path):
    server = run_server(MODEL, env=versioned_env, args=FAST)
    training = train(server, value=7, steps=3)
    assert training["status"] == "done", training
    assert training["result"]["version"] == f"{MODEL}@1"
    assert training["metrics"] == {"loss": pytest.approx(1 / 3)}  # the latest value reported

    listing = versions(server)
    assert listing["promoted_version"] is None
    [version] = listing["versions"]
    assert version["id"] == f"{MODEL}@1" and version["version"] == 1 and version["parent"] == MODEL
    assert version["training"] == training["uuid"]
    assert version["arguments"] == {"value": 7, "steps": 3, "failure": ""}
    assert version["metrics"] == {"loss": pytest.approx(1 / 3), "value": 7.0, "accuracy": pytest.approx(0.57)}
    assert version["state"] == "unloaded" and version["promoted"] is False
    assert (tmp_path / "model-store" / MODEL / training["uuid"] / "state.json").is_file()

    # The version answers under its own id, as a model: its workers load it on the first call.
    answer = predict(server, f"{MODEL}@1", x=3)
    assert answer.status_code == 200, answer.text
    answered = answer.json()["predictions"]
    assert (answered["value"], answered["x"], answered["loaded"]) == (7, 3, True)
    assert requests.get(f"{server}/v2/models/{MODEL}/versions/1", timeout=30).json()["state"] == "loaded"
    # The base model still answers as before the training.
    assert predict(server, MODEL).json()["predictions"]["value"] == 0
    metadata = requests.get(f"{server}/v2/models/{MODEL}@1/", timeout=30).json()
    assert metadata["id"] == f"{MODEL}@1" and metadata["model_version"]["state"] == "loaded"
    models = {model["id"]: model for model in requests.get(f"{server}/v2/models/", timeout=30).json()["models"]}
    assert models[MODEL]["promoted_version"] is None
    assert models[f"{MODEL}@1"]["model_version"]["version"] == 1
    metrics = requests.get(f"{server}/metrics", timeout=30).text
    assert f'deepaas_like_model_version_loaded{{model="{MODEL}",version="{MODEL}@1"}} 1.0' in metrics
    assert f'deepaas_like_workers{{model="{MODEL}@1"}} 1.0' in metrics
    document = requests.get(f"{server}/openapi.json", timeout=30).json()
    assert f"/v2/models/{MODEL}@1/predict/" in document["paths"]
    assert f"/v2/models/{MODEL}/versions/{{version}}/promote" in document["paths"]
    # A version takes no trainings.
    refused = requests.post(f"{server}/v2/models/{MODEL}@1/train/", json={}, timeout=30)
    assert refused.status_code == 501 and f"train its model, {MODEL}" in refused.json()["message"]

    # After a restart the version is still there, unloaded until its first call.
    server.stop()
    server = run_server(MODEL, env=versioned_env, args=FAST, database_url=server.database_url)
    assert versions(server)["versions"][0]["state"] == "unloaded"
    assert predict(server, f"{MODEL}@1").json()["predictions"]["value"] == 7

    # Promoted, the version is what the model's name serves; a later version likewise.
    promoted = requests.post(f"{server}/v2/models/{MODEL}/versions/1/promote", timeout=30)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {"model": MODEL, "promoted_version": f"{MODEL}@1"}
    assert predict(server, MODEL).json()["predictions"]["value"] == 7
    assert train(server, value=9)["result"]["version"] == f"{MODEL}@2"
    requests.post(f"{server}/v2/models/{MODEL}/versions/{MODEL}@2/promote", timeout=30).raise_for_status()
    assert predict(server, MODEL).json()["predictions"]["value"] == 9

    # Rolling back returns to the version before, then to the plugin itself.
    back = requests.post(f"{server}/v2/models/{MODEL}/rollback", timeout=30)
    assert back.json() == {"model": MODEL, "promoted_version": f"{MODEL}@1"}
    assert predict(server, MODEL).json()["predictions"]["value"] == 7
    conflict = requests.delete(f"{server}/v2/models/{MODEL}/versions/1", timeout=30)
    assert conflict.status_code == 409 and "roll back" in conflict.json()["message"]
    assert requests.post(f"{server}/v2/models/{MODEL}/rollback", timeout=30).json()["promoted_version"] is None
    assert predict(server, MODEL).json()["predictions"]["value"] == 0
    nothing = requests.post(f"{server}/v2/models/{MODEL}/rollback", timeout=30)
    assert nothing.status_code == 409

    # Deleted: gone for every route, its number never used again.
    deleted = requests.delete(f"{server}/v2/models/{MODEL}/versions/1", timeout=30)
    assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
    assert predict(server, f"{MODEL}@1").status_code == 404
    assert requests.get(f"{server}/v2/models/{MODEL}/versions/1", timeout=30).status_code == 404
    assert not (tmp_path / "model-store" / MODEL / training["uuid"]).exists()
    assert [v["id"] for v in versions(server)["versions"]] == [f"{MODEL}@2"]
    assert train(server, value=4)["result"]["version"] == f"{MODEL}@3"
    bad = requests.get(f"{server}/v2/models/{MODEL}/versions/latest", timeout=30)
    assert bad.status_code == 404 and "names no version" in bad.json()["message"]


def test_least_recently_used_versions_are_unloaded_past_the_bound(run_server, versioned_env):
    server = run_server(MODEL, env=versioned_env, args=[*FAST, "--max-loaded-versions", "1"])
    for value in (1, 2):
        assert train(server, value=value)["status"] == "done"

    def state(number: int) -> str:
        return requests.get(f"{server}/v2/models/{MODEL}/versions/{number}", timeout=30).json()["state"]

    assert predict(server, f"{MODEL}@1").json()["predictions"]["value"] == 1
    assert state(1) == "loaded"
    assert predict(server, f"{MODEL}@2").json()["predictions"]["value"] == 2
    assert (state(1), state(2)) == ("unloaded", "loaded")
    metrics = requests.get(f"{server}/metrics", timeout=30).text
    assert f'deepaas_like_model_version_loaded{{model="{MODEL}",version="{MODEL}@1"}} 0.0' in metrics
    assert "deepaas_like_version_load_seconds_count" in metrics
    # Called again, it is loaded again (and the other one makes room).
    assert predict(server, f"{MODEL}@1").json()["predictions"]["value"] == 1
    assert (state(1), state(2)) == ("loaded", "unloaded")


def test_save_and_load_failures_are_reported_and_leave_nothing_half_written(run_server, versioned_env, tmp_path):
    server = run_server(MODEL, env=versioned_env, args=FAST)
    store = tmp_path / "model-store" / MODEL
    for failure, reason in (("save", "the weights cannot be serialised"), ("disk_full", "No space left on device")):
        failed = train(server, value=5, failure=failure)
        assert failed["status"] == "error", failed
        assert "save() failed, no version was made" in failed["message"] and reason in failed["message"]
        assert "version" not in failed
    assert list(store.iterdir()) == [], "a failed save left a directory behind"
    assert versions(server)["versions"] == []

    # A version whose load() raises is unavailable, with the reason; the others serve.
    assert train(server, value=5, failure="load")["result"]["version"] == f"{MODEL}@1"
    assert train(server, value=6)["result"]["version"] == f"{MODEL}@2"
    broken = predict(server, f"{MODEL}@1")
    assert broken.status_code == 503, broken.text
    assert "the saved state is corrupt" in broken.json()["message"] and "Retry-After" in broken.headers
    listed = {v["id"]: v for v in versions(server)["versions"]}
    assert listed[f"{MODEL}@1"]["state"] == "unavailable"
    assert "the saved state is corrupt" in listed[f"{MODEL}@1"]["message"]
    assert predict(server, f"{MODEL}@2").json()["predictions"]["value"] == 6

    # A version whose directory went away is reported as such.
    requests.delete(f"{server}/v2/models/{MODEL}/versions/1", timeout=30).raise_for_status()
    assert train(server, value=8)["result"]["version"] == f"{MODEL}@3"
    shutil.rmtree(store / versions(server)["versions"][0]["training"])
    missing = predict(server, f"{MODEL}@3")
    assert missing.status_code == 503, missing.text
    assert "directory" in missing.json()["message"] and "missing" in missing.json()["message"]
    assert requests.get(f"{server}/v2/models/{MODEL}/versions/3", timeout=30).json()["state"] == "unavailable"
    assert requests.delete(f"{server}/v2/models/{MODEL}/versions/3", timeout=30).status_code == 200


def test_instances_on_one_postgresql_database_share_versions(run_server, versioned_env, postgres_database, tmp_path):
    shared = ["--model-store", str(tmp_path / "shared-store"), *FAST]
    first = run_server(MODEL, env=versioned_env, args=shared, database_url=postgres_database)
    second = run_server(MODEL, env=versioned_env, args=shared, database_url=postgres_database)
    assert train(first, value=11)["result"]["version"] == f"{MODEL}@1"
    assert [v["id"] for v in versions(second)["versions"]] == [f"{MODEL}@1"]
    assert predict(second, f"{MODEL}@1").json()["predictions"]["value"] == 11
    requests.post(f"{first}/v2/models/{MODEL}/versions/1/promote", timeout=30).raise_for_status()
    # The other instance follows the promotion at its next look at the database.
    until(lambda: predict(second, MODEL).json()["predictions"]["value"] == 11)
    assert train(second, value=12)["result"]["version"] == f"{MODEL}@2"
    assert [v["id"] for v in versions(first)["versions"]] == [f"{MODEL}@2", f"{MODEL}@1"]


def test_a_plugin_without_save_behaves_as_before(run_server, plugin_env, tmp_path):
    server = run_server("jobs_probe", env=make_plugin_site(tmp_path / "site", {"jobs_probe": "jobs_probe"}))
    started = requests.post(f"{server}/v2/models/jobs_probe/train/", json={"note": "x"}, timeout=30).json()
    deadline = time.monotonic() + 60
    while started["status"] in ("pending", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
        started = requests.get(f"{server}/v2/models/jobs_probe/train/{started['uuid']}", timeout=30).json()
    assert started["status"] == "done"
    assert set(started) == {"date", "args", "uuid", "status", "finish_date", "progress", "events", "result"}
    assert set(started["result"]) == {"output", "finish_date", "duration", "duration_seconds"}
    [model] = requests.get(f"{server}/v2/models/", timeout=30).json()["models"]
    assert set(model) == {"id", "name", "links"}
    refused = requests.get(f"{server}/v2/models/jobs_probe/versions/", timeout=30)
    assert refused.status_code == 501 and "save() and load()" in refused.json()["message"]
    assert requests.post(f"{server}/v2/models/jobs_probe@1/predict/", json={}, timeout=30).status_code == 404
    assert not (tmp_path / "model-store").exists()
    paths = requests.get(f"{server}/openapi.json", timeout=30).json()["paths"]
    assert not [path for path in paths if "versions" in path or "rollback" in path]


def test_a_save_that_writes_outside_its_directory_makes_no_version(run_server, versioned_env, tmp_path):
    server = run_server(MODEL, env=versioned_env, args=FAST)
    store = tmp_path / "model-store" / MODEL
    failed = train(server, value=5, failure="escape")
    assert failed["status"] == "error", failed
    message = failed["message"]
    assert "save() failed, no version was made" in message and "wrote outside its version directory" in message
    assert f"{MODEL}/x" in message, message
    assert [path.name for path in store.iterdir()] == ["x"], "the stray file is left, and no version"
    assert versions(server)["versions"] == []
    # The file left from before is no reason to refuse the next version.
    assert train(server, value=6)["result"]["version"] == f"{MODEL}@1"
