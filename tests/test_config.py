"""Options, their DEEPaaS defaults, the config file, the environment, and the sample file."""

import subprocess
from pathlib import Path

import pytest
from oslo_config import cfg

from deepaas_like import config
from deepaas_like.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def parse(argv, monkeypatch=None):
    conf = cfg.ConfigOpts()
    config.register(conf)
    conf(argv, project="deepaas_like_tests", default_config_files=[], default_config_dirs=[])
    return conf


def test_deepaas_defaults(monkeypatch):
    monkeypatch.delenv(config.MODEL_ENV, raising=False)
    settings = config.settings(parse([]))
    assert (settings.model_names, settings.base_path, settings.model.workers, settings.model.warm) == ((), "", 1, True)
    assert settings.predict_endpoint and settings.train_endpoint and settings.doc_endpoint
    assert not settings.debug_endpoint
    assert settings.namespace == "deepaas.v2.model"
    assert settings.database_url.startswith("sqlite+aiosqlite:///") and settings.database_url.endswith("jobs.sqlite")
    conf = parse([])
    assert (conf.listen_ip, conf.listen_port) == ("127.0.0.1", 5000)


def test_model_names_from_flags_and_environment(monkeypatch):
    monkeypatch.setenv(config.MODEL_ENV, "from_env")
    assert config.settings(parse([])).model_names == ("from_env",)
    flags = ["--model-name", "a,b", "--model-name", "c"]
    assert config.settings(parse(flags)).model_names == ("a", "b", "c")


def test_config_file_and_per_model_workers(tmp_path):
    path = tmp_path / "server.conf"
    path.write_text("[DEFAULT]\nlisten_port = 8080\nmodel_workers = demo:3\ngpus = 0,1\nbase_path = /api/\n")
    conf = parse(["--config-file", str(path)])
    settings = config.settings(conf)
    assert conf.listen_port == 8080
    assert settings.for_model("demo").workers == 3 and settings.for_model("other").workers == 1
    assert settings.model.gpus == ("0", "1") and settings.base_path == "/api"


def test_bad_values_are_rejected():
    with pytest.raises(SystemExit):
        parse(["--workers", "0"])
    with pytest.raises(cfg.Error):
        config.settings(parse(["--model-workers", "demo:many"]))


def test_sample_config_is_up_to_date(tmp_path):
    output = tmp_path / "sample.conf"
    subprocess.run(
        ["oslo-config-generator", "--namespace", "deepaas_like", "--wrap-width", "79", "--output-file", str(output)],
        check=True,
    )
    assert output.read_text() == (ROOT / "etc" / "deepaas_like.conf.sample").read_text(), (
        "regenerate with: oslo-config-generator --config-file etc/deepaas-like-config-generator.conf"
    )


def test_the_options_defaults_are_the_settings_defaults(monkeypatch):
    monkeypatch.delenv(config.MODEL_ENV, raising=False)
    monkeypatch.delenv(config.AUTH_ENV, raising=False)
    assert config.settings(parse([])) == Settings()


def test_a_bad_value_names_its_option():
    with pytest.raises(cfg.Error, match="trusted-proxies: .*'10.0.0.300'"):
        config.settings(parse(["--trusted-proxies", "10.0.0.300"]))
    with pytest.raises(cfg.Error, match="model-predict-timeout: takes name:number pairs"):
        config.settings(parse(["--model-predict-timeout", "demo:soon"]))


def test_a_model_section_sets_that_models_options(tmp_path):
    path = tmp_path / "server.conf"
    path.write_text(
        "[DEFAULT]\nworkers = 2\nmodel_workers = a:3,b:4\nmax_batch_size = 16\n"
        "[model:a]\nworkers = 5\ngpus = 1\nbatch_wait_ms = 20\nwarm = false\n"
        "[model:c]\npredict_timeout = 7.5\n"
    )
    settings = config.settings(parse(["--config-file", str(path)]))
    a, b, c, other = (settings.for_model(name) for name in ("a", "b", "c", "other"))
    assert (a.workers, a.gpus, a.batch_wait_ms, a.warm, a.max_batch_size) == (5, ("1",), 20.0, False, 16)
    assert (b.workers, b.gpus, b.max_batch_size) == (4, (), 16)
    assert (c.workers, c.timeout(), c.max_batch_size) == (2, 7.5, 16)
    assert other == settings.model and (other.workers, other.timeout()) == (2, None)


