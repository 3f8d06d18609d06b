"""``deepaas-like-cli`` runs the pip-installed demo plugin in-process."""

import json
import subprocess

from PIL import Image

from tests.conftest import png_bytes


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
