"""The video_captioning plugin with BLIP, BLIP-2 and GIT models (issue 16), in-process and over HTTP.

Each family is built from configs at a tiny size (vision tower 32 x 32 images, 8 x 8 patches,
hidden 32, 2 layers; ten-word tokenizers made in memory), trained for about a second to caption
the test clip "a red square" / "a green square", saved with its processor by
``save_pretrained`` and loaded through the plugin's own ``AutoModelForImageTextToText`` +
``AutoProcessor`` code, as a published checkpoint would be. The clip and the ViT + GPT-2 family
are in ``test_video_captioning.py``.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
import zipfile

import marshmallow
import pytest
import requests
import torch
from deepaas_like_video_captioning import api
from deepaas_like_video_captioning import captioner as cap
from deepaas_like_video_captioning.testing import (
    CLIP_FPS,
    CLIP_FRAMES,
    build_tiny,
    clip_caption,
    clip_frame,
    write_clip,
)

from deepaas_like.model.args import UploadedFile

ZIP = "application/zip"
MODEL_CLASSES = {
    "blip": ("BlipForConditionalGeneration", "BlipProcessor"),
    "blip-2": ("Blip2ForConditionalGeneration", "Blip2Processor"),
    "git": ("GitForCausalLM", "GitProcessor"),
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The machine's 2 cores are shared; these models are far too small to gain from a second thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, str]:
    """Each family's saved directory (about a second each to build and train)."""
    return {family: str(build_tiny(family, tmp_path_factory.mktemp(f"tiny-{family}"))) for family in MODEL_CLASSES}


@pytest.fixture(params=list(MODEL_CLASSES))
def family(request) -> str:
    return request.param