def test_a_bad_value_in_a_model_section_names_the_section_and_option(tmp_path):
    path = tmp_path / "server.conf"
    path.write_text("[model:a]\nworkers = 0\n")
    with pytest.raises(cfg.Error, match=r"^\[model:a\] workers: .*"):
        config.settings(parse(["--config-file", str(path)]))


def test_executor_and_ray_placement_options(tmp_path):
    path = tmp_path / "server.conf"
    path.write_text(
        "[DEFAULT]\nexecutor = ray\nray_address = 10.0.0.5:6379\nray_num_cpus = 0.5\nmax_workers = 3\n"
        "[model:big]\nray_num_gpus = 0.5\nray_memory = 2048\nray_resources = accelerator_l4:1\n"
        "ray_node_labels = zone:b\nworkers = 2\n"
    )
    settings = config.settings(parse(["--config-file", str(path)]))
    assert (settings.executor, settings.ray_address) == ("ray", "10.0.0.5:6379")
    big, other = settings.for_model("big"), settings.for_model("other")
    assert (big.ray_num_cpus, big.ray_num_gpus, big.ray_memory_mb) == (0.5, 0.5, 2048)
    assert big.ray_resources == {"accelerator_l4": 1.0} and big.ray_node_labels == {"zone": "b"}
    assert (big.workers, big.max_workers) == (2, 3)
    assert (other.ray_num_gpus, other.ray_resources, other.max_workers) == (0.0, {}, 3)
    assert config.settings(parse([])).executor == "process"


def test_an_unknown_executor_and_inconsistent_autoscaling_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        parse(["--executor", "dask"])
    with pytest.raises(cfg.Error, match=r"^max-workers \(2\) must be 0 or at least workers \(3\)$"):
        config.settings(parse(["--workers", "3", "--max-workers", "2"]))
    path = tmp_path / "server.conf"
    path.write_text("[model:a]\nworkers = 4\nmax_workers = 2\n")
    with pytest.raises(cfg.Error, match=r"^\[model:a\] max-workers \(2\) must be 0 or at least workers \(4\)$"):
        config.settings(parse(["--config-file", str(path)]))
    with pytest.raises(cfg.Error, match="ray-resources: takes name:number pairs"):
        config.settings(parse(["--ray-resources", "gpu_l4:lots"]))


def test_the_config_file_drives_two_models_with_different_workers_and_batching(run_server, tmp_path):
    """One file describes a two-model server: ``wide`` has two workers and no batching,
    ``grouped`` one worker that takes requests in batches of four.
    """
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from tests.conftest import make_plugin_site

    env = make_plugin_site(tmp_path / "site", {"wide": "batching", "grouped": "batching"})
    path = tmp_path / "server.conf"
    path.write_text(
        "[DEFAULT]\nworkers = 1\n"
        "[model:wide]\nworkers = 2\nmax_batch_size = 1\n"
        # A long wait: the four requests below always leave as one batch, however slow the machine.
        "[model:grouped]\nmax_batch_size = 4\nbatch_wait_ms = 30000\n"
    )
    server = run_server("wide", "grouped", env=env, args=["--config-file", str(path)])

    def predict(model: str, x: int) -> dict:
        answer = requests.post(f"{server}/v2/models/{model}/predict/", json={"x": x}, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]

    with ThreadPoolExecutor(4) as pool:
        grouped = list(pool.map(lambda x: predict("grouped", x), range(4)))
        wide = list(pool.map(lambda x: predict("wide", x), range(8)))
    assert [answer["batch"] for answer in grouped] == [4, 4, 4, 4]
    assert [answer["y"] for answer in grouped] == [0, 1, 4, 9]
    assert {answer["batch"] for answer in wide} == {1}
    metrics = requests.get(f"{server}/metrics", timeout=30).text
    assert 'deepaas_like_workers{model="wide"} 2.0' in metrics
    assert 'deepaas_like_workers{model="grouped"} 1.0' in metrics
    assert 'deepaas_like_batch_size_bucket{le="4.0",model="grouped"} 1.0' in metrics
