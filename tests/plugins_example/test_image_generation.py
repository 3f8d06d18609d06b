"""The image_generation example plugin (diffusers Stable Diffusion), in-process and over HTTP.

A tiny random pipeline is built from configs, written with ``save_pretrained`` and loaded
through the plugin's own ``from_pretrained`` code; images are 64x64 with 2 steps.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile

import marshmallow
import pytest
import requests
import torch
from deepaas_like_image_generation import api
from deepaas_like_image_generation import pipeline as sd
from deepaas_like_image_generation.testing import save_tiny_pipeline
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = {"width": 64, "height": 64, "num_inference_steps": 2}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # CI has 2 cores; convolutions this small gain nothing from a second thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd")))


@pytest.fixture
def plugin(model_dir, monkeypatch):
    monkeypatch.setenv(sd.MODEL_DIR_ENV, model_dir)
    return api


def open_png(data: bytes) -> Image.Image:
    assert data[:8] == PNG_SIGNATURE
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def load_args(data: dict) -> dict:
    """Validate ``data`` against the plugin's predict arguments, as the server does."""
    return marshmallow.Schema.from_dict(api.get_predict_args())().load(data)


# --- device and dtype -------------------------------------------------------------------


def test_select_device_uses_cuda_when_a_gpu_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sd.select_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sd.select_device() == "cpu"


def test_select_dtype_is_half_on_cuda_and_float32_on_cpu():
    assert sd.select_dtype("cuda") is torch.float16
    assert sd.select_dtype("cuda:0") is torch.float16
    assert sd.select_dtype("cpu") is torch.float32


def test_warm_loads_in_float16_on_cuda_when_a_gpu_is_visible(plugin, model_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sd, "load_pipeline", lambda *args: calls.append(args) or object())
    monkeypatch.setattr(api, "_loaded", None)
    plugin.warm()
    assert calls == [(model_dir, "cuda", torch.float16)]
    assert plugin.get_metadata()["device"] == "cuda"


def test_metadata_reports_cpu_float32_here(plugin):
    metadata = plugin.get_metadata()
    assert metadata["device"] == "cpu"
    assert metadata["dtype"] == "float32"
    assert metadata["media_types"] == ["image/png", "application/zip", "application/json"]


# --- loading ----------------------------------------------------------------------------


def test_load_pipeline_has_no_safety_checker_and_no_progress_bar(model_dir):
    pipe = sd.load_pipeline(model_dir, "cpu", torch.float32)
    assert pipe.safety_checker is None
    assert pipe.unet.dtype == torch.float32
    assert pipe.device.type == "cpu"
    assert pipe._progress_bar_config == {"disable": True}


@pytest.mark.parametrize("hook", ["warm", "predict"])
def test_unset_model_dir_is_a_clear_error(hook, monkeypatch):
    monkeypatch.delenv(sd.MODEL_DIR_ENV, raising=False)
    monkeypatch.setattr(api, "_loaded", None)
    with pytest.raises(sd.ModelDirError, match=f"{sd.MODEL_DIR_ENV} is not set"):
        getattr(api, hook)(**({"prompt": "a cat"} if hook == "predict" else {}))


def test_missing_model_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(sd.MODEL_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(sd.ModelDirError, match="no such directory"):
        api.warm()


def test_directory_without_pipeline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(sd.MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(sd.ModelDirError, match="no model_index.json"):
        api.warm()


def test_predict_loads_the_pipeline_when_warm_was_not_called(plugin, monkeypatch):
    monkeypatch.setattr(api, "_loaded", None)
    image = open_png(plugin.predict(prompt="a cat", seed=0, **SMALL))
    assert image.size == (64, 64)


# --- arguments --------------------------------------------------------------------------


def test_predict_args_defaults():
    assert load_args({"prompt": "a cat"}) == {
        "prompt": "a cat",
        "negative_prompt": None,
        "num_inference_steps": 25,
        "guidance_scale": 7.5,
        "seed": None,
        "width": 512,
        "height": 512,
        "num_images": 1,
        "accept": "image/png",
    }


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "prompt", "required"),
        ({"width": 100}, "width", "multiple of 8"),
        ({"height": 36}, "height", "greater than or equal to 64"),
        ({"width": 4096}, "width", "less than or equal to 2048"),
        ({"num_inference_steps": 0}, "num_inference_steps", "greater than or equal to 1"),
        ({"num_inference_steps": 151}, "num_inference_steps", "less than or equal to 150"),
        ({"num_images": 9}, "num_images", "less than or equal to 8"),
        ({"accept": "image/jpeg"}, "accept", "Must be one of"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
    ],
)
def test_bad_arguments_name_the_field(data, field, message):
    with pytest.raises(marshmallow.ValidationError) as error:
        load_args({"prompt": "a cat", **data} if field != "prompt" else data)
    assert list(error.value.messages) == [field]
    assert message in " ".join(error.value.messages[field])


def test_predict_rejects_a_size_that_is_not_a_multiple_of_8(plugin):
    with pytest.raises(marshmallow.ValidationError) as error:
        plugin.predict(prompt="a cat", width=100, height=64, num_inference_steps=2)
    assert error.value.normalized_messages() == {"width": ["Must be a multiple of 8 (got 100); e.g. 96."]}