@pytest.fixture
def plugin(family, model_dirs, monkeypatch):
    monkeypatch.setenv(cap.MODEL_DIR_ENV, model_dirs[family])
    return api


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> str:
    return str(write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4"))


@pytest.fixture
def clip(clip_path) -> UploadedFile:
    return UploadedFile("video", clip_path, "video/mp4", "clip.mp4")


def load_args(data: dict) -> dict:
    """Validate ``data`` against the plugin's predict arguments, as the server does."""
    return marshmallow.Schema.from_dict(api.get_predict_args())().load(data)


def expected_captions(indices: list[int], prompt: str | None = None) -> list[dict]:
    """The answer for these frames of the test clip; after the prompt "a" the model says the rest."""

    def text(i: int) -> str:
        return clip_caption(i).removeprefix("a ") if prompt == "a" else clip_caption(i)

    return [{"timestamp": i / CLIP_FPS, "frame_index": i, "caption": text(i)} for i in indices]


# --- loading ------------------------------------------------------------------------------


def test_each_family_loads_through_the_auto_classes(family, model_dirs):
    loaded = cap.load_captioner(model_dirs[family], "cpu", torch.float32)
    model_class, processor_class = MODEL_CLASSES[family]
    assert type(loaded.model).__name__ == model_class
    assert type(loaded.processor).__name__ == processor_class
    assert loaded.family == family and loaded.takes_prompt
    assert loaded.model.dtype == torch.float32 and not loaded.model.training
    assert loaded.caption([clip_frame(0), clip_frame(CLIP_FRAMES - 1)]) == ["a red square", "a green square"]


def test_blip2_in_float16_keeps_its_q_former_in_float32_and_captions_alike(model_dirs):
    # The CUDA path loads in float16; transformers keeps BLIP-2's Q-Former in float32 there.
    loaded = cap.load_captioner(model_dirs["blip-2"], "cpu", torch.float16)
    assert loaded.model.language_model.dtype == torch.float16
    assert {p.dtype for p in loaded.model.qformer.parameters()} == {torch.float32}
    assert loaded.caption([clip_frame(3), clip_frame(14)]) == ["a red square", "a green square"]


def test_bfloat16_weights_caption_alike(model_dirs):
    loaded = cap.load_captioner(model_dirs["git"], "cpu", torch.bfloat16)
    assert loaded.model.dtype == torch.bfloat16
    assert loaded.caption([clip_frame(3), clip_frame(14)], prompt="a") == ["red square", "green square"]


def test_metadata_names_the_loaded_family(plugin, family, monkeypatch):
    monkeypatch.setattr(api, "_loaded", None)
    assert plugin.get_metadata()["model_type"] is None
    plugin.warm()
    assert plugin.get_metadata()["model_type"] == family


# --- predict ------------------------------------------------------------------------------


def test_captions_follow_the_video(plugin, clip):
    result = plugin.predict(**load_args({"video": clip, "fps": "2"}))
    assert result == {
        "video": {"frames": CLIP_FRAMES, "fps": float(CLIP_FPS), "duration": CLIP_FRAMES / CLIP_FPS},
        "captions": expected_captions([0, 5, 10, 15]),
    }
    assert api.PredictionSchema().validate(result) == {}


def test_a_prompt_is_continued_and_left_out_of_the_captions(plugin, clip):
    result = plugin.predict(**load_args({"video": clip, "fps": "1", "prompt": "a"}))
    assert result["captions"] == expected_captions([0, 10], prompt="a")
    assert result["prompt"] == "a"
    assert api.PredictionSchema().validate(result) == {}


def test_beam_search_gives_the_learnt_captions(plugin, clip):
    result = plugin.predict(**load_args({"video": clip, "every_n_frames": "6", "num_beams": "4"}))
    assert result["captions"] == expected_captions([0, 6, 12, 18])


def test_predict_batch_mixes_prompts_and_answers_each_as_alone(plugin, clip, monkeypatch):
    requests_ = [
        {"video": clip, "fps": "1"},
        {"video": clip, "fps": "1", "prompt": "a", "accept": ZIP},
        {"video": clip, "every_n_frames": "5"},
        {"video": clip, "every_n_frames": "5", "prompt": "a"},
    ]
    alone = [plugin.predict(**load_args(r)) for r in (requests_[0], requests_[3])]
    captioner = api._loaded[1]
    prompts = []
    caption = captioner.caption
    monkeypatch.setattr(
        captioner, "caption", lambda frames, **kw: prompts.append((kw["prompt"], len(frames))) or caption(frames, **kw)
    )
    answers = plugin.predict_batch([load_args(r) for r in requests_])
    # One generate call per prompt, each holding the frames of both requests that share it.
    assert sorted(prompts, key=str) == [("a", 6), (None, 6)]
    assert answers[0]["captions"] == expected_captions([0, 10])
    with zipfile.ZipFile(io.BytesIO(answers[1])) as archive:
        assert json.loads(archive.read("captions.json"))["captions"] == expected_captions([0, 10], prompt="a")
    assert answers[2]["captions"] == expected_captions([0, 5, 10, 15])
    assert answers[3]["captions"] == expected_captions([0, 5, 10, 15], prompt="a")
    assert [answers[0], answers[3]] == alone


# --- HTTP: BLIP-2 (the model the Aana video pipeline captions with) ----------------------------


@pytest.fixture(scope="module")
def blip2_server(module_server, model_dirs) -> str:
    # Batches close when 4 requests are in: the test below sends exactly 4 at once.
    return module_server(
        "video_captioning",
        env={cap.MODEL_DIR_ENV: model_dirs["blip-2"]},
        args=["--max-batch-size", "4", "--batch-wait-ms", "20000"],
    )


def test_http_blip2_answers_concurrent_requests_in_one_batch(blip2_server, clip_path):
    url = blip2_server + "/v2/models/video_captioning/predict/"
    forms = [{"fps": "2"}, {"fps": "2", "prompt": "a"}, {"every_n_frames": "10", "accept": ZIP}, {"max_frames": "2"}]

    def post(form: dict) -> requests.Response:
        with open(clip_path, "rb") as video:
            return requests.post(url, files={"video": ("clip.mp4", video, "video/mp4")}, data=form, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(len(forms)) as pool:
        answers = list(pool.map(post, forms))
    for answer in answers:
        assert answer.status_code == 200, answer.text
    assert answers[0].json()["captions"] == expected_captions([0, 5, 10, 15])
    assert answers[1].json()["captions"] == expected_captions([0, 5, 10, 15], prompt="a")
    assert answers[1].json()["prompt"] == "a"
    with zipfile.ZipFile(io.BytesIO(answers[2].content)) as archive:
        assert sorted(archive.namelist()) == ["captions.json", "frame_00000.png", "frame_00010.png"]
    assert answers[3].json()["captions"] == expected_captions([0, 19])
    metrics = requests.get(blip2_server + "/metrics", timeout=30).text
    batches = re.search(r'deepaas_like_batch_size_count\{model="video_captioning"\} (\S+)', metrics)
    assert batches is not None and float(batches.group(1)) == 1.0  # all four in one predict_batch call
    metadata = requests.get(blip2_server + "/v2/models/video_captioning/", timeout=30).json()
    assert metadata["model_type"] == "blip-2"
