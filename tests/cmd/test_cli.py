"""``deepaas-like-cli`` runs the pip-installed demo plugin in-process."""

import importlib.util
import json
import os
import subprocess

import pytest
from PIL import Image

from tests.conftest import FIXTURE_PLUGINS, make_plugin_site, png_bytes


def _colliding() -> tuple[str, ...]:
    """The argument names of the test plugin ``cli_probe`` (its ``COLLIDING``)."""
    spec = importlib.util.spec_from_file_location("cli_probe", FIXTURE_PLUGINS / "cli_probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.COLLIDING


COLLIDING = _colliding()


def cli(*args, check=True):
    return subprocess.run(
        ["deepaas-like-cli", "--model-name", "demo", *args], capture_output=True, text=True, check=check, timeout=120
    )


def test_metadata():
    metadata = json.loads(cli("metadata").stdout)
    assert metadata["id"] == "demo" and metadata["warm"] is True


def test_predict_json_and_png(tmp_path):
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes((50, 20)))
    stats = json.loads(cli("predict", "--image", str(image), "--size", "10").stdout)
    assert stats["thumbnail_size"] == [10, 4] and stats["width"] == 50
    output = tmp_path / "out.png"
    answer = json.loads(cli("predict", "--image", str(image), "--accept", "image/png", "--output", str(output)).stdout)
    assert answer["output"] == str(output)
    assert Image.open(output).size == (50, 20)


def test_invalid_arguments_exit_2_naming_the_field(tmp_path):
    process = cli("predict", "--image", str(tmp_path / "missing.png"), check=False)
    assert process.returncode == 2 and "image" in json.loads(process.stderr)
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes())
    process = cli("predict", "--image", str(image), "--size", "1", check=False)
    assert process.returncode == 2 and set(json.loads(process.stderr)) == {"size"}
    process = cli("predict", "--size", "10", check=False)
    assert process.returncode == 2 and "required: --image" in process.stderr


