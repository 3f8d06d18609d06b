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
    assert (settings.model_names, settings.base_path, settings.workers, settings.warm) == ((), "", 1, True)
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
    assert settings.workers_for("demo") == 3 and settings.workers_for("other") == 1
    assert settings.gpus == ("0", "1") and settings.base_path == "/api"


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
