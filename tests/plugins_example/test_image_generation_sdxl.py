"""The image_generation plugin serving an SDXL pipeline (issue 16), in-process and over HTTP.

A tiny random ``StableDiffusionXLPipeline`` (two CLIP text encoders, SDXL's ``text_time``
conditioning, about 2 M parameters) is built from configs, written with ``save_pretrained`` and
loaded through the plugin's own ``AutoPipelineForText2Image`` code; images are 64x64 with 2
steps. The Stable Diffusion 1.x/2.x path is in ``test_image_generation.py``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import re
import zipfile

import numpy as np
import pytest
import requests
import torch
from deepaas_like_image_generation import api
from deepaas_like_image_generation import pipeline as sd
from deepaas_like_image_generation.testing import save_tiny_sdxl_pipeline
from PIL import Image

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
    return str(save_tiny_sdxl_pipeline(tmp_path_factory.mktemp("tiny-sdxl")))


@pytest.fixture
def plugin(model_dir, monkeypatch):
    monkeypatch.setenv(sd.MODEL_DIR_ENV, model_dir)
    monkeypatch.setattr(api, "_loaded", None)
    return api


def pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image, dtype=np.int16)


def assert_same_picture(first: bytes, second: bytes) -> None:
    # Batched kernels may round a float differently: at most 2 levels of 255 apart.
    difference = np.abs(pixels(first) - pixels(second))
    assert difference.max() <= 2, f"pixels differ by up to {difference.max()}"


def test_auto_pipeline_loads_sdxl_with_both_text_encoders(model_dir):
    pipe = sd.load_pipeline(model_dir, "cpu", torch.float32, sd.Options())
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"


def test_sdxl_draws_at_the_requested_size_and_seeds_reproduce(plugin):
    first = plugin.predict(prompt="a red cat", seed=5, width=96, height=64, num_inference_steps=2)
    assert Image.open(io.BytesIO(first)).size == (96, 64)
    assert plugin.predict(prompt="a red cat", seed=5, width=96, height=64, num_inference_steps=2) == first
    assert plugin.predict(prompt="a red cat", seed=6, width=96, height=64, num_inference_steps=2) != first
    assert plugin.get_metadata()["pipeline"] == "StableDiffusionXLPipeline"


def test_sdxl_negative_prompt_and_scheduler_change_the_image(plugin):
    plain = plugin.predict(prompt="a horse", seed=2, **SMALL)
    assert plugin.predict(prompt="a horse", seed=2, negative_prompt="a red cat", **SMALL) != plain
    # An empty negative prompt is encoded; none at all gives SDXL's zero embeddings.
    assert plugin.predict(prompt="a horse", seed=2, negative_prompt="", **SMALL) != plain
    assert plugin.predict(prompt="a horse", seed=2, scheduler="dpm_solver_multistep_karras", **SMALL) != plain


def test_sdxl_several_images_per_prompt_in_the_zip(plugin):
    data = plugin.predict(prompt="a cat", seed=7, num_images=3, accept="application/zip", **SMALL)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["image_0.png", "image_1.png", "image_2.png", "parameters.json"]
        images = [archive.read(f"image_{i}.png") for i in range(3)]
    assert len({png for png in images}) == 3
    assert plugin.predict(prompt="a cat", seed=7, num_images=3, **SMALL) == images[0]


def test_sdxl_predict_batch_keeps_missing_and_empty_negative_prompts_apart(plugin, monkeypatch):
    requests_ = [
        dict(prompt="a dog", seed=1, **SMALL),
        dict(prompt="a dog", seed=1, negative_prompt="", **SMALL),
        dict(prompt="a cat", seed=2, **SMALL),
    ]
    alone = [plugin.predict(**r) for r in requests_]
    pipe = api._loaded[1]
    calls = []
    call = type(pipe).__call__
    monkeypatch.setattr(
        type(pipe),
        "__call__",
        lambda self, **kw: calls.append((kw["prompt"], kw["negative_prompt"])) or call(self, **kw),
    )
    together = plugin.predict_batch(requests_)
    assert sorted(calls, key=str) == sorted([(["a dog", "a cat"], None), (["a dog"], [""])], key=str)
    for batched, single in zip(together, alone, strict=True):
        assert_same_picture(batched, single)


# --- HTTP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(module_server, model_dir) -> str:
    # Batches close when 3 requests are in: the test below sends exactly 3 at once.
    return module_server(
        "image_generation",
        env={sd.MODEL_DIR_ENV: model_dir},
        args=["--max-batch-size", "3", "--batch-wait-ms", "20000"],
    )


def test_http_sdxl_draws_concurrent_prompts_in_one_batch(server, model_dir, monkeypatch):
    url = f"{server}/v2/models/image_generation/predict/"
    forms = [
        {"prompt": "a cat", "seed": 1, "num_images": 2, "accept": "application/zip", **SMALL},
        {"prompt": "a blue dog", "seed": 2, **SMALL},
        {"prompt": "a horse", "seed": 3, "scheduler": "euler_ancestral", "accept": "application/json", **SMALL},
    ]

    def post(fields: dict) -> requests.Response:
        return requests.post(url, files={k: (None, str(v)) for k, v in fields.items()}, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(len(forms)) as pool:
        answers = list(pool.map(post, forms))
    for answer in answers:
        assert answer.status_code == 200, answer.text
    assert [a.headers["Content-Type"].split(";")[0] for a in answers] == [
        "application/zip",
        "image/png",
        "application/json",
    ]
    metrics = requests.get(server + "/metrics", timeout=30).text
    batches = re.search(r'deepaas_like_batch_size_count\{model="image_generation"\} (\S+)', metrics)
    assert batches is not None and float(batches.group(1)) == 1.0  # the three in one predict_batch call
    # The same images as the plugin draws for each request alone, in this process.
    monkeypatch.setenv(sd.MODEL_DIR_ENV, model_dir)
    monkeypatch.setattr(api, "_loaded", None)
    with zipfile.ZipFile(io.BytesIO(answers[0].content)) as archive:
        local = api.predict(**{**forms[0], "accept": "application/zip"})
        with zipfile.ZipFile(io.BytesIO(local)) as expected:
            for name in ("image_0.png", "image_1.png"):
                assert_same_picture(archive.read(name), expected.read(name))
    assert_same_picture(answers[1].content, api.predict(**forms[1]))
    body = answers[2].json()
    assert body["parameters"]["scheduler"] == "euler_ancestral"
    expected = api.predict(**forms[2])
    assert_same_picture(base64.b64decode(body["images"][0]), base64.b64decode(expected["images"][0]))
