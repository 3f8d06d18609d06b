"""Model throughput through deepaas_like against the same pipeline alone in one process (issue 16).

One command, on 127.0.0.1 only::

    python benchmarks/models.py            # CPU, tiny models: about 6 minutes on 2 cores
    python benchmarks/models.py --quick    # CPU: fewer batch sizes, about 3 minutes
    python benchmarks/models.py --gpu      # CUDA: full-size architectures, random weights

It measures, at several batch sizes:

1. frames captioned per second by the ``video_captioning`` plugin (BLIP-2): decord decodes the
   frames of an H.264 clip, the model captions them ``batch_size`` at a time;
2. images generated per second by the ``image_generation`` plugin (Stable Diffusion 1.x and
   SDXL), 512x512 and 20 steps unless ``--size``/``--steps`` say otherwise.

"Through the server": a real ``deepaas-like-run`` (one worker) answering HTTP predict requests
from concurrent clients, so that the next batch is queued while one is computed; "alone": the
plugin's model code (``captioner``/``pipeline`` modules) called in this process, no server.

On CPU (the default) the models are tiny, built from configs with random weights (BLIP-2 is
the plugin's trained tiny one; the diffusion pipelines have SD's 8x VAE so that 512x512 images
make SD's 64x64 latents): the figures show the serving overhead against small models, not
what a real model does. ``--gpu`` builds the published full-size architectures with random
weights (speed does not depend on weight values; nothing is downloaded): Stable Diffusion 1.5
(UNet 860M), SDXL base 1.0 (UNet 2.6B, two text encoders) and BLIP-2 OPT-2.7b (3.8B), in
float16, and serves them with ``--gpus 0``.

It prints Markdown and writes it to ``benchmarks/results/models-<date>-<nproc>cores[-quick|-gpu].md``.
Every server it starts is stopped by PID when it ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import contextlib
import gc
import http.client
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import BenchmarkError
from serving import console_script, cpu_model, load_average, nproc, package_version, say, source_revision

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CAPTION_MODEL = "video_captioning"
IMAGE_MODEL = "image_generation"
PROMPT = "a photo of an astronaut riding a horse"
#: Goal of issue 16: through the server, at least this fraction of the pipeline alone's throughput.
GOAL = 0.9


@dataclass(frozen=True)
class Settings:
    """What to run: device, sizes, batch sizes, and how many requests each cell measures."""

    gpu: bool
    quick: bool
    threads: int  # torch threads, alone and in the server's worker (--worker-threads)
    size: int  # image width and height, pixels
    steps: int
    caption_batches: tuple[int, ...]  # frames per generate call
    image_batches: dict[str, tuple[int, ...]]  # pipeline -> images per pipeline call
    frames_per_request: int = 32
    caption_requests: int = 12  # measured requests per captioning round
    images_per_cell: int = 4  # at least this many measured images per generation round
    rounds: int = 3  # captioning: alone and through the server take turns, median shown
    image_rounds: int = 1

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    @property
    def suffix(self) -> str:
        return "-gpu" if self.gpu else ("-quick" if self.quick else "")


# --------------------------------------------------------------------------------- the models


@dataclass
class Models:
    """Directories written by ``save_pretrained``, the test clip, and what they are."""

    captioner: Path
    clip: Path
    pipelines: dict[str, Path]  # label -> directory
    described: list[str] = field(default_factory=list)


def build_cpu_models(workdir: Path, settings: Settings) -> Models:
    """Tiny models: the plugin's trained tiny BLIP-2, tiny SD and SDXL with SD's 8x VAE."""
    from deepaas_like_video_captioning.testing import build_tiny, write_clip

    say("building the tiny BLIP-2 captioner and the clip")
    captioner = build_tiny("blip-2", workdir / "blip2")
    clip = write_clip(workdir / "clip.mp4", frames=48, fps=24, size=128)
    pipelines = {}
    for label, build in (("Stable Diffusion 1.x", tiny_sd), ("SDXL", tiny_sdxl)):
        if label in settings.image_batches:
            say(f"building the tiny {label} pipeline")
            pipelines[label] = workdir / label.split()[0].lower()
            build().save_pretrained(pipelines[label])
    described = [
        "BLIP-2 (`Blip2ForConditionalGeneration`): the plugin's tiny model (`testing.build_tiny('blip-2')`: "
        "ViT 32x32 images, Q-Former and OPT of hidden size 32, 2 layers each), trained to caption the clip; "
        "captions of 4 tokens",
        "clip: 48 frames, 24 fps, 128x128 H.264 (`testing.write_clip`); each request captions "
        f"{settings.frames_per_request} frames spread over it (`max_frames`)",
    ]
    if "Stable Diffusion 1.x" in pipelines:
        described.append("Stable Diffusion 1.x: tiny random UNet (channels 32/64, one cross-attention block at "
                         "32x32 for 64x64 latents), CLIP text encoder of width 32, VAE with SD's 4 blocks (8x: 512x512 "
                         "images are 64x64 latents) of 16-32 channels, DDIM")  # fmt: skip
    if "SDXL" in pipelines:
        described.append("SDXL: the same UNet sizes with SDXL's two text encoders and `text_time` conditioning, "
                         "the same VAE, Euler")  # fmt: skip
    return Models(captioner, clip, pipelines, described)


def build_gpu_models(workdir: Path, settings: Settings) -> Models:
    """Full-size architectures from the published configs, random float16 weights, built on the GPU."""
    import torch
    from deepaas_like_video_captioning.testing import write_clip

    pipelines = {}
    if "Stable Diffusion 1.5" in settings.image_batches:
        say("building Stable Diffusion 1.5 (random weights) on the GPU")
        pipelines["Stable Diffusion 1.5"] = _save_on_gpu(full_sd15, workdir / "sd15")
    if "SDXL base 1.0" in settings.image_batches:
        say("building SDXL base 1.0 (random weights) on the GPU")
        pipelines["SDXL base 1.0"] = _save_on_gpu(full_sdxl, workdir / "sdxl")
    say("building BLIP-2 OPT-2.7b (random weights) on the GPU")
    captioner = _save_on_gpu(full_blip2_opt27b, workdir / "blip2")
    clip = write_clip(workdir / "clip.mp4", frames=48, fps=24, size=224)
    described = [
        f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB; "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}; float16",
        "BLIP-2 OPT-2.7b architecture (`Salesforce/blip2-opt-2.7b` config: EVA ViT-g 1408 x 39 layers at 224 px, "
        "Q-Former 768 x 12 with 32 queries, OPT 2560 x 32 layers), random weights: each caption is "
        "`max_new_tokens` = 20 tokens",
        f"clip: 48 frames, 24 fps, 224x224 H.264; each request captions {settings.frames_per_request} frames",
        "Stable Diffusion 1.5 architecture (UNet 320/640/1280/1280, CLIP ViT-L/14 text encoder, VAE 128-512), "
        "random weights, PNDM",
        "SDXL base 1.0 architecture (UNet 320/640/1280 with 1/2/10 transformer layers, CLIP ViT-L + OpenCLIP "
        "bigG text encoders, VAE 128-512 upcast to float32 for decoding), random weights, Euler",
        "tokenizers: the plugins' tiny in-memory ones (prompts are padded to CLIP's 77 tokens as usual)",
    ]
    return Models(captioner, clip, pipelines, described)


def tiny_sd():  # -> diffusers.StableDiffusionPipeline
    """A tiny random SD pipeline with SD's 8x VAE (4 blocks), so that 512 px images make 64x64 latents."""
    from deepaas_like_image_generation.testing import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=0)
    pipe.register_modules(vae=_tiny_vae8())
    return _refresh_scale_factor(pipe)


