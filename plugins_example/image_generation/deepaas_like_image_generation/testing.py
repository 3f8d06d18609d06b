"""Tiny, randomly initialised Stable Diffusion and SDXL pipelines built offline, for tests and demos.

The components follow the sizes of diffusers' own fast tests (``get_dummy_components`` in
``tests/pipelines/stable_diffusion/test_stable_diffusion.py`` and
``tests/pipelines/stable_diffusion_xl/test_stable_diffusion_xl.py``), a little smaller still.
The images they draw are noise-like, but every code path of the plugin (loading with
``from_pretrained``, seeds, sizes, schedulers, PNG/ZIP/JSON answers) runs exactly as with real
weights.

Run ``python -m deepaas_like_image_generation.testing DIR [--sdxl]`` to write such a pipeline
to ``DIR`` and point ``DEEPAAS_LIKE_IMAGE_GENERATION_MODEL_DIR`` at it.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile

import torch

#: Words whose BPE merges the tiny vocabulary carries, so prompts do not split into single bytes.
_WORDS = ("a", "an", "the", "of", "cat", "dog", "red", "blue", "photo", "painting", "astronaut", "horse")

# CLIP's tokenizer reads at most this many tokens; the text encoder's position table matches.
_MAX_TOKENS = 77


def _byte_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the 256 byte values (GPT-2 / CLIP)."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, shift = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + shift))
            shift += 1
    return chars


def write_tiny_clip_tokenizer_files(directory: str | os.PathLike[str]) -> pathlib.Path:
    """Write a tiny CLIP BPE vocabulary (``vocab.json``, ``merges.txt``) into ``directory``.

    The vocabulary holds every byte (alone and word-final, ``</w>``), merges for a few
    words, and CLIP's two special tokens: about 560 entries. Returns the directory.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    tokens = alphabet + [char + "</w>" for char in alphabet]
    merges: list[str] = []
    for word in _WORDS:
        # Merge left to right: "c a", "ca t</w>" gives "cat</w>" in two merges.
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            rule = f"{pieces[0]} {pieces[1]}"
            if rule not in merges:
                merges.append(rule)
            if merged not in tokens:
                tokens.append(merged)
            pieces = [merged] + pieces[2:]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return directory


def build_tiny_pipeline(seed: int = 0):  # -> diffusers.StableDiffusionPipeline
    """Build a tiny random ``StableDiffusionPipeline`` in memory: CPU, float32, 1.7 M parameters.

    VAE downscale factor 2 (a 64x64 image has 32x32 latents), text width 32, DDIM scheduler,
    no safety checker. ``seed`` fixes the random weights. Nothing is downloaded.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tokenizer_dir:
        write_tiny_clip_tokenizer_files(tokenizer_dir)
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=_MAX_TOKENS)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        layers_per_block=1,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=_MAX_TOKENS,
            vocab_size=1000,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_pipeline(directory: str | os.PathLike[str], seed: int = 0) -> pathlib.Path:
    """Build the tiny pipeline and ``save_pretrained`` it into ``directory`` (about 7 MB).

    The directory then loads with ``StableDiffusionPipeline.from_pretrained(directory)``
    like any downloaded Stable Diffusion checkpoint. Returns the directory.
    """
    directory = pathlib.Path(directory)
    build_tiny_pipeline(seed).save_pretrained(directory)
    return directory


def build_tiny_sdxl_pipeline(seed: int = 0):  # -> diffusers.StableDiffusionXLPipeline
    """Build a tiny random ``StableDiffusionXLPipeline`` in memory: CPU, float32, about 2 M parameters.

    SDXL's shape in miniature: two CLIP text encoders (the second with a projection) whose
    hidden states are concatenated (cross-attention width 64), a UNet with SDXL's
    ``text_time`` added conditioning (pooled text + 6 size/crop numbers), VAE downscale factor
    2, Euler scheduler as SDXL ships it. ``seed`` fixes the random weights. Nothing is downloaded.
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tokenizer_dir:
        write_tiny_clip_tokenizer_files(tokenizer_dir)
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=_MAX_TOKENS)
        tokenizer_2 = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=_MAX_TOKENS)

    text_config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=_MAX_TOKENS,
        vocab_size=1000,
        hidden_act="gelu",
        projection_dim=32,
    )
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        # pooled text (projection_dim 32) + 6 time ids x addition_time_embed_dim 8
        projection_class_embeddings_input_dim=32 + 6 * 8,
        cross_attention_dim=64,  # the two encoders' hidden sizes, concatenated
        norm_num_groups=1,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        layers_per_block=1,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
        norm_num_groups=1,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(text_config)
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def save_tiny_sdxl_pipeline(directory: str | os.PathLike[str], seed: int = 0) -> pathlib.Path:
    """Build the tiny SDXL pipeline and ``save_pretrained`` it into ``directory`` (about 8 MB).

    The directory then loads with ``AutoPipelineForText2Image.from_pretrained(directory)``
    (a ``StableDiffusionXLPipeline``) like a downloaded SDXL checkpoint. Returns the directory.
    """
    directory = pathlib.Path(directory)
    build_tiny_sdxl_pipeline(seed).save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m deepaas_like_image_generation.testing DIR [--sdxl]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip().splitlines()[0])
        print("usage: python -m deepaas_like_image_generation.testing DIR [--sdxl]")
        return 0
    sdxl = "--sdxl" in argv
    paths = [a for a in argv if a != "--sdxl"]
    if len(paths) != 1:
        print("usage: python -m deepaas_like_image_generation.testing DIR [--sdxl]", file=sys.stderr)
        return 2
    directory = save_tiny_sdxl_pipeline(paths[0]) if sdxl else save_tiny_pipeline(paths[0])
    print(f"tiny {'SDXL' if sdxl else 'Stable Diffusion'} pipeline written to {directory}")
    print(f"export DEEPAAS_LIKE_IMAGE_GENERATION_MODEL_DIR={directory.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
