"""A tiny offline captioner and a generated H.264 clip, for tests and demos.

Nothing is downloaded: the captioner is built from configs (ViT encoder + GPT-2 decoder, a
10-word tokenizer made in memory), trained for a few seconds on the clip's own frames so it
says "a red square" or "a green square", and written with ``save_pretrained``. The clip is
encoded with libx264 by the ffmpeg binary that the ``imageio-ffmpeg`` package ships
(``pip install 'deepaas-like-video-captioning[testing]'``)::

    python -m deepaas_like_video_captioning.testing /tmp/tiny-captioner /tmp/clip.mp4
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
import torch

#: The generated clip: 2 s at 10 fps, 64 x 64 pixels; a 32 x 32 square moves left to right,
#: red in the first second and green in the second.
CLIP_FRAMES = 20
CLIP_FPS = 10
CLIP_SIZE = 64

#: Every word the tiny tokenizer knows; "<|endoftext|>" is GPT-2's start/end/padding token.
WORDS = ("<|endoftext|>", "a", "red", "green", "blue", "square", "on", "moving", "small", "background")
END = "<|endoftext|>"


def clip_frame(index: int, frames: int = CLIP_FRAMES, size: int = CLIP_SIZE) -> np.ndarray:
    """Frame ``index`` of the test clip: uint8 RGB of shape ``(size, size, 3)``.

    Dark blue background; a ``size/2`` square whose left edge moves from 0 to ``size/2``
    pixels; red for the first half of the frames, green for the second.
    """
    side = size // 2
    left = clip_square_left(index, frames, size)
    frame = np.empty((size, size, 3), dtype=np.uint8)
    frame[:] = (20, 20, 60)
    frame[size // 4 : size // 4 + side, left : left + side] = clip_color(index, frames)
    return frame


def clip_square_left(index: int, frames: int = CLIP_FRAMES, size: int = CLIP_SIZE) -> int:
    """Column of the square's left edge in frame ``index``: tells the frames apart."""
    return round(index * (size - size // 2) / max(frames - 1, 1))


def clip_color(index: int, frames: int = CLIP_FRAMES) -> tuple[int, int, int]:
    """RGB colour of the square in frame ``index``: red in the first half, green after."""
    return (255, 0, 0) if index < frames // 2 else (0, 255, 0)


def clip_caption(index: int, frames: int = CLIP_FRAMES) -> str:
    """The caption the tiny captioner learns for frame ``index`` of the test clip."""
    return "a red square" if index < frames // 2 else "a green square"


def write_clip(
    path: str | os.PathLike[str], frames: int = CLIP_FRAMES, fps: int = CLIP_FPS, size: int = CLIP_SIZE
) -> pathlib.Path:
    """Encode :func:`clip_frame` 0..frames-1 as an H.264 (libx264, yuv420p) MP4 at ``path``.

    ``size`` must be a multiple of 16 (H.264 macroblocks). Needs ``imageio-ffmpeg``.
    """
    import imageio_ffmpeg

    path = pathlib.Path(path)
    writer = imageio_ffmpeg.write_frames(
        os.fspath(path),
        (size, size),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=16,
        # A keyframe every 5 frames, so decord has to seek and decode across GOPs.
        output_params=["-g", "5", "-loglevel", "error"],
    )
    writer.send(None)  # start ffmpeg
    for index in range(frames):
        writer.send(clip_frame(index, frames, size).tobytes())
    writer.close()
    return path


def video_codec(path: str | os.PathLike[str]) -> str:
    """The video codec FFmpeg reports for ``path`` (e.g. ``"h264"``). Needs ``imageio-ffmpeg``."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(os.fspath(path))
    try:
        return str(next(reader)["codec"])
    finally:
        reader.close()


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """A word-level tokenizer over :data:`WORDS`, built in memory (no vocab download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={word: i for i, word in enumerate(WORDS)}, unk_token=END))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins the words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=END, eos_token=END, unk_token=END, pad_token=END
    )


def build_tiny_captioner(
    out_dir: str | os.PathLike[str], seed: int = 0, max_steps: int = 300
) -> pathlib.Path:
    """Build, train and ``save_pretrained`` a ~60k-parameter ViT + GPT-2 captioner into ``out_dir``.

    ViT: 32 x 32 images, 8 x 8 patches, hidden 32, 2 layers, 2 heads; GPT-2: n_embd 32, 2 layers,
    cross-attention. Trained (seeded, CPU, a few seconds) until it captions the clip's frames
    with :func:`clip_caption`; raises ``RuntimeError`` if it has not learnt them in ``max_steps``.
    """
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    out = pathlib.Path(out_dir)
    tokenizer = build_tokenizer()
    end_id = tokenizer.convert_tokens_to_ids(END)
    encoder = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    decoder = GPT2Config(
        vocab_size=len(WORDS),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        add_cross_attention=True,
        bos_token_id=end_id,
        eos_token_id=end_id,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = end_id
    processor = ViTImageProcessor(size={"height": 32, "width": 32})

    frames = [clip_frame(i) for i in range(CLIP_FRAMES)]
    captions = [clip_caption(i) for i in range(CLIP_FRAMES)]
    pixel_values = processor(images=frames, return_tensors="pt").pixel_values
    labels = tokenizer([f"{c} {END}" for c in captions], return_tensors="pt").input_ids

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionEncoderDecoderModel(config=config)
        generation = model.generation_config
        generation.decoder_start_token_id = generation.bos_token_id = end_id
        generation.pad_token_id = generation.eos_token_id = end_id
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for step in range(max_steps):
            loss = model(pixel_values=pixel_values, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 5 == 4 and loss.item() < 0.25 and _learnt(model, tokenizer, pixel_values, captions):
                break
        else:
            raise RuntimeError(f"the tiny captioner did not learn the clip in {max_steps} steps")
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _learnt(model, tokenizer, pixel_values: torch.Tensor, captions: Sequence[str]) -> bool:
    model.eval()
    with torch.inference_mode():
        ids = model.generate(pixel_values=pixel_values, max_new_tokens=5)
    model.train()
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)] == list(captions)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepaas_like_video_captioning.testing MODEL_DIR CLIP.mp4``: write both."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m deepaas_like_video_captioning.testing MODEL_DIR CLIP.mp4", file=sys.stderr)
        return 2
    model_dir = build_tiny_captioner(args[0])
    print(f"tiny captioner saved in {model_dir}")
    clip = write_clip(args[1])
    print(f"{CLIP_FRAMES} frames at {CLIP_FPS} fps, {CLIP_SIZE}x{CLIP_SIZE}, {video_codec(clip)}: {clip}")
    print(f"serve it with: DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR={model_dir} deepaas-like-run --model-name video_captioning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