def test_help_shows_required_arguments_as_required_and_no_markup():
    usage = cli("predict", "--help").stdout
    assert "--image IMAGE" in usage and "[--image IMAGE]" not in usage, "a required argument is not in brackets"
    assert "[--size SIZE]" in usage
    top = subprocess.run(["deepaas-like-cli", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "``" not in top and "install" in top


def test_train_and_flags_from_arguments():
    result = json.loads(cli("train", "--epochs", "2").stdout)
    assert result["status"] == "done" and len(result["result"]["output"]["epochs"]) == 2
    assert "--epoch_seconds" in cli("train", "--help").stdout


def test_the_plugin_gets_a_copy_of_the_file_and_json_lists(tmp_path, plugin_path):
    image = tmp_path / "precious.png"
    image.write_bytes(png_bytes())
    answer = subprocess.run(
        ["deepaas-like-cli", "--model-name", "ai4os_style", "predict", "--input", str(image), "--delete_input", "true"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["predictions"] == {"deleted": "precious.png"}
    assert image.read_bytes() == png_bytes(), "the plugin deleted a temporary copy, not the user's file"
    labels = subprocess.run(
        [
            "deepaas-like-cli",
            "--model-name",
            "deepaas_style",
            "predict",
            "--data",
            str(image),
            "--labels",
            '["cat", "dog"]',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert labels.returncode == 0, labels.stderr
    assert json.loads(labels.stdout)["labels"] == ["cat", "dog"], "DEEPaaS's JSON list syntax"
    repeated = subprocess.run(
        [
            "deepaas-like-cli",
            "--model-name",
            "deepaas_style",
            "predict",
            "--data",
            str(image),
            "--labels",
            "x",
            "--labels",
            "y",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(repeated.stdout)["labels"] == ["x", "y"]


def test_openapi():
    document = json.loads(cli("openapi").stdout)
    assert document["openapi"] == "3.0.3"
    assert "/v2/models/demo/predict/" in document["paths"]
    assert document["components"]["schemas"]["DemoPredictArgs"]["properties"]["image"]["format"] == "binary"


def test_unknown_model():
    process = subprocess.run(["deepaas-like-cli", "--model-name", "nope", "metadata"], capture_output=True, text=True)
    assert process.returncode == 1 and "'nope' is not installed" in process.stderr


@pytest.fixture
def probe(tmp_path):
    """Runs ``deepaas-like-cli --model-name cli_probe ARGS`` (a plugin whose arguments are named
    as the CLI's options, and whose hooks print to stdout), or ``--model-name cli_noisy`` (the
    same prints, one argument ``note``) with ``model="cli_noisy"``."""
    plugins = {"cli_probe": "cli_probe", "cli_noisy": "cli_probe:Noisy"}
    env = {**os.environ, **make_plugin_site(tmp_path / "site", plugins)}

    def run(*args: str, model: str = "cli_probe") -> subprocess.CompletedProcess:
        return subprocess.run(
            ["deepaas-like-cli", "--model-name", model, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )

    return run


@pytest.mark.parametrize("command", ["predict", "train"])
def test_plugin_arguments_may_have_the_names_of_the_cli_s_options_or_their_prefixes(probe, command):
    # deepaas-like-cli --model-name yolov8_api predict --files img.png --model rand exited 2:
    # "ambiguous option: --model could match --model-name, --model-namespace".
    flags = [item for name in COLLIDING for item in (f"--{name}", f"value of {name}")]
    ran = probe(command, *flags)
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    received = answer["predictions"]["received"] if command == "predict" else answer["result"]["output"]["received"]
    assert received == {name: f"value of {name}" for name in COLLIDING}
    usage = probe(command, "-h")
    assert usage.returncode == 0 and "--model-name MODEL-NAME" in usage.stdout, "-h is still the help"


def test_options_before_the_command_are_the_cli_s_and_none_is_taken_by_a_prefix(probe, tmp_path):
    ran = probe("--no-warm", "--deepaas_method_output", "out/answer.json", "predict", "--model", "m", "--no", "n")
    assert ran.returncode == 0, ran.stderr
    assert "cli_probe: warm" not in ran.stderr, "--no-warm before the command is the CLI's"
    answer = json.loads(ran.stdout)
    assert answer["predictions"]["received"]["model"] == "m" and answer["predictions"]["received"]["no"] == "n"
    assert json.loads((tmp_path / "out" / "answer.json").read_text()) == answer
    prefix = probe("--no", "predict")
    assert prefix.returncode == 2 and "unrecognized arguments: --no" in prefix.stderr, prefix.stderr
    install = subprocess.run(
        ["deepaas-like-cli", "install", "--dry", "./nothing"], capture_output=True, text=True, timeout=120
    )
    assert install.returncode == 2 and "unrecognized arguments: --dry" in install.stderr, install.stderr


@pytest.mark.parametrize(
    ("command", "key", "value"),
    [(["metadata"], "id", "cli_noisy"), (["predict", "--note", "n"], "status", "OK"), (["train"], "status", "done")],
    ids=["metadata", "predict", "train"],
)
def test_stdout_carries_the_result_alone_and_what_the_plugin_prints_goes_to_stderr(probe, command, key, value):
    ran = probe(*command, model="cli_noisy")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)[key] == value  # the whole of stdout: nothing before or after the JSON
    hooks = ["warm"] if command == ["metadata"] else ["warm", command[0]]
    printed = ["cli_probe: Load model ... (at import)"] + [
        f"cli_probe: {hook} {how}" for hook in hooks for how in ("print", "file descriptor 1", "child process")
    ]
    missing = [line for line in printed if line not in ran.stderr.splitlines()]
    assert missing == [], ran.stderr


def test_deepaas_method_output_writes_the_result_as_deepaas_cli_does(tmp_path):
    """DEEPaaS's ``deepaas-cli --deepaas_method_output FILE predict ...``: before the command,
    for metadata, predict and train; after ``predict`` it is ``--output``."""
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes((50, 20)))
    png = tmp_path / "new" / "folder" / "out.png"
    written = cli(f"--deepaas_method_output={png}", "predict", "--image", str(image), "--accept", "image/png")
    assert json.loads(written.stdout)["output"] == str(png) and Image.open(png).size == (50, 20)
    document = tmp_path / "prediction.json"
    answer = json.loads(cli("predict", "--image", str(image), "--deepaas_method_output", str(document)).stdout)
    assert json.loads(document.read_text()) == answer and answer["width"] == 50
    training = tmp_path / "training.json"
    trained = json.loads(cli("--deepaas_method_output", str(training), "train", "--epochs", "1").stdout)
    assert json.loads(training.read_text()) == trained and trained["status"] == "done"
    metadata = tmp_path / "metadata.json"
    assert json.loads(cli("--deepaas_method_output", str(metadata), "metadata").stdout)["id"] == "demo"
    assert json.loads(metadata.read_text())["id"] == "demo"


@pytest.mark.parametrize("flag", ["--nowarm", "--no-warm"])
def test_warm_is_skipped_with_either_negative_spelling(probe, flag):
    ran = probe(flag, "metadata")
    assert ran.returncode == 0, ran.stderr
    assert "cli_probe: warm" not in ran.stderr
    assert "cli_probe: warm" in probe("metadata").stderr, "warm by default"


def test_the_global_options_are_the_servers_with_one_negative_spelling_documented():
    top = subprocess.run(["deepaas-like-cli", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--model-name MODEL_NAME" in top and "--model-namespace MODEL_NAMESPACE" in top
    assert "--warm, --nowarm" in top and "--no-warm" not in top
    assert "Default: deepaas.v2.model." in " ".join(top.split())