# --- predictions ------------------------------------------------------------------------


def test_png_is_the_first_image_at_the_requested_size(plugin):
    image = open_png(plugin.predict(prompt="a red cat", seed=1, width=96, height=64, num_inference_steps=2))
    assert image.format == "PNG"
    assert image.mode == "RGB"
    assert image.size == (96, 64)  # width x height, not swapped


def test_same_seed_gives_the_same_image_and_another_seed_does_not(plugin):
    first = plugin.predict(prompt="a blue dog", seed=42, **SMALL)
    again = plugin.predict(prompt="a blue dog", seed=42, **SMALL)
    other = plugin.predict(prompt="a blue dog", seed=43, **SMALL)
    assert first == again
    assert open_png(first).tobytes() == open_png(again).tobytes()
    assert open_png(first).tobytes() != open_png(other).tobytes()


def test_negative_prompt_changes_the_image(plugin):
    plain = plugin.predict(prompt="a horse", seed=5, **SMALL)
    negative = plugin.predict(prompt="a horse", negative_prompt="a red cat", seed=5, **SMALL)
    assert open_png(plain).tobytes() != open_png(negative).tobytes()


def test_zip_holds_every_image_and_the_parameters(plugin):
    data = plugin.predict(prompt="a cat", seed=7, num_images=3, accept="application/zip", **SMALL)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["image_0.png", "image_1.png", "image_2.png", "parameters.json"]
        pngs = [archive.read(f"image_{i}.png") for i in range(3)]
        parameters = json.loads(archive.read("parameters.json"))
    images = [open_png(png) for png in pngs]
    assert [image.size for image in images] == [(64, 64)] * 3
    assert images[0].tobytes() != images[1].tobytes()
    assert parameters == {
        "prompt": "a cat",
        "negative_prompt": None,
        "num_inference_steps": 2,
        "guidance_scale": 7.5,
        "seed": 7,
        "width": 64,
        "height": 64,
        "num_images": 3,
    }
    # The PNG answer is the ZIP's first image.
    assert plugin.predict(prompt="a cat", seed=7, num_images=3, **SMALL) == pngs[0]


def test_json_has_base64_pngs_and_the_seed_it_drew(plugin):
    result = plugin.predict(prompt="a photo of an astronaut", num_images=2, accept="application/json", **SMALL)
    assert api.PredictionSchema().validate(result) == {}
    json.dumps(result)  # JSON-able as returned
    images = [open_png(base64.b64decode(text)) for text in result["images"]]
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    seed = result["parameters"]["seed"]
    assert isinstance(seed, int) and 0 <= seed <= api.MAX_SEED
    # The reported seed reproduces the images.
    again = plugin.predict(prompt="a photo of an astronaut", num_images=2, seed=seed, accept="application/json", **SMALL)
    assert again == result


# --- HTTP, through a real deepaas-like-run server ----------------------------------------


@pytest.fixture(scope="module")
def predict_url(module_server, model_dir) -> str:
    server = module_server("image_generation", env={sd.MODEL_DIR_ENV: model_dir})
    return f"{server}/v2/models/image_generation/predict/"


def form(**fields) -> dict:
    """A multipart form, as ``curl -F name=value`` sends it."""
    return {name: (None, str(value)) for name, value in fields.items()}


SMALL_FORM = form(prompt="a cat", seed=3, **SMALL)


def test_http_png_download(predict_url):
    # curl -H 'Accept: image/png' -F prompt=... -o out.png
    answer = requests.post(predict_url, files=SMALL_FORM, headers={"Accept": "image/png"}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    assert open_png(answer.content).size == (64, 64)
    again = requests.post(predict_url, files=SMALL_FORM, headers={"Accept": "image/png"}, timeout=120)
    assert again.content == answer.content  # same seed, same bytes


def test_http_png_is_the_default_answer(predict_url):
    answer = requests.post(predict_url, files=SMALL_FORM, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    assert open_png(answer.content).size == (64, 64)


def test_http_zip_download(predict_url):
    # curl -F accept=application/zip -F num_images=2 ...
    files = {**SMALL_FORM, **form(num_images=2, accept="application/zip")}
    answer = requests.post(predict_url, files=files, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert archive.namelist() == ["image_0.png", "image_1.png", "parameters.json"]
        assert [open_png(archive.read(f"image_{i}.png")).size for i in range(2)] == [(64, 64)] * 2
        parameters = json.loads(archive.read("parameters.json"))
    assert parameters["seed"] == 3
    assert parameters["num_images"] == 2


def test_http_json_with_base64_images(predict_url):
    answer = requests.post(predict_url, files=SMALL_FORM, headers={"Accept": "application/json"}, timeout=120)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert sorted(body) == ["images", "parameters"]
    assert body["parameters"]["seed"] == 3
    assert [open_png(base64.b64decode(text)).size for text in body["images"]] == [(64, 64)]


def test_http_bad_width_is_422(predict_url):
    answer = requests.post(predict_url, files={**SMALL_FORM, **form(width=100)}, timeout=120)
    assert answer.status_code == 422
    assert answer.json() == {"width": ["Must be a multiple of 8 (got 100); e.g. 96."]}