def tiny_sdxl():  # -> diffusers.StableDiffusionXLPipeline
    """A tiny random SDXL pipeline (``testing.build_tiny_sdxl_pipeline``) with an 8x VAE."""
    from deepaas_like_image_generation.testing import build_tiny_sdxl_pipeline

    pipe = build_tiny_sdxl_pipeline(seed=0)
    pipe.register_modules(vae=_tiny_vae8())
    return _refresh_scale_factor(pipe)


def _tiny_vae8():
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(16, 16, 32, 32), layers_per_block=1, in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, sample_size=512, norm_num_groups=8,
    )  # fmt: skip


def _refresh_scale_factor(pipe):
    # The pipeline computed its VAE scale factor from the VAE it was built with.
    from diffusers.image_processor import VaeImageProcessor

    pipe.vae_scale_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    pipe.image_processor = VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor)
    return pipe


# Published configurations (config.json files of the Hub repositories named), as dicts.
SD15_UNET = {  # runwayml/stable-diffusion-v1-5, unet/config.json
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "attention_head_dim": 8, "cross_attention_dim": 768,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "norm_num_groups": 32, "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1,
}  # fmt: skip
SD_VAE = {  # runwayml/stable-diffusion-v1-5, vae/config.json (SDXL's differs in scaling and upcast)
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "sample_size": 512,
}  # fmt: skip
CLIP_L_TEXT = {  # openai/clip-vit-large-patch14 text model (SD 1.5 text_encoder, SDXL text_encoder)
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
}  # fmt: skip
SDXL_UNET = {  # stabilityai/stable-diffusion-xl-base-1.0, unet/config.json
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32,
}  # fmt: skip
OPENCLIP_BIGG_TEXT = {  # stabilityai/stable-diffusion-xl-base-1.0, text_encoder_2/config.json
    "vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_attention_heads": 20, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 1280,
}  # fmt: skip
BLIP2_OPT27B = {  # Salesforce/blip2-opt-2.7b, config.json
    "vision_config": {"hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39,
                      "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "qkv_bias": True},
    "qformer_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "cross_attention_frequency": 2, "encoder_hidden_size": 1408,
                       "vocab_size": 30522},
    "text_config": {"model_type": "opt", "hidden_size": 2560, "ffn_dim": 10240, "num_hidden_layers": 32,
                    "num_attention_heads": 32, "vocab_size": 50272, "max_position_embeddings": 2048,
                    "word_embed_proj_dim": 2560, "do_layer_norm_before": True},
    "num_query_tokens": 32,
}  # fmt: skip


