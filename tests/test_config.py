"""Options, their DEEPaaS defaults, sections and [DEFAULT], the environment, the sample file."""

import configparser
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
from oslo_config import cfg

from deepaas_like import config
from deepaas_like.settings import SECTIONS, Settings, options

ROOT = Path(__file__).resolve().parent.parent


def read(argv):
    """The Settings ``argv`` describes, without the files of this machine.

    (Was ``config.register(conf); conf(argv); config.settings(conf)``: the command line is
    argparse's now, and config.read gives the Settings.)
    """
    return config.read(argv, default_config_files=[], default_config_dirs=[])


def written(tmp_path, text):
    path = tmp_path / "server.conf"
    path.write_text(text)
    return ["--config-file", str(path)]


def test_deepaas_defaults(monkeypatch):
    monkeypatch.delenv(config.MODEL_ENV, raising=False)
    settings = read([])
    assert (settings.model_names, settings.base_path, settings.model.workers, settings.model.warm) == ((), "", 1, True)
    assert settings.predict_endpoint and settings.train_endpoint and settings.doc_endpoint
    assert not settings.debug_endpoint
    assert settings.namespace == "deepaas.v2.model"
    assert settings.database_url.startswith("sqlite+aiosqlite:///") and settings.database_url.endswith("jobs.sqlite")
    assert (settings.listen_ip, settings.listen_port) == ("127.0.0.1", 5000)


def test_model_names_from_flags_and_environment(monkeypatch):
    monkeypatch.setenv(config.MODEL_ENV, "from_env")
    assert read([]).model_names == ("from_env",)
    flags = ["--model-name", "a,b", "--model-name", "c"]
    assert read(flags).model_names == ("a", "b", "c")


def test_config_file_and_per_model_workers(tmp_path):
    path = tmp_path / "server.conf"
    path.write_text("[DEFAULT]\nlisten_port = 8080\nmodel_workers = demo:3\ngpus = 0,1\nbase_path = /api/\n")
    settings = read(["--config-file", str(path)])
    assert settings.listen_port == 8080
    assert settings.for_model("demo").workers == 3 and settings.for_model("other").workers == 1
    assert settings.model.gpus == ("0", "1") and settings.base_path == "/api"


def test_bad_values_are_rejected():
    # A bad value on the command line is a one-line error (exit 1), as one in a file is.
    with pytest.raises(cfg.Error, match=r"^--workers: Should be greater than or equal to 1$"):
        read(["--workers", "0"])
    with pytest.raises(SystemExit):
        read(["--no-such-option"])
    with pytest.raises(cfg.Error):
        read(["--model-workers", "demo:many"])


