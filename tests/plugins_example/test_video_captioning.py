"""The video_captioning example plugin (decord + a transformers ViT/GPT-2 captioner),
in-process and over HTTP.

The video is a real H.264 clip written by the ffmpeg binary of ``imageio-ffmpeg``: 2 s at
10 fps, 64x64, a square moving right, red in the first second and green in the second. The
captioner is a ~60k-parameter ViT + GPT-2 built from configs and trained for a few seconds
to say "a red square" / "a green square", written with ``save_pretrained`` and loaded
through the plugin's own ``from_pretrained`` code; so captions must follow the video.
"""

from __future__ import annotations

import io
import json
import pathlib
import zipfile

import marshmallow
import numpy as np
import pytest
import requests
import torch
from deepaas_like_video_captioning import api
from deepaas_like_video_captioning import captioner as cap
from deepaas_like_video_captioning import video as vid
from deepaas_like_video_captioning.testing import (
    CLIP_FPS,
    CLIP_FRAMES,
    CLIP_SIZE,
    build_tiny_captioner,
    clip_caption,
    clip_color,
    clip_square_left,
    video_codec,
    write_clip,
)
from PIL import Image

from deepaas_like.model.args import UploadedFile

ZIP = "application/zip"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Four engineers share 2 cores; with more threads than free cores the tiny model's
    # training takes 40 s instead of 5.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(build_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner")))


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> str:
    return str(write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4"))


@pytest.fixture
def clip(clip_path) -> UploadedFile:
    return UploadedFile("video", clip_path, "video/mp4", "clip.mp4")


@pytest.fixture
def plugin(model_dir, monkeypatch):
    monkeypatch.setenv(cap.MODEL_DIR_ENV, model_dir)
    return api


def load_args(data: dict) -> dict:
    """Validate ``data`` against the plugin's predict arguments, as the server does."""
    return marshmallow.Schema.from_dict(api.get_predict_args())().load(data)


def upload(path, name: str, content_type: str = "application/octet-stream") -> UploadedFile:
    return UploadedFile("video", str(path), content_type, name)


def square_left(frame: np.ndarray) -> int:
    """Column where the bright square starts on the frame's middle row."""
    return int(np.flatnonzero(frame[CLIP_SIZE // 2].max(axis=1) > 130)[0])


def expected_captions(indices: list[int]) -> list[dict]:
    """The answer for these frames of the test clip: frame i shows at i / 10 s."""
    return [{"timestamp": i / CLIP_FPS, "frame_index": i, "caption": clip_caption(i)} for i in indices]


VIDEO_INFO = {"frames": CLIP_FRAMES, "fps": float(CLIP_FPS), "duration": CLIP_FRAMES / CLIP_FPS}


# --- the test clip ----------------------------------------------------------------------


def test_clip_is_h264_and_decord_reads_its_frames_and_times(clip_path):
    assert video_codec(clip_path) == "h264"
    video = vid.Video(clip_path)
    assert video.info == vid.VideoInfo(frames=20, fps=10.0, duration=2.0)
    np.testing.assert_allclose(video.frame_starts, np.arange(20) / 10, atol=1e-6)
    frames = video.read([0, 19])
    assert frames.shape == (2, CLIP_SIZE, CLIP_SIZE, 3) and frames.dtype == np.uint8
    # The square's centre keeps its colour through H.264 (lossy, so only roughly).
    np.testing.assert_allclose(frames[0, 32, 16], clip_color(0), atol=40)
    np.testing.assert_allclose(frames[1, 32, 48], clip_color(19), atol=40)


def test_decord_decodes_exactly_the_frames_asked_for(clip_path):
    # libx264 with B-frames and a keyframe every 5 frames: reading out of order and across
    # keyframes must still give each requested frame (the square moves 1-2 pixels a frame).
    video = vid.Video(clip_path)
    for indices in ([3, 7, 19], [0, 5, 10, 15], [12], list(range(20))):
        frames = video.read(indices)
        assert [square_left(f) for f in frames] == [clip_square_left(i) for i in indices]


# --- choosing frames (pure) -------------------------------------------------------------

STARTS_10FPS = np.arange(20) / 10  # 2 s at 10 fps


@pytest.mark.parametrize(
    ("kwargs", "indices"),
    [
        ({"fps": 2}, [0, 5, 10, 15]),
        ({"fps": 1}, [0, 10]),
        ({"fps": 10, "max_frames": 100}, list(range(20))),
        ({"fps": 10}, [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19]),  # default max_frames=16
        ({"fps": 4}, [0, 2, 5, 7, 10, 12, 15, 17]),  # 0.25 s lands inside frame 2 (0.2-0.3 s)
        ({"fps": 0.3}, [0]),  # one instant before the end
        ({"every_n_frames": 5}, [0, 5, 10, 15]),
        ({"every_n_frames": 7}, [0, 7, 14]),
        ({"every_n_frames": 100}, [0]),
        ({"max_frames": 4}, [0, 6, 13, 19]),  # neither: spread evenly, first and last kept
        ({"max_frames": 1}, [0]),
        ({"max_frames": 50}, list(range(20))),
        ({"every_n_frames": 2, "max_frames": 3}, [0, 8, 18]),  # picked among 0, 2, ..., 18
        ({"fps": 5, "max_frames": 4}, [0, 6, 12, 18]),  # picked among 0, 2, ..., 18
    ],
)
def test_select_frames(kwargs, indices):
    assert vid.select_frames(STARTS_10FPS, 2.0, **kwargs) == indices


def test_select_frames_faster_than_the_video_gives_each_frame_once():
    assert vid.select_frames(STARTS_10FPS, 2.0, fps=60, max_frames=100) == list(range(20))


def test_select_frames_by_fps_follows_real_frame_times():
    # Variable frame rate: a 1 s frame at 0.5 s stays on screen, fps sampling lands on it.
    starts = [0.0, 0.25, 0.5, 1.5, 1.75]
    assert vid.select_frames(starts, 2.0, fps=2, max_frames=16) == [0, 2, 3]
    assert vid.select_frames(starts, 2.0, fps=4, max_frames=16) == [0, 1, 2, 3, 4]


def test_select_frames_tolerates_float32_frame_times():
    # decord reports 0.1 s as 0.10000000149; sampling at 10 fps must still land on frame 1.
    starts = np.arange(20, dtype=np.float32) / np.float32(10)
    assert vid.select_frames(starts, 2.0, fps=10, max_frames=100) == list(range(20))


@pytest.mark.parametrize(
    "kwargs",
    [{"fps": 1, "every_n_frames": 2}, {"fps": 0}, {"fps": -1}, {"every_n_frames": 0}, {"max_frames": 0}],
)
def test_select_frames_rejects_bad_sampling(kwargs):
    with pytest.raises(ValueError):
        vid.select_frames(STARTS_10FPS, 2.0, **kwargs)


# --- device, loading --------------------------------------------------------------------


def test_select_device_uses_cuda_when_a_gpu_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cap.select_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cap.select_device() == "cpu"


def test_select_dtype_is_half_on_cuda_and_float32_on_cpu():
    assert cap.select_dtype("cuda") is torch.float16
    assert cap.select_dtype("cuda:0") is torch.float16
    assert cap.select_dtype("cpu") is torch.float32


def test_warm_loads_in_float16_on_cuda_when_a_gpu_is_visible(plugin, model_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cap, "load_captioner", lambda *args: calls.append(args) or object())
    monkeypatch.setattr(api, "_loaded", None)
    plugin.warm()
    assert calls == [(model_dir, "cuda", torch.float16)]
    assert plugin.get_metadata()["device"] == "cuda"
    assert plugin.get_metadata()["dtype"] == "float16"


def test_metadata_reports_cpu_float32_here(plugin):
    metadata = plugin.get_metadata()
    assert metadata["device"] == "cpu"
    assert metadata["dtype"] == "float32"
    assert metadata["media_types"] == ["application/json", "application/zip"]
    assert metadata["model_dir_env"] == "DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR"


def test_load_captioner_reads_model_processor_and_tokenizer_from_disk(model_dir):
    loaded = cap.load_captioner(model_dir, "cpu", torch.float32)
    assert type(loaded.model).__name__ == "VisionEncoderDecoderModel"
    assert loaded.model.dtype == torch.float32 and not loaded.model.training
    red, green = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    red[16:48, 8:40], green[16:48, 24:56] = clip_color(0), clip_color(19)
    assert loaded.caption([red, green]) == ["a red square", "a green square"]
    assert loaded.caption([]) == []


def test_float16_weights_caption_like_float32(model_dir):
    # The CUDA path loads in float16; the same casts run on the CPU here.
    loaded = cap.load_captioner(model_dir, "cpu", torch.float16)
    assert loaded.model.dtype == torch.float16
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    frame[16:48, 20:52] = clip_color(19)
    assert loaded.caption([frame]) == ["a green square"]


def test_unset_model_dir_is_a_clear_error(clip, monkeypatch):
    monkeypatch.delenv(cap.MODEL_DIR_ENV, raising=False)
    monkeypatch.setattr(api, "_loaded", None)
    with pytest.raises(cap.ModelDirError, match="DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR is not set"):
        api.warm()
    with pytest.raises(cap.ModelDirError, match="is not set"):
        api.predict(video=clip)


def test_missing_model_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(cap.MODEL_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(cap.ModelDirError, match="no such directory"):
        api.warm()


def test_directory_without_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(cap.MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(cap.ModelDirError, match="no config.json"):
        api.warm()


def test_predict_loads_the_model_when_warm_was_not_called(plugin, clip, monkeypatch):
    monkeypatch.setattr(api, "_loaded", None)
    result = plugin.predict(video=clip, fps=1)
    assert result["captions"] == expected_captions([0, 10])
    assert api._loaded is not None


# --- arguments --------------------------------------------------------------------------


def test_predict_args_defaults_and_file_field(clip):
    args = load_args({"video": clip})
    assert args == {
        "video": clip,
        "fps": None,
        "every_n_frames": None,
        "max_frames": 16,
        "batch_size": 8,
        "max_new_tokens": 20,
        "accept": "application/json",
    }
    field = api.get_predict_args()["video"]
    assert field.required and field.metadata["type"] == "file" and field.metadata["location"] == "form"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "video"),
        ({"fps": "0"}, "fps"),
        ({"fps": "fast"}, "fps"),
        ({"every_n_frames": "0"}, "every_n_frames"),
        ({"max_frames": "0"}, "max_frames"),
        ({"max_frames": "100000"}, "max_frames"),
        ({"batch_size": "0"}, "batch_size"),
        ({"max_new_tokens": "0"}, "max_new_tokens"),
        ({"accept": "image/png"}, "accept"),
    ],
)
def test_bad_arguments_name_the_field(clip, data, field):
    data = {"video": clip, **data} if field != "video" else data
    with pytest.raises(marshmallow.ValidationError) as error:
        load_args(data)
    assert list(error.value.normalized_messages()) == [field]


def test_fps_and_every_n_frames_together_is_rejected(plugin, clip):
    with pytest.raises(marshmallow.ValidationError) as error:
        plugin.predict(**load_args({"video": clip, "fps": "2", "every_n_frames": "3"}))
    assert sorted(error.value.normalized_messages()) == ["every_n_frames", "fps"]


# --- predict: JSON ----------------------------------------------------------------------


def test_json_captions_follow_the_video_at_the_requested_fps(plugin, clip):
    result = plugin.predict(**load_args({"video": clip, "fps": "2"}))
    assert result == {"video": VIDEO_INFO, "captions": expected_captions([0, 5, 10, 15])}
    assert api.PredictionSchema().validate(result) == {}
    assert json.loads(json.dumps(result)) == result


def test_json_every_n_frames(plugin, clip):
    result = plugin.predict(**load_args({"video": clip, "every_n_frames": "4"}))
    assert result["captions"] == expected_captions([0, 4, 8, 12, 16])


def test_json_default_spreads_max_frames_over_the_whole_video(plugin, clip):
    result = plugin.predict(**load_args({"video": clip}))
    assert [c["frame_index"] for c in result["captions"]] == vid.select_frames(np.arange(20) / 10, 2.0, max_frames=16)
    assert result["captions"][0]["timestamp"] == 0.0 and result["captions"][-1]["timestamp"] == 1.9
    assert [c["caption"] for c in result["captions"]] == [clip_caption(c["frame_index"]) for c in result["captions"]]
    few = plugin.predict(**load_args({"video": clip, "max_frames": "3"}))
    assert few["captions"] == expected_captions([0, 10, 19])


def test_batch_size_does_not_change_the_answer(plugin, clip):
    one = plugin.predict(**load_args({"video": clip, "every_n_frames": "3", "batch_size": "1"}))
    many = plugin.predict(**load_args({"video": clip, "every_n_frames": "3", "batch_size": "64"}))
    assert one == many
    assert len(one["captions"]) == 7


def test_max_new_tokens_shortens_captions(plugin, clip):
    result = plugin.predict(**load_args({"video": clip, "fps": "1", "max_new_tokens": "1"}))
    assert [c["caption"] for c in result["captions"]] == ["a", "a"]


# --- predict: ZIP -----------------------------------------------------------------------


def test_zip_holds_the_sampled_frames_as_png_and_the_captions(plugin, clip):
    data = plugin.predict(**load_args({"video": clip, "fps": "2", "accept": ZIP}))
    assert isinstance(data, bytes)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == [
        "captions.json",
        "frame_00000.png",
        "frame_00005.png",
        "frame_00010.png",
        "frame_00015.png",
    ]
    assert json.loads(archive.read("captions.json")) == {
        "video": VIDEO_INFO,
        "captions": expected_captions([0, 5, 10, 15]),
    }
    for index in (0, 5, 10, 15):
        image = Image.open(io.BytesIO(archive.read(f"frame_{index:05d}.png")))
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (CLIP_SIZE, CLIP_SIZE)
        left = clip_square_left(index)
        assert square_left(np.asarray(image)) == left  # this very frame, not a neighbour
        np.testing.assert_allclose(image.getpixel((left + 16, 32)), clip_color(index), atol=40)
        np.testing.assert_allclose(image.getpixel((2, 2)), (20, 20, 60), atol=20)  # background


def test_zip_frames_are_the_decoded_pixels(plugin, clip, clip_path):
    data = plugin.predict(video=clip, every_n_frames=19, accept=ZIP)
    archive = zipfile.ZipFile(io.BytesIO(data))
    decoded = vid.Video(clip_path).read([0, 19])
    for index, frame in zip((0, 19), decoded, strict=True):
        png = np.asarray(Image.open(io.BytesIO(archive.read(f"frame_{index:05d}.png"))))
        np.testing.assert_array_equal(png, frame)


# --- predict: bad uploads ---------------------------------------------------------------


def _text(path, clip_path):
    path.write_text("this is not a video\n")


def _empty(path, clip_path):
    path.write_bytes(b"")


def _truncated(path, clip_path):
    data = pathlib.Path(clip_path).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _png(path, clip_path):
    Image.new("RGB", (32, 32), (255, 0, 0)).save(path, format="PNG")


@pytest.mark.parametrize("make", [_text, _empty, _truncated, _png], ids=["text", "empty", "truncated", "png"])
def test_a_file_that_is_not_a_readable_video_is_a_validation_error_on_video(plugin, tmp_path, clip_path, make):
    path = tmp_path / "upload.mp4"
    make(path, clip_path)
    with pytest.raises(marshmallow.ValidationError) as error:
        plugin.predict(video=upload(path, "holiday.mp4"))
    messages = error.value.normalized_messages()
    assert list(messages) == ["video"]
    assert messages["video"][0].startswith("holiday.mp4 is not a readable video")


# --- HTTP end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(module_server, model_dir) -> str:
    return module_server("video_captioning", env={cap.MODEL_DIR_ENV: model_dir})


def test_http_captions_the_video_as_json(server, clip_path):
    url = server + "/v2/models/video_captioning/predict/"
    with open(clip_path, "rb") as video:
        answer = requests.post(url, files={"video": ("clip.mp4", video, "video/mp4")}, data={"fps": "2"}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == {"video": VIDEO_INFO, "captions": expected_captions([0, 5, 10, 15])}
    metadata = requests.get(server + "/v2/models/video_captioning/", timeout=30).json()
    assert metadata["device"] == "cpu" and metadata["id"] == "video_captioning"


def test_http_downloads_the_zip_by_form_argument_and_by_accept_header(server, clip_path):
    url = server + "/v2/models/video_captioning/predict/"
    with open(clip_path, "rb") as video:
        by_form = requests.post(url, files={"video": video}, data={"accept": ZIP, "every_n_frames": "10"}, timeout=120)
    with open(clip_path, "rb") as video:
        by_header = requests.post(
            url, files={"video": video}, data={"every_n_frames": "10"}, headers={"Accept": ZIP}, timeout=120
        )
    for answer in (by_form, by_header):
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == ZIP
        archive = zipfile.ZipFile(io.BytesIO(answer.content))
        assert sorted(archive.namelist()) == ["captions.json", "frame_00000.png", "frame_00010.png"]
        assert json.loads(archive.read("captions.json"))["captions"] == expected_captions([0, 10])


def test_http_non_video_upload_is_422_naming_video(server):
    url = server + "/v2/models/video_captioning/predict/"
    answer = requests.post(url, files={"video": ("notes.txt", b"this is not a video\n", "text/plain")}, timeout=120)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert list(body) == ["video"]
    assert "notes.txt is not a readable video" in body["video"][0]
    both = requests.post(
        url, files={"video": ("notes.txt", b"x")}, data={"fps": "1", "every_n_frames": "2"}, timeout=120
    )
    assert both.status_code == 422 and sorted(both.json()) == ["every_n_frames", "fps"]


# --- beams, prompt, dtype, memory (issue 16) ----------------------------------------------


def test_a_prompt_is_refused_by_a_vision_encoder_decoder_model(plugin, clip):
    with pytest.raises(marshmallow.ValidationError) as error:
        plugin.predict(**load_args({"video": clip, "prompt": "a photo of"}))
    assert list(error.value.normalized_messages()) == ["prompt"]
    assert "takes no prompt" in error.value.normalized_messages()["prompt"][0]
    # An empty form field is no prompt.
    assert plugin.predict(**load_args({"video": clip, "fps": "1", "prompt": ""}))["captions"] == expected_captions(
        [0, 10]
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [({"num_beams": "0"}, "num_beams"), ({"num_beams": "9"}, "num_beams"), ({"prompt": "x" * 501}, "prompt")],
)
def test_bad_beam_and_prompt_arguments_name_the_field(clip, data, field):
    with pytest.raises(marshmallow.ValidationError) as error:
        load_args({"video": clip, **data})
    assert list(error.value.normalized_messages()) == [field]


def test_num_beams_reaches_generate_and_keeps_the_captions(plugin, clip, monkeypatch):
    plugin.warm()
    model = api._loaded[1].model
    seen = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kwargs: seen.append(kwargs.get("num_beams")) or generate(**kwargs))
    result = plugin.predict(**load_args({"video": clip, "fps": "1", "num_beams": "3"}))
    assert result["captions"] == expected_captions([0, 10])
    plugin.predict(**load_args({"video": clip, "fps": "1"}))
    assert seen == [3, None]  # None: the model's own generation config decides


@pytest.mark.parametrize(
    ("setting", "device", "dtype"),
    [
        ("", "cuda", torch.float16),
        ("bfloat16", "cuda", torch.bfloat16),
        ("float32", "cuda", torch.float32),
        ("auto", "cpu", torch.float32),
    ],
)
def test_dtype_setting(setting, device, dtype, monkeypatch):
    monkeypatch.setenv(cap.DTYPE_ENV, setting)
    assert cap.select_dtype(device) is dtype


def test_unknown_dtype_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(cap.DTYPE_ENV, "float8")
    with pytest.raises(ValueError, match="DEEPAAS_LIKE_VIDEO_CAPTIONING_DTYPE=float8: choose auto, float16, bfloat16"):
        cap.select_dtype("cuda")


def test_warm_loads_in_bfloat16_on_cuda_when_asked(plugin, model_dir, monkeypatch):
    calls = []
    monkeypatch.setenv(cap.DTYPE_ENV, "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cap, "load_captioner", lambda *args: calls.append(args) or object())
    monkeypatch.setattr(api, "_loaded", None)
    plugin.warm()
    assert calls == [(model_dir, "cuda", torch.bfloat16)]
    assert plugin.get_metadata()["dtype"] == "bfloat16"


def test_a_model_too_big_for_the_gpu_fails_warm_naming_the_device_and_its_memory(plugin, monkeypatch):
    def out_of_memory(model, device):
        assert device == "cuda"
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.19 GiB total)")

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # what the server's --gpus gave this worker
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (1.5 * 2**30, 79.19 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(cap, "_to_device", out_of_memory)
    monkeypatch.setattr(api, "_loaded", None)
    with pytest.raises(cap.ModelDoesNotFitError) as error:
        plugin.warm()
    message = str(error.value)
    assert "vision-encoder-decoder model in" in message and "float16 weights" in message
    assert (
        "does not fit on cuda (GPU 3 of this machine), NVIDIA H100 80GB HBM3, 79.2 GiB total, 1.5 GiB free" in message
    )
    assert message.endswith("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.19 GiB total)")
    assert api._loaded is None  # the next warm() tries again


# --- predict_batch: frames of several requests through the model together ------------------


def test_predict_batch_answers_each_request_as_predict_would_with_fewer_generate_calls(plugin, clip, monkeypatch):
    requests_ = [
        {"video": clip, "fps": "2"},  # frames 0, 5, 10, 15
        {"video": clip, "every_n_frames": "10", "accept": ZIP},  # frames 0, 10
        {"video": clip, "max_frames": "3", "batch_size": "2"},  # frames 0, 10, 19
    ]
    alone = [plugin.predict(**load_args(r)) for r in requests_]
    plugin.warm()
    captioner = api._loaded[1]
    sizes = []
    caption = captioner.caption
    monkeypatch.setattr(captioner, "caption", lambda frames, **kw: sizes.append(len(frames)) or caption(frames, **kw))
    together = plugin.predict_batch([load_args(r) for r in requests_])
    assert together[0] == alone[0] and together[2] == alone[2]
    assert together[0]["captions"] == expected_captions([0, 5, 10, 15])
    with zipfile.ZipFile(io.BytesIO(together[1])) as archive:
        assert sorted(archive.namelist()) == ["captions.json", "frame_00000.png", "frame_00010.png"]
        assert json.loads(archive.read("captions.json"))["captions"] == expected_captions([0, 10])
    # 9 frames in calls of at most 8 (the largest batch_size asked for), not 1 + 1 + 2 calls.
    assert sizes == [8, 1]


def test_predict_batch_keeps_apart_requests_that_decode_differently(plugin, clip, monkeypatch):
    plugin.warm()
    captioner = api._loaded[1]
    calls = []
    caption = captioner.caption
    monkeypatch.setattr(
        captioner, "caption", lambda frames, **kw: calls.append(kw["max_new_tokens"]) or caption(frames, **kw)
    )
    short, full = plugin.predict_batch(
        [load_args({"video": clip, "fps": "1", "max_new_tokens": "1"}), load_args({"video": clip, "fps": "1"})]
    )
    assert [c["caption"] for c in short["captions"]] == ["a", "a"]
    assert full["captions"] == expected_captions([0, 10])
    assert sorted(calls) == [1, 20]


def test_predict_batch_with_an_unreadable_video_is_a_validation_error_on_video(plugin, clip, tmp_path):
    # The server then answers the requests one by one, so only this one gets the 422.
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(marshmallow.ValidationError) as error:
        plugin.predict_batch([load_args({"video": clip}), load_args({"video": upload(bad, "notes.mp4")})])
    assert list(error.value.normalized_messages()) == ["video"]
    assert error.value.normalized_messages()["video"][0].startswith("notes.mp4 is not a readable video")


def test_http_prompt_to_a_vision_encoder_decoder_model_is_422_naming_prompt(server, clip_path):
    url = server + "/v2/models/video_captioning/predict/"
    with open(clip_path, "rb") as video:
        answer = requests.post(url, files={"video": video}, data={"prompt": "a photo of"}, timeout=120)
    assert answer.status_code == 422, answer.text
    assert list(answer.json()) == ["prompt"]