def full_sd15():  # -> diffusers.StableDiffusionPipeline
    """Stable Diffusion 1.5's architecture with random weights (UNet 860M, CLIP-L text, SD VAE)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _clip_tokenizer()
    with torch.device("cpu"):  # a scheduler's tables stay on the CPU whatever device builds the models
        scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)  # fmt: skip
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**SD_VAE, scaling_factor=0.18215),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT, **_special_ids(tokenizer))),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**SD15_UNET),
        scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def full_sdxl():  # -> diffusers.StableDiffusionXLPipeline
    """SDXL base 1.0's architecture with random weights (UNet 2.6B, CLIP-L + OpenCLIP bigG, SDXL VAE)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = _clip_tokenizer()
    with torch.device("cpu"):  # a scheduler's tables stay on the CPU whatever device builds the models
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           steps_offset=1, timestep_spacing="leading")  # fmt: skip
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**{**SD_VAE, "sample_size": 1024}, scaling_factor=0.13025, force_upcast=True),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT, **_special_ids(tokenizer))),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**OPENCLIP_BIGG_TEXT, **_special_ids(tokenizer))),
        tokenizer=tokenizer,
        tokenizer_2=_clip_tokenizer(),
        unet=UNet2DConditionModel(**SDXL_UNET),
        scheduler=scheduler,
    )  # fmt: skip


