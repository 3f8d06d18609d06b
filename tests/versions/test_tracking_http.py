"""MLflow tracking against a real server and a real local tracking store (SQLite), read back
with ``MlflowClient``; a tracking server that is away never fails a training.
"""

from __future__ import annotations

import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.conftest import free_port
from tests.versions.helpers import FAST, MODEL, train


def test_each_training_is_an_mlflow_run_with_its_metrics_per_step(run_server, versioned_env, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    server = run_server(MODEL, env=versioned_env, args=[*FAST, "--mlflow-tracking-uri", uri])
    training = train(server, value=7, steps=4)
    assert training["status"] == "done", training
    assert "message" not in training, training["message"]
    run_id = training["mlflow_run_id"]
    version = requests.get(f"{server}/v2/models/{MODEL}/versions/1", timeout=30).json()
    assert version["mlflow_run_id"] == run_id

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == MODEL
    assert run.data.params == {"value": "7", "steps": "4", "failure": ""}
    tags = run.data.tags
    assert tags["deepaas_like.model"] == MODEL and tags["deepaas_like.job"] == training["uuid"]
    assert tags["deepaas_like.version"] == f"{MODEL}@1"
    assert tags["deepaas_like.instance"].endswith(f":{server.rsplit(':', 1)[1]}")  # host:port
    history = client.get_metric_history(run_id, "loss")
    assert sorted((point.step, point.value) for point in history) == [
        (0, 1.0),
        (1, 0.5),
        (2, pytest.approx(1 / 3)),
        (3, 0.25),
    ]
    assert run.data.metrics["accuracy"] == pytest.approx(0.57)  # the numbers train returned
    assert run.data.metrics["value"] == 7.0
    artifacts = [artifact.path for artifact in client.list_artifacts(run_id, "version")]
    assert artifacts == ["version/state.json"]

    # A failed training is a failed run.
    failed = train(server, value=1, failure="save")
    assert failed["status"] == "error"
    assert client.get_run(failed["mlflow_run_id"]).info.status == "FAILED"


def test_a_tracking_server_that_is_away_never_fails_the_training(run_server, versioned_env):
    away = f"http://127.0.0.1:{free_port()}"
    server = run_server(MODEL, env=versioned_env, args=[*FAST, "--mlflow-tracking-uri", away])
    training = train(server, value=3)
    assert training["status"] == "done", training
    assert training["result"]["version"] == f"{MODEL}@1"
    assert training["message"].startswith(f"MLflow tracking failed ({away})")
    assert "mlflow_run_id" not in training
