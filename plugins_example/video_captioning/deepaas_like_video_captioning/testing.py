"""Tiny offline captioners of each family and a generated H.264 clip, for tests and demos.

Nothing is downloaded: each captioner is built from configs (ViT + GPT-2, BLIP, BLIP-2 with an
OPT language model, GIT; tokenizers of about ten words made in memory), trained for a second or
a few on the clip's own frames so it says "a red square" or "a green square", and written with
``save_pretrained`` together with its processor, as the published checkpoints are. The clip is
encoded with libx264 by the ffmpeg binary that the ``imageio-ffmpeg`` package ships
(``pip install 'deepaas-like-video-captioning[testing]'``)::

    python -m deepaas_like_video_captioning.testing /tmp/tiny-captioner /tmp/clip.mp4 [--family blip-2]
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
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=END, eos_token=END, unk_token=END, pad_token=END)


def build_tiny_captioner(out_dir: str | os.PathLike[str], seed: int = 0, max_steps: int = 300) -> pathlib.Path:
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


#: The families :func:`build_tiny` makes, by ``config.model_type``.
FAMILIES = ("vision-encoder-decoder", "blip", "blip-2", "git")

# BERT-style special tokens (BLIP and GIT tokenizers), then the words of the captions.
_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# The vision tower every tiny family shares: 32 x 32 images, 8 x 8 patches, 2 layers.
_VISION = {
    "image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 2,
}  # fmt: skip
_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 64,
}


def build_tiny(family: str, out_dir: str | os.PathLike[str], seed: int = 0) -> pathlib.Path:
    """Build, train and save the tiny captioner of ``family`` (one of :data:`FAMILIES`) into ``out_dir``."""
    builders = {
        "vision-encoder-decoder": build_tiny_captioner,
        "blip": build_tiny_blip,
        "blip-2": build_tiny_blip2,
        "git": build_tiny_git,
    }
    if family not in builders:
        raise ValueError(f"no tiny {family!r} captioner: choose one of {', '.join(FAMILIES)}")
    return builders[family](out_dir, seed=seed)


def _bert_tokenizer(**special_tokens: str):  # -> transformers.BertTokenizer
    """A BERT WordPiece tokenizer over the caption words, built in memory (lowercases, adds [CLS] ... [SEP])."""
    from transformers import BertTokenizer

    words = [w for w in WORDS if w != END]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate([*_BERT_SPECIALS, *words])})
    if special_tokens:
        tokenizer.add_special_tokens(special_tokens)
    return tokenizer


def build_tiny_blip(out_dir: str | os.PathLike[str], seed: int = 0, max_steps: int = 300) -> pathlib.Path:
    """Build, train and save a ~100k-parameter ``BlipForConditionalGeneration`` with its ``BlipProcessor``.

    Vision: 32 x 32 images, 8 x 8 patches, hidden 32, 2 layers; text decoder: hidden 32, 2
    layers; a BERT tokenizer with BLIP's ``[DEC]`` start token. Raises ``RuntimeError`` if it
    has not learnt the clip's captions in ``max_steps``.
    """
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = _bert_tokenizer(bos_token="[DEC]")
    text = {
        **_TEXT, "vocab_size": len(tokenizer), "encoder_hidden_size": _VISION["hidden_size"],
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.sep_token_id,
        "sep_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id,
    }  # fmt: skip
    config = BlipConfig(vision_config=_VISION, text_config=text, projection_dim=32)
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    encoded = processor(images=_frames(), text=_captions(), return_tensors="pt")
    inputs = {"pixel_values": encoded.pixel_values, "input_ids": encoded.input_ids,
              "attention_mask": encoded.attention_mask, "labels": encoded.input_ids}  # fmt: skip
    model = _train(lambda: BlipForConditionalGeneration(config), inputs, processor, seed, max_steps)
    return _save(out_dir, model, processor)


def build_tiny_blip2(out_dir: str | os.PathLike[str], seed: int = 0, max_steps: int = 300) -> pathlib.Path:
    """Build, train and save a ~150k-parameter ``Blip2ForConditionalGeneration`` with its ``Blip2Processor``.

    Vision: as :func:`build_tiny_blip`; Q-Former: hidden 32, 2 layers, 4 query tokens; language
    model: OPT, hidden 32, 2 layers, ``</s>`` as start and end, as in ``Salesforce/blip2-opt-2.7b``.
    Raises ``RuntimeError`` if it has not learnt the clip's captions in ``max_steps``.
    """
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    end = "</s>"
    queries = 4
    processor = blip2_processor(num_query_tokens=queries, image_size=32)
    tokenizer = processor.tokenizer
    image_token = tokenizer.convert_tokens_to_ids("<image>")  # the processor added it
    language = OPTConfig(
        vocab_size=len(tokenizer), hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
        word_embed_proj_dim=32, max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config = Blip2Config(
        vision_config=_VISION,
        qformer_config={**_TEXT, "vocab_size": len(tokenizer), "encoder_hidden_size": _VISION["hidden_size"]},
        text_config=language.to_dict(),
        num_query_tokens=queries,
        image_token_index=image_token,
    )
    encoded = processor(images=_frames(), text=[f"{c} {end}" for c in _captions()], return_tensors="pt")
    labels = encoded.input_ids.masked_fill(encoded.input_ids == image_token, -100)  # no loss on image slots
    inputs = {"pixel_values": encoded.pixel_values, "input_ids": encoded.input_ids,
              "attention_mask": encoded.attention_mask, "labels": labels}  # fmt: skip
    model = _train(lambda: Blip2ForConditionalGeneration(config), inputs, processor, seed, max_steps)
    return _save(out_dir, model, processor)


def blip2_processor(num_query_tokens: int = 4, image_size: int = 32):  # -> transformers.Blip2Processor
    """A ``Blip2Processor`` with a word-level OPT-style tokenizer over the caption words, built in memory.

    ``</s>`` starts every text (as OPT's tokenizer does) and ends captions; the processor adds
    ``<image>``, the token whose ``num_query_tokens`` copies it puts before the text. Images are
    resized to ``image_size`` pixels square (224 for the published BLIP-2 models).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import Blip2Processor, BlipImageProcessor, PreTrainedTokenizerFast

    end = "</s>"
    words = [w for w in WORDS if w != END]
    vocab = {token: i for i, token in enumerate(["<pad>", end, "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins the words with spaces
    # OPT's tokenizer starts every text with </s>; BLIP-2 puts the image tokens before it.
    backend.post_processor = processors.TemplateProcessing(single=f"{end} $A", special_tokens=[(end, vocab[end])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=end, eos_token=end, unk_token="<unk>", pad_token="<pad>"
    )
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return Blip2Processor(image_processor, tokenizer, num_query_tokens=num_query_tokens)


def build_tiny_git(out_dir: str | os.PathLike[str], seed: int = 0, max_steps: int = 300) -> pathlib.Path:
    """Build, train and save a ~100k-parameter ``GitForCausalLM`` with its ``GitProcessor``.

    Vision: as :func:`build_tiny_blip` (a CLIP image processor); text: hidden 32, 2 layers, a
    BERT tokenizer, ``[CLS]`` to start and ``[SEP]`` to end, as in ``microsoft/git-base``.
    Raises ``RuntimeError`` if it has not learnt the clip's captions in ``max_steps``.
    """
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = _bert_tokenizer()
    config = GitConfig(
        vision_config=_VISION, **_TEXT, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = GitProcessor(image_processor, tokenizer)
    encoded = processor(images=_frames(), text=_captions(), return_tensors="pt")
    inputs = {"pixel_values": encoded.pixel_values, "input_ids": encoded.input_ids,
              "attention_mask": encoded.attention_mask, "labels": encoded.input_ids}  # fmt: skip
    model = _train(lambda: GitForCausalLM(config), inputs, processor, seed, max_steps)
    return _save(out_dir, model, processor)


def _frames() -> list[np.ndarray]:
    return [clip_frame(i) for i in range(CLIP_FRAMES)]


def _captions() -> list[str]:
    return [clip_caption(i) for i in range(CLIP_FRAMES)]


def _train(make_model, inputs: dict[str, torch.Tensor], processor, seed: int, max_steps: int):
    """Seeded Adam on the clip's 20 frames until greedy decoding gives every caption back."""
    pixel_values = inputs["pixel_values"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for step in range(max_steps):
            loss = model(**inputs).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 5 == 4 and loss.item() < 0.25 and _learnt(model, processor, pixel_values, _captions()):
                break
        else:
            raise RuntimeError(
                f"the tiny {model.config.model_type} captioner did not learn the clip in {max_steps} steps"
            )
    return model.eval()


def _save(out_dir: str | os.PathLike[str], model, processor) -> pathlib.Path:
    out = pathlib.Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepaas_like_video_captioning.testing MODEL_DIR CLIP.mp4 [--family F]``: write both."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m deepaas_like_video_captioning.testing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("model_dir", help="where to save the tiny captioner")
    parser.add_argument("clip", help="where to write the H.264 test clip (.mp4)")
    parser.add_argument(
        "--family", choices=FAMILIES, default="vision-encoder-decoder", help="model family (default: %(default)s)"
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    model_dir = build_tiny(args.family, args.model_dir)
    print(f"tiny {args.family} captioner saved in {model_dir}")
    clip = write_clip(args.clip)
    print(f"{CLIP_FRAMES} frames at {CLIP_FPS} fps, {CLIP_SIZE}x{CLIP_SIZE}, {video_codec(clip)}: {clip}")
    print(f"serve it with: DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR={model_dir} \\")
    print("    deepaas-like-run --model-name video_captioning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