class _Blip2Saver:
    """BLIP-2 OPT-2.7b with random weights and the plugin's tiny processor (224 px, 32 queries)."""

    def __init__(self) -> None:
        from deepaas_like_video_captioning.testing import blip2_processor
        from transformers import Blip2Config, Blip2ForConditionalGeneration

        self.processor = blip2_processor(num_query_tokens=BLIP2_OPT27B["num_query_tokens"], image_size=224)
        tokenizer = self.processor.tokenizer
        text = {**BLIP2_OPT27B["text_config"], "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
        config = Blip2Config(**{**BLIP2_OPT27B, "text_config": text},
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"))  # fmt: skip
        self.model = Blip2ForConditionalGeneration(config)

    def save_pretrained(self, directory: Path) -> None:
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)

    def to(self, *args, **kwargs) -> _Blip2Saver:
        self.model = self.model.to(*args, **kwargs)
        return self


def full_blip2_opt27b() -> _Blip2Saver:
    """BLIP-2 OPT-2.7b's architecture (3.8B parameters) with random weights, and a processor."""
    return _Blip2Saver()


def _clip_tokenizer():
    from deepaas_like_image_generation.testing import write_tiny_clip_tokenizer_files
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as directory:
        write_tiny_clip_tokenizer_files(directory)
        return CLIPTokenizer.from_pretrained(directory, model_max_length=77)


def _special_ids(tokenizer) -> dict[str, int]:
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}  # fmt: skip


def _save_on_gpu(build: Callable[[], object], directory: Path) -> Path:
    """Build on the GPU (random initialisation there is fast), cast to float16, save, free."""
    import torch

    with torch.device("cuda"):
        built = build()
    built.to(torch.float16).save_pretrained(directory)
    del built
    gc.collect()
    torch.cuda.empty_cache()
    return directory


# ------------------------------------------------------------------------------ measurements


@dataclass
class Cell:
    """One batch size of one model: throughput alone and through the server (items/s, medians of rounds)."""

    model: str
    unit: str  # "frames/s" or "images/s"
    batch: int
    alone: list[float] = field(default_factory=list)
    served: list[float] = field(default_factory=list)
    server_cpu_ms: float | None = None  # the server process (not its worker), per request

    @property
    def alone_median(self) -> float | None:
        return statistics.median(self.alone) if self.alone else None

    @property
    def served_median(self) -> float | None:
        return statistics.median(self.served) if self.served else None

    @property
    def ratio(self) -> float | None:
        alone, served_ = self.alone_median, self.served_median
        return served_ / alone if alone and served_ is not None else None


class CaptionAlone:
    """The captioner module alone in this process: decord decode + processor + ``generate``,
    ``batch`` frames a call, the frames of one request at a time. Loaded and warmed on creation."""

    def __init__(self, models: Models, settings: Settings, batch: int) -> None:
        from deepaas_like_video_captioning import captioner as cap

        self.models, self.settings, self.batch = models, settings, batch
        self.model = cap.load_captioner(models.captioner, settings.device, cap.select_dtype(settings.device))
        self.request()  # warm-up: first-call allocations and kernel choices

    def request(self) -> int:
        """Caption the frames one request asks for; how many."""
        from deepaas_like_video_captioning import video as vid

        clip = vid.Video(self.models.clip)
        indices = vid.select_frames(clip.frame_starts, clip.info.duration, max_frames=self.settings.frames_per_request)
        for first in range(0, len(indices), self.batch):
            self.model.caption(clip.read(indices[first : first + self.batch]), max_new_tokens=20)
        return len(indices)

    def measure(self, requests: int) -> float:
        """Frames/s over ``requests`` requests."""
        _sync(self.settings)
        began = time.perf_counter()
        frames = sum(self.request() for _ in range(requests))
        _sync(self.settings)
        return frames / (time.perf_counter() - began)