def test_sample_config_is_up_to_date(tmp_path):
    """The sample is what setup.cfg's ``oslo.config.opts`` entry point generates: a
    distribution of that name and entry point, first on the path, shadows the installed one
    (whose entry point is what setup.cfg said when it was installed).
    """
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    entry_point = setup["options.entry_points"]["oslo.config.opts"].strip()
    info = tmp_path / "path" / "deepaas_like-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: deepaas_like\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[oslo.config.opts]\n{entry_point}\n")
    path = os.pathsep.join([str(info.parent), str(ROOT), os.environ.get("PYTHONPATH", "")])
    output = tmp_path / "sample.conf"
    subprocess.run(
        ["oslo-config-generator", "--namespace", "deepaas_like", "--wrap-width", "79", "--output-file", str(output)],
        check=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert output.read_text() == (ROOT / "etc" / "deepaas_like.conf.sample").read_text(), (
        "regenerate with: oslo-config-generator --config-file etc/deepaas-like-config-generator.conf"
    )


def test_the_options_defaults_are_the_settings_defaults(monkeypatch):
    monkeypatch.delenv(config.MODEL_ENV, raising=False)
    monkeypatch.delenv(config.AUTH_ENV, raising=False)
    assert read([]) == Settings()


def test_a_bad_value_names_its_option():
    with pytest.raises(cfg.Error, match="trusted-proxies: .*'10.0.0.300'"):
        read(["--trusted-proxies", "10.0.0.300"])
    with pytest.raises(cfg.Error, match="model-predict-timeout: takes name:number pairs"):
        read(["--model-predict-timeout", "demo:soon"])


def test_a_model_section_sets_that_models_options(tmp_path):
    path = tmp_path / "server.conf"
    path.write_text(
        "[DEFAULT]\nworkers = 2\nmodel_workers = a:3,b:4\nmax_batch_size = 16\n"
        "[model:a]\nworkers = 5\ngpus = 1\nbatch_wait_ms = 20\nwarm = false\n"
        "[model:c]\npredict_timeout = 7.5\n"
    )
    settings = read(["--config-file", str(path)])
    a, b, c, other = (settings.for_model(name) for name in ("a", "b", "c", "other"))
    assert (a.workers, a.gpus, a.batch_wait_ms, a.warm, a.max_batch_size) == (5, ("1",), 20.0, False, 16)
    assert (b.workers, b.gpus, b.max_batch_size) == (4, (), 16)
    assert (c.workers, c.timeout(), c.max_batch_size) == (2, 7.5, 16)
    assert other == settings.model and (other.workers, other.timeout()) == (2, None)


def test_a_bad_value_in_a_model_section_names_the_section_and_option(tmp_path):
    path = tmp_path / "server.conf"
    path.write_text("[model:a]\nworkers = 0\n")
    with pytest.raises(cfg.Error, match=r"^\[model:a\] workers: .*"):
        read(["--config-file", str(path)])


def test_executor_and_ray_placement_options(tmp_path):
    path = tmp_path / "server.conf"
    path.write_text(
        "[DEFAULT]\nexecutor = ray\nray_address = 10.0.0.5:6379\nray_num_cpus = 0.5\nmax_workers = 3\n"
        "[model:big]\nray_num_gpus = 0.5\nray_memory = 2048\nray_resources = accelerator_l4:1\n"
        "ray_node_labels = zone:b\nworkers = 2\n"
    )
    settings = read(["--config-file", str(path)])
    assert (settings.executor, settings.ray_address) == ("ray", "10.0.0.5:6379")
    big, other = settings.for_model("big"), settings.for_model("other")
    assert (big.ray_num_cpus, big.ray_num_gpus, big.ray_memory_mb) == (0.5, 0.5, 2048)
    assert big.ray_resources == {"accelerator_l4": 1.0} and big.ray_node_labels == {"zone": "b"}
    assert (big.workers, big.max_workers) == (2, 3)
    assert (other.ray_num_gpus, other.ray_resources, other.max_workers) == (0.0, {}, 3)
    assert read([]).executor == "process"


def test_an_unknown_executor_and_inconsistent_autoscaling_are_refused(tmp_path):
    with pytest.raises(cfg.Error, match=r"^--executor: Valid values are \[process, ray\], but found 'dask'$"):
        read(["--executor", "dask"])
    with pytest.raises(cfg.Error, match=r"^max-workers \(2\) must be 0 or at least workers \(3\)$"):
        read(["--workers", "3", "--max-workers", "2"])
    path = tmp_path / "server.conf"
    path.write_text("[model:a]\nworkers = 4\nmax_workers = 2\n")
    with pytest.raises(cfg.Error, match=r"^\[model:a\] max-workers \(2\) must be 0 or at least workers \(4\)$"):
        read(["--config-file", str(path)])
    with pytest.raises(cfg.Error, match="ray-resources: takes name:number pairs"):
        read(["--ray-resources", "gpu_l4:lots"])


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


def test_every_option_is_in_one_of_the_sections_and_every_section_has_options():
    names = {section.name for section in SECTIONS}
    assert {option.section for _, option in options()} == names
    assert len(options()) == len({option.name for _, option in options()}) == 68


def test_a_section_sets_its_options_over_default_and_the_command_line_over_both(tmp_path):
    flags = written(
        tmp_path,
        "[DEFAULT]\nlisten_port = 8080\nworkers = 2\nlisten_ip = 0.0.0.0\n"
        "[http]\nlisten_port = 9090\n[workers]\nworkers = 3\n[jobs]\njob_retention_hours = 5\n",
    )
    settings = read(flags)
    assert (settings.listen_port, settings.listen_ip, settings.model.workers) == (9090, "0.0.0.0", 3)
    assert settings.job_retention_hours == 5.0
    settings = read([*flags, "--listen-port", "7070", "--workers", "4"])
    assert (settings.listen_port, settings.model.workers) == (7070, 4)


def test_a_deepaas_file_with_everything_in_default_keeps_working(tmp_path, monkeypatch, caplog):
    """DEEPaaS writes every option in [DEFAULT]: read there for every section, without a warning."""
    monkeypatch.delenv(config.MODEL_ENV, raising=False)
    flags = written(
        tmp_path,
        "[DEFAULT]\nlisten_ip = 0.0.0.0\nlisten_port = 5001\nmodel_name = demo\nwarm = false\ndebug = true\n"
        "train_endpoint = false\nworkers = 2\ndatabase_url = sqlite://\nmodel_store = /srv/models\n"
        "grpc_port = 50051\nray_address = auto\nauth_token = key\n",
    )
    with caplog.at_level(logging.WARNING):
        settings = read(flags)
    assert (settings.listen_ip, settings.listen_port, settings.model_names) == ("0.0.0.0", 5001, ("demo",))
    assert (settings.model.warm, settings.debug, settings.train_endpoint, settings.model.workers) == (
        False,
        True,
        False,
        2,
    )
    assert (settings.database_url, settings.model_store, settings.grpc_port) == ("sqlite://", "/srv/models", 50051)
    assert (settings.ray_address, settings.auth_tokens[0]) == ("auto", "key")
    assert caplog.records == []


def test_a_bad_value_in_a_section_names_the_section_and_option(tmp_path):
    with pytest.raises(cfg.Error, match=r"^\[http\] listen-port: .*'x'"):
        read(written(tmp_path, "[http]\nlisten_port = x\n"))
    with pytest.raises(cfg.Error, match=r"^\[DEFAULT\] workers: .*"):
        read(written(tmp_path, "[DEFAULT]\nworkers = 0\n"))


@pytest.mark.parametrize(
    ("flags", "where"),
    [
        (["--model-workers", "demo:3,other:1"], ""),
        ([], "[DEFAULT]\nmodel_workers = demo:3,other:1\n"),
        ([], "[models]\nmodel_workers = demo:3,other:1\n"),
    ],
    ids=["command line", "DEFAULT", "section"],
)
def test_the_per_model_dict_options_work_and_say_once_what_replaces_them(tmp_path, caplog, flags, where):
    with caplog.at_level(logging.WARNING, logger="deepaas_like"):
        settings = read([*flags, *written(tmp_path, where)])
    assert (settings.for_model("demo").workers, settings.for_model("other").workers) == (3, 1)
    assert [record.getMessage() for record in caplog.records] == [
        "model-workers is deprecated: set workers in a [model:NAME] section of the configuration file instead "
        "([model:demo] workers = 3; [model:other] workers = 1)"
    ]


def test_the_per_model_timeout_option_says_what_replaces_it_and_a_section_wins_over_it(tmp_path, caplog):
    flags = ["--model-predict-timeout", "demo:5,slow:60", *written(tmp_path, "[model:slow]\npredict_timeout = 90\n")]
    with caplog.at_level(logging.WARNING, logger="deepaas_like"):
        settings = read(flags)
    assert (settings.for_model("demo").timeout(), settings.for_model("slow").timeout()) == (5.0, 90.0)
    assert len(caplog.records) == 1
    assert "model-predict-timeout is deprecated" in caplog.text and "[model:slow] predict_timeout = 60" in caplog.text


def test_no_deprecation_warning_without_the_per_model_dict_options(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        read(written(tmp_path, "[model:demo]\nworkers = 3\n"))
    assert caplog.records == []


@pytest.mark.parametrize("spelling", ["--no{}", "--no-{}"])
def test_a_boolean_is_cleared_by_either_negative_spelling(spelling):
    flags = [spelling.format(name) for name in ("warm", "doc-endpoint", "access-log", "predict-endpoint")]
    settings = read(flags)
    assert not (settings.model.warm or settings.doc_endpoint or settings.access_log or settings.predict_endpoint)
    assert read([*flags, "--warm", "--doc-endpoint"]).model.warm is True, "the last flag wins"


def test_help_groups_the_options_by_section_and_documents_one_negative_spelling():
    text = config.parser(prog="deepaas-like-run").format_help()
    titles = re.findall(r"^([a-z ]+):$", text, flags=re.M)
    assert titles == ["options", "configuration files", *(section.name for section in SECTIONS)]
    assert "--warm, --nowarm" in text and "--no-warm" not in text
    http = text[text.index("\nhttp:") : text.index("\nsecurity:")]
    assert "\n  --listen-port LISTEN_PORT" in http and "\n  --workers WORKERS" not in http
    assert "\n  --workers WORKERS" in text[text.index("\nworkers:") :]


def test_a_section_of_another_name_is_reported_as_ignored(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="deepaas_like"):
        settings = read(written(tmp_path, "[htpp]\nlisten_port = 8080\n[http]\nbase_path = /a\n"))
    assert (settings.listen_port, settings.base_path) == (5000, "/a")
    assert [record.getMessage() for record in caplog.records] == [
        "[htpp] is not a section of this server's options (DEFAULT, grpc, http, jobs, logging, models, ray, "
        "security, versions, workers, model:NAME): what it sets is ignored"
    ]
