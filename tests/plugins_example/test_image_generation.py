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
import numpy as np
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
    again = plugin.predict(
        prompt="a photo of an astronaut", num_images=2, seed=seed, accept="application/json", **SMALL
    )
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


# --- schedulers, batching, loading options, memory (issue 16) ------------------------------


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(open_png(data), dtype=np.int16)


def assert_same_picture(first: bytes, second: bytes) -> None:
    # Batched kernels may round a float differently: at most 2 levels of 255 apart.
    difference = np.abs(pixels(first) - pixels(second))
    assert difference.max() <= 2, f"pixels differ by up to {difference.max()}"


def test_the_arguments_of_older_clients_give_the_same_parameters_back(plugin):
    # No scheduler argument: the pipeline's own, and no new key in the reported parameters.
    assert "scheduler" not in load_args({"prompt": "a cat"})
    result = plugin.predict(prompt="a cat", seed=4, accept="application/json", **SMALL)
    assert sorted(result["parameters"]) == sorted(
        ["prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "seed", "width", "height", "num_images"]
    )


def test_a_scheduler_changes_the_image_and_is_reported(plugin):
    default = plugin.predict(prompt="a cat", seed=9, **SMALL)
    assert plugin.predict(prompt="a cat", seed=9, scheduler="default", **SMALL) == default
    assert plugin.predict(prompt="a cat", seed=9, scheduler="ddim", **SMALL) == default  # the tiny pipeline's own
    euler = plugin.predict(prompt="a cat", seed=9, scheduler="euler_ancestral", accept="application/json", **SMALL)
    assert euler["parameters"]["scheduler"] == "euler_ancestral"
    assert base64.b64decode(euler["images"][0]) != default
    # The pipeline keeps its own scheduler for the next request.
    assert type(api._loaded[1].scheduler).__name__ == "DDIMScheduler"
    assert plugin.predict(prompt="a cat", seed=9, **SMALL) == default


@pytest.mark.parametrize("name", sorted(sd.SCHEDULERS))
def test_every_scheduler_draws_with_few_steps(plugin, name):
    assert open_png(plugin.predict(prompt="a dog", seed=1, scheduler=name, **SMALL)).size == (64, 64)


def test_an_unknown_scheduler_is_422_naming_scheduler():
    with pytest.raises(marshmallow.ValidationError) as error:
        load_args({"prompt": "a cat", "scheduler": "karras_magic"})
    assert list(error.value.messages) == ["scheduler"]


def test_a_scheduler_the_model_cannot_use_is_refused():
    from diffusers import FlowMatchEulerDiscreteScheduler

    with pytest.raises(sd.SchedulerError, match="ddim .DDIMScheduler. cannot drive this pipeline"):
        sd.make_scheduler(FlowMatchEulerDiscreteScheduler(), "ddim")


def test_predict_batch_draws_concurrent_prompts_in_one_pipeline_call(plugin, monkeypatch):
    requests_ = [
        dict(prompt="a cat", seed=1, num_images=2, accept="application/zip", **SMALL),
        dict(prompt="a blue dog", seed=2, **SMALL),
        dict(prompt="a horse", seed=3, accept="application/json", **SMALL),
    ]
    alone = [plugin.predict(**r) for r in requests_]
    pipe = api._loaded[1]
    calls = []
    call = type(pipe).__call__
    monkeypatch.setattr(type(pipe), "__call__", lambda self, **kw: calls.append(kw["prompt"]) or call(self, **kw))
    together = plugin.predict_batch(requests_)
    assert calls == [["a cat", "a cat", "a blue dog", "a horse"]]
    with zipfile.ZipFile(io.BytesIO(together[0])) as batched, zipfile.ZipFile(io.BytesIO(alone[0])) as single:
        assert batched.read("parameters.json") == single.read("parameters.json")
        for name in ("image_0.png", "image_1.png"):
            assert_same_picture(batched.read(name), single.read(name))
    assert_same_picture(together[1], alone[1])
    assert together[2]["parameters"] == alone[2]["parameters"]
    assert_same_picture(base64.b64decode(together[2]["images"][0]), base64.b64decode(alone[2]["images"][0]))


def test_predict_batch_splits_what_cannot_share_a_call(plugin, monkeypatch):
    plugin.warm()
    pipe = api._loaded[1]
    calls = []
    call = type(pipe).__call__
    monkeypatch.setattr(
        type(pipe), "__call__", lambda self, **kw: calls.append((kw["width"], len(kw["prompt"]))) or call(self, **kw)
    )
    monkeypatch.setenv(sd.MAX_BATCH_IMAGES_ENV, "3")
    answers = plugin.predict_batch(
        [
            dict(prompt="a cat", seed=1, num_images=2, **SMALL),
            dict(prompt="a cat", seed=1, num_images=2, **SMALL),  # 4 images > 3: a second call
            dict(prompt="a cat", seed=1, width=96, height=64, num_inference_steps=2),  # another size
        ]
    )
    assert calls == [(64, 2), (64, 2), (96, 1)]
    assert answers[0] == answers[1]
    assert open_png(answers[2]).size == (96, 64)


def test_attention_slicing_draws_the_same_images(model_dir):
    plain = sd.load_pipeline(model_dir, "cpu", torch.float32, sd.Options())
    sliced = sd.load_pipeline(model_dir, "cpu", torch.float32, sd.Options(attention_slicing=True))
    assert {type(p).__name__ for p in sliced.unet.attn_processors.values()} == {"SlicedAttnProcessor"}
    arguments = dict(prompt="a cat", negative_prompt=None, guidance_scale=7.5, seed=3, num_images=1,
                     width=64, height=64, num_inference_steps=2)  # fmt: skip
    first = sd.png_bytes(sd.generate(plain, **arguments)[0])
    assert_same_picture(sd.png_bytes(sd.generate(sliced, **arguments)[0]), first)


def test_compile_option_compiles_the_unet(model_dir, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: compiled.append(module) or module)
    monkeypatch.setenv(sd.COMPILE_ENV, "1")
    pipe = sd.load_pipeline(model_dir, "cpu", torch.float32)
    assert compiled == [pipe.unet]
    monkeypatch.setenv(sd.COMPILE_ENV, "0")
    sd.load_pipeline(model_dir, "cpu", torch.float32)
    assert len(compiled) == 1


def test_a_pipeline_too_big_for_the_gpu_fails_warm_naming_the_device_and_its_memory(plugin, monkeypatch):
    def out_of_memory(pipe, device):
        assert device == "cuda"
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 50.00 MiB")

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what the server's --gpus gave this worker
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (0.25 * 2**30, 23.6 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA L4")
    monkeypatch.setattr(sd, "_to_device", out_of_memory)
    monkeypatch.setattr(api, "_loaded", None)
    with pytest.raises(sd.ModelDoesNotFitError) as error:
        plugin.warm()
    message = str(error.value)
    assert message.startswith("the StableDiffusionPipeline in ") and "float16 weights" in message
    assert "does not fit on cuda (GPU 1 of this machine), NVIDIA L4, 23.6 GiB total, 0.2 GiB free" in message
    assert message.endswith("CUDA out of memory. Tried to allocate 50.00 MiB")
    assert api._loaded is None


def test_http_unknown_scheduler_is_422(predict_url):
    answer = requests.post(predict_url, files={**SMALL_FORM, **form(scheduler="fastest")}, timeout=120)
    assert answer.status_code == 422
    assert list(answer.json()) == ["scheduler"]