class GenerateAlone:
    """The diffusers pipeline alone in this process: one call draws ``batch`` images for
    ``batch`` prompts. Loaded (by the plugin's loading code) and warmed on creation."""

    def __init__(self, directory: Path, settings: Settings, batch: int) -> None:
        from deepaas_like_image_generation import pipeline as sd

        self.settings, self.batch = settings, batch
        self.pipe = sd.load_pipeline(directory, settings.device, sd.select_dtype(settings.device), sd.Options())
        self.call()  # warm-up

    def call(self) -> None:
        import torch

        generators = [torch.Generator(self.settings.device).manual_seed(i) for i in range(self.batch)]
        with torch.inference_mode():
            self.pipe(prompt=[PROMPT] * self.batch, num_inference_steps=self.settings.steps, guidance_scale=7.5,
                      width=self.settings.size, height=self.settings.size, generator=generators,
                      output_type="pil")  # fmt: skip

    def measure(self, images: int) -> float:
        """Images/s over ``images`` images (whole calls)."""
        calls = max(1, -(-images // self.batch))
        _sync(self.settings)
        began = time.perf_counter()
        for _ in range(calls):
            self.call()
        _sync(self.settings)
        return calls * self.batch / (time.perf_counter() - began)


def _sync(settings: Settings) -> None:
    if settings.gpu:
        import torch

        torch.cuda.synchronize()


def _free(settings: Settings) -> None:
    """Give back the memory of a model measured alone."""
    gc.collect()
    if settings.gpu:
        import torch

        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Body:
    """One POST body with its Content-Type."""

    data: bytes
    content_type: str


def multipart(fields: dict[str, str], file_field: str, filename: str, content: bytes, content_type: str) -> Body:
    """A ``multipart/form-data`` body: ``fields`` then one file part (held in memory)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]  # fmt: skip
    parts.append(
        (f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
         f"Content-Type: {content_type}\r\n\r\n").encode() + content + b"\r\n"
    )  # fmt: skip
    return Body(b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}")


def form(fields: dict[str, str]) -> Body:
    return Body(urlencode(fields).encode(), "application/x-www-form-urlencoded")


def post(port: int, path: str, body: Body, timeout: float) -> bytes:
    """POST ``body``; the answer's bytes. Raises BenchmarkError for any status but 200."""
    connection = http.client.HTTPConnection(harness.HOST, port, timeout=timeout)
    try:
        connection.request("POST", path, body.data, {"Content-Type": body.content_type})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise BenchmarkError(f"POST {path} answered {response.status}: {data[:300]!r}")
    return data


def closed_loop(port: int, path: str, body: Body, clients: int, requests: int, timeout: float) -> float:
    """``clients`` threads send ``requests`` requests in all, each waiting for its answer
    before sending the next; seconds from the first send to the last answer."""
    left = [requests]
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            post(port, path, body, timeout)

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return time.perf_counter() - began


@contextlib.contextmanager
def served(model: str, env: dict[str, str], options: Sequence[str], workdir: Path, settings: Settings,
           ready: tuple[str, Body]):  # fmt: skip
    """A ``deepaas-like-run`` serving ``model`` (1 worker) until the block ends; yields its
    :class:`harness.Server` once a first predict answered 200 (the model is loaded and warm)."""
    port = harness.free_port()
    home = Path(tempfile.mkdtemp(dir=workdir, prefix="server-"))
    (home / "uploads").mkdir()
    argv = [console_script("deepaas-like-run"), "--listen-ip", harness.HOST, "--listen-port", str(port),
            "--model-name", model, "--workers", "1", "--worker-threads", str(settings.threads),
            "--database-url", f"sqlite+aiosqlite:///{home / 'jobs.db'}", "--upload-dir", str(home / "uploads"),
            *(["--gpus", "0"] if settings.gpu else []), *options]  # fmt: skip
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    with harness.running(model, argv, port, home / "server.log", env=env) as server:
        deadline = time.monotonic() + 900
        while True:
            if server.process.poll() is not None:
                raise BenchmarkError(f"{model} server exited:\n{server.tail()}")
            try:
                post(port, ready[0], ready[1], timeout=900)
                break
            except (OSError, BenchmarkError) as error:
                if time.monotonic() > deadline:
                    raise BenchmarkError(f"{model} server not ready: {error}\n{server.tail()}") from error
                time.sleep(0.2)
        yield server


def through_server(server: harness.Server, path: str, body: Body, clients: int, requests: int) -> tuple[float, float]:
    """Requests/s over ``requests`` requests from ``clients`` clients, and the server process's
    own CPU seconds (HTTP, uploads, batching; not its worker's) per request."""
    cpu = harness.cpu_seconds(server.pid)
    elapsed = closed_loop(server.port, path, body, clients=clients, requests=requests, timeout=1800)
    return requests / elapsed, (harness.cpu_seconds(server.pid) - cpu) / requests


def captioning(models: Models, settings: Settings, workdir: Path) -> list[Cell]:
    """Frames/s alone and through the server at each caption batch size, rounds taken in turn."""
    cells = []
    content = models.clip.read_bytes()
    path = f"/v2/models/{CAPTION_MODEL}/predict/"
    env = {"DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR": str(models.captioner)}
    for batch in settings.caption_batches:
        cell = Cell("BLIP-2 captions", "frames/s", batch)
        body = multipart({"max_frames": str(settings.frames_per_request), "batch_size": str(batch),
                          "max_new_tokens": "20"}, "video", "clip.mp4", content, "video/mp4")  # fmt: skip
        say(f"captioning, {batch} frames per generate call: {settings.rounds} rounds alone and through the server")
        # 4 clients, batches of 2 requests: while the worker captions two, two more wait.
        options = ["--max-batch-size", "2", "--batch-wait-ms", "5"]
        cpu: list[float] = []
        with served(CAPTION_MODEL, env, options, workdir, settings, (path, body)) as server:
            closed_loop(server.port, path, body, clients=4, requests=4, timeout=1800)  # warm-up
            alone = CaptionAlone(models, settings, batch)
            for _ in range(settings.rounds):
                cell.alone.append(alone.measure(settings.caption_requests))
                rate, seconds = through_server(server, path, body, 4, settings.caption_requests)
                cell.served.append(rate * settings.frames_per_request)
                cpu.append(seconds)
            del alone
            _free(settings)
        cell.server_cpu_ms = statistics.median(cpu) * 1000
        cells.append(cell)
    return cells


def generation(models: Models, settings: Settings, workdir: Path) -> list[Cell]:
    """Images/s alone and through the server at each batch size, for each pipeline."""
    cells = []
    path = f"/v2/models/{IMAGE_MODEL}/predict/"
    small = form({"prompt": PROMPT, "width": "64", "height": "64", "num_inference_steps": "1", "seed": "0"})
    body = form({"prompt": PROMPT, "width": str(settings.size), "height": str(settings.size),
                 "num_inference_steps": str(settings.steps), "seed": "0"})  # fmt: skip
    for label, directory in models.pipelines.items():
        env = {"DEEPAAS_LIKE_IMAGE_GENERATION_MODEL_DIR": str(directory)}
        for batch in settings.image_batches[label]:
            cell = Cell(f"{label} images", "images/s", batch)
            say(
                f"{label}, {batch} image(s) per pipeline call: {settings.image_rounds} round(s) alone and through the server"
            )
            # 2 x batch clients, one image each: while the worker draws one batch of prompts,
            # the next batch waits. A batch closes as soon as it is full.
            options = (
                ["--max-batch-size", str(batch), "--batch-wait-ms", "2000"] if batch > 1 else ["--max-batch-size", "1"]
            )
            requests = max(batch, -(-settings.images_per_cell // batch) * batch)
            cpu: list[float] = []
            with served(IMAGE_MODEL, env, options, workdir, settings, (path, small)) as server:
                closed_loop(server.port, path, body, clients=2 * batch, requests=batch, timeout=1800)  # warm-up
                alone = GenerateAlone(directory, settings, batch)
                for _ in range(settings.image_rounds):
                    cell.alone.append(alone.measure(requests))
                    rate, seconds = through_server(server, path, body, 2 * batch, requests)
                    cell.served.append(rate)
                    cpu.append(seconds)
                del alone
                _free(settings)
            cell.server_cpu_ms = statistics.median(cpu) * 1000
            cells.append(cell)
    return cells


# ------------------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(settings: Settings, models: Models, cells: list[Cell], context: dict[str, str], elapsed: float) -> str:
    """The whole report as Markdown."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    device = "GPU (`--gpu`)" if settings.gpu else "CPU"
    out = [
        f"# Model throughput: through deepaas_like vs the pipeline alone ({device})",
        "",
        f"- date: {context['date']}",
        f"- machine: {nproc()} cores (`nproc`), CPU {cpu_model() or 'unknown'}, {memory:.0f} GiB, Linux {platform.release()}",
        (
            f"- other work on the machine: processes outside this benchmark kept {context['others']} cores busy on "
            f"average during the run; 1-minute load average {context['load_before']} before it, {load_average()} after "
            f"(/proc/loadavg)"
        ),
        (
            f"- Python {platform.python_version()}; deepaas_like {package_version('deepaas_like')} at commit "
            f"{context['revision']}; torch {package_version('torch')}, transformers {package_version('transformers')}, "
            f"diffusers {package_version('diffusers')}"
        ),
        f"- torch threads: {settings.threads} alone and in the server's worker (`--worker-threads {settings.threads}`)",
        *[f"- {line}" for line in models.described],
        f"- command: `{context['command']}` (whole run {elapsed / 60:.1f} min)",
        "",
        "## Results",
        "",
        "| model | batch | alone | through the server | server / alone | server CPU ms/request |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        out.append(f"| {cell.model} | {cell.batch} | {fmt(cell.alone_median)} {cell.unit} "
                   f"| {fmt(cell.served_median)} {cell.unit} | {fmt(cell.ratio)} | {fmt(cell.server_cpu_ms, 1)} |")  # fmt: skip
    out += [
        "",
        (
            "batch: frames per `generate` call (captions; each request asks for "
            f"{settings.frames_per_request} frames with `batch_size` = batch) or prompts per pipeline call "
            f"(images, {settings.size}x{settings.size}, {settings.steps} steps, one image per request, "
            "`--max-batch-size` = batch)."
        ),
        (
            "alone: the plugin's model code in this process (decord + processor + `generate`; the diffusers "
            "pipeline call), after one warm-up call. Through the server: `deepaas-like-run`, 1 worker, HTTP predict "
            "from concurrent clients on 127.0.0.1 (captions: 4 clients, batches of 2 requests; images: 2 x batch "
            "clients), after one warm-up round; it includes uploading, decoding, PNG/JSON encoding and the trip "
            "to the worker. Alone and through the server take turns, round by round "
            f"({settings.rounds} rounds of {settings.caption_requests} requests for captions, {settings.image_rounds} "
            f"of at least {settings.images_per_cell} images for images); the table shows medians. Server CPU: "
            "user + system time of the server process alone (HTTP, uploads, batching; its worker excluded) per "
            "request, from /proc/PID/stat."
        ),
        "",
        "## Target (issue 16)",
        "",
        "| model | best batch | server / alone | goal | result |",
        "|:---|---:|---:|---:|:---|",
    ]
    for model in dict.fromkeys(cell.model for cell in cells):
        mine = [c for c in cells if c.model == model and c.ratio is not None]
        if not mine:
            continue
        best = max(mine, key=lambda c: c.alone or 0.0)
        verdict = "pass" if best.ratio >= GOAL else f"**miss** by {(GOAL - best.ratio) * 100:.0f} points"
        out.append(f"| {model} | {best.batch} | {best.ratio:.2f}x | >= {GOAL}x | {verdict} |")
    out += ["", "best batch: the batch size at which the pipeline alone is fastest.", ""]
    if not settings.gpu:
        out += ["## GPU", "", "Not measured here: this machine has no GPU (`python benchmarks/models.py --gpu` "
                "measures the full-size architectures on one).", ""]  # fmt: skip
    return "\n".join(out)


def write_result(settings: Settings, markdown: str) -> Path:
    """Save ``markdown`` as benchmarks/results/models-<date>-<nproc>cores[-quick|-gpu].md; its path."""
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"models-{time.strftime('%Y-%m-%d')}-{nproc()}cores{settings.suffix}.md"
    path.write_text(markdown)
    return path


# ----------------------------------------------------------------------------------------- main


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks that stop the servers


def make_settings(args: argparse.Namespace) -> Settings:
    def numbers(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(int(n) for n in text.split(",")) if text else default

    if args.gpu:
        caption = numbers(args.caption_batches, (1, 8, 32))
        image = numbers(args.image_batches, (1, 2, 4, 8))
        pipelines = {"Stable Diffusion 1.5": image, "SDXL base 1.0": image}
    elif args.quick:
        caption = numbers(args.caption_batches, (1, 32))
        pipelines = {"Stable Diffusion 1.x": numbers(args.image_batches, (1, 4))}
    else:
        caption = numbers(args.caption_batches, (1, 8, 32))
        image = numbers(args.image_batches, (1, 2, 4))
        pipelines = {"Stable Diffusion 1.x": image, "SDXL": numbers(args.image_batches, (1, 4))}
    if args.only == "captioning":
        pipelines = {}
    if args.only == "generation":
        caption = ()
    return Settings(gpu=args.gpu, quick=args.quick, threads=args.threads, size=args.size, steps=args.steps,
                    caption_batches=caption, image_batches=pipelines)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="full-size architectures on CUDA, float16")
    parser.add_argument("--quick", action="store_true", help="CPU: SD only, fewer batch sizes (about 3 minutes)")
    parser.add_argument("--size", type=int, default=512, help="image width and height in pixels (default 512)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads alone and in the worker (default 1)")
    parser.add_argument("--caption-batches", help="frames per generate call, e.g. 1,8,32")
    parser.add_argument("--image-batches", help="prompts per pipeline call, e.g. 1,2,4")
    parser.add_argument("--only", choices=("captioning", "generation"),
                        help="run one section; the result is printed, not written")  # fmt: skip
    args = parser.parse_args(argv)
    settings = make_settings(args)
    if settings.gpu:
        import torch

        if not torch.cuda.is_available():
            parser.error("--gpu: PyTorch sees no CUDA device here")
    import torch

    torch.set_num_threads(settings.threads)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    atexit.register(harness.stop_all)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    began = time.monotonic()
    context = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_before": load_average(),
        "revision": source_revision(),
        "command": " ".join(["python benchmarks/models.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    busy_before, own_before = harness.machine_busy_seconds(), harness.own_cpu_seconds()
    workdir = Path(tempfile.mkdtemp(prefix="deepaas-like-models-"))
    cells: list[Cell] = []
    try:
        models = (build_gpu_models if settings.gpu else build_cpu_models)(workdir, settings)
        if settings.caption_batches:
            cells += captioning(models, settings, workdir)
        cells += generation(models, settings, workdir)
    except KeyboardInterrupt:
        say("interrupted: stopping the servers")
        return 130
    finally:
        harness.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - began
    # Our own CPU time includes the servers (waited for when stopped) and their workers.
    others = (harness.machine_busy_seconds() - busy_before) - (harness.own_cpu_seconds() - own_before)
    context["others"] = f"{max(0.0, others) / elapsed:.2f}"
    markdown = render(settings, models, cells, context, elapsed)
    print(markdown)
    if not args.only:
        say(f"written to {write_result(settings, markdown).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
