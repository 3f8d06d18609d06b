"""Plugin code that segfaults, exits, loops forever or allocates without bound fails only
its own request; a model whose worker keeps dying in warm() becomes unavailable (503)."""

from __future__ import annotations

import threading
import time

import pytest
import requests

CRASHY = "/v2/models/crashy/predict/"


@pytest.fixture(scope="module")
def crashy(module_server, tmp_path_factory):
    from tests.conftest import TEST_PLUGINS, make_plugin_site

    # The plugin again as "crashy_timed", the one model with a prediction timeout: a clock
    # bounds only the request that needs one ("loop"), so that a slow machine (allocating
    # 1.5 GB under load took over 6 s) cannot turn another crash into a 504.
    env = make_plugin_site(tmp_path_factory.mktemp("site"), {**TEST_PLUGINS, "crashy_timed": "crashy"})
    args = ["--model-predict-timeout", "crashy_timed:6", "--worker-memory-limit", "1500", "--workers", "1"]
    return module_server("crashy", "crashy_timed", env=env, args=args)


@pytest.mark.parametrize(
    ("model", "how", "status", "message"),
    [
        ("crashy", "segfault", 500, "killed by SIGSEGV"),
        ("crashy", "exit", 500, "exited with code 7"),
        ("crashy_timed", "loop", 504, "did not answer within 6 s"),
        ("crashy", "allocate", 500, "MemoryError"),
    ],
)
def test_a_crash_fails_only_its_request(crashy, model, how, status, message):
    url = crashy + f"/v2/models/{model}/predict/"
    answer = requests.post(url, data={"how": how}, timeout=120)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["message"]
    after = requests.post(url, data={"how": "ok", "tag": how}, timeout=120)
    assert after.status_code == 200 and after.json()["predictions"]["tag"] == how


def test_metrics_count_worker_restarts(crashy):
    requests.post(crashy + CRASHY, data={"how": "exit"}, timeout=60)
    requests.post(crashy + CRASHY, data={"how": "ok"}, timeout=60)
    text = requests.get(crashy + "/metrics").text
    restarts = [
        line for line in text.splitlines() if line.startswith('deepaas_like_worker_restarts_total{model="crashy"}')
    ]
    assert restarts and float(restarts[0].split()[-1]) >= 1


def test_warm_dying_repeatedly_makes_the_model_unavailable(run_server, plugin_env, tmp_path):
    marker = tmp_path / "fail-warm"
    server = run_server("warm_fails", env={**plugin_env, "WARM_FAILS_MARKER": str(marker)})
    url = server + "/v2/models/warm_fails/predict/"
    assert requests.post(url).status_code == 200
    assert requests.get(server + "/readyz").status_code == 200
    marker.write_text("")
    assert requests.post(url, data={"exit_now": "true"}).status_code == 500
    deadline = time.monotonic() + 60
    while (answer := requests.post(url)).status_code != 503:
        assert time.monotonic() < deadline, f"never became unavailable: {answer.status_code} {answer.text}"
        time.sleep(0.2)
    assert "failed to start 3 times" in answer.json()["message"]
    ready = requests.get(server + "/readyz")
    assert ready.status_code == 503 and "warm_fails" in ready.json()["models"]
    assert requests.get(server + "/healthz").json() == {"status": "ok"}, "the process itself is alive"


def test_full_queue_answers_503_with_retry_after(run_server, plugin_env):
    # Depth 1: the second request waits in the queue instead of being sent to the busy worker.
    server = run_server("crashy", env=plugin_env, args=["--max-queue", "1", "--pipeline-depth", "1"])
    busy = threading.Thread(
        target=requests.post, args=(server + CRASHY,), kwargs={"data": {"how": "sleep", "seconds": "3"}}
    )
    waiting = threading.Thread(
        target=requests.post, args=(server + CRASHY,), kwargs={"data": {"how": "sleep", "seconds": "0"}}
    )
    busy.start()
    time.sleep(0.5)
    waiting.start()
    time.sleep(0.5)
    answer = requests.post(server + CRASHY, data={"how": "ok"})
    busy.join()
    waiting.join()
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert "waiting" in answer.json()["message"]
    assert requests.post(server + CRASHY, data={"how": "ok"}).status_code == 200


def test_a_client_that_disconnects_leaves_the_queue(run_server, plugin_env, tmp_path):
    calls = tmp_path / "calls"
    # Depth 1: a request sent to a worker runs, even if its client has gone; one that waits
    # in the queue does not.
    server = run_server("crashy", env={**plugin_env, "CRASHY_CALLS": str(calls)}, args=["--pipeline-depth", "1"])
    busy = threading.Thread(
        target=requests.post, args=(server + CRASHY,), kwargs={"data": {"how": "sleep", "seconds": "2", "tag": "first"}}
    )
    busy.start()
    time.sleep(0.5)
    with pytest.raises(requests.Timeout):
        requests.post(server + CRASHY, data={"tag": "gave-up"}, timeout=0.5)
    busy.join()
    assert requests.post(server + CRASHY, data={"tag": "third"}).status_code == 200
    assert calls.read_text().split() == ["first", "third"]
