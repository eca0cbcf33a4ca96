"""A tiny LLaVA-OneVision built offline and deterministically (random weights).

Real geometry (SigLIP/14 at 384 px: 27x27 tokens a view, no [CLS]; OneVision's 36 anyres
pinpoints and ``anyres_max_9``; the real image processor), toy widths and depth. Its answers
are meaningless: it exists so that every code path -- processor, compression, forward,
generate -- runs without any download.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vtcompress.integrations import tiny_models
from vtcompress.integrations.llava_onevision.processing import build_processor

TINY_NAME = "vtcompress/tiny-llava-onevision-random"
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
# Qwen2-style turns, as in the llava-hf OneVision chat templates.
CHAT_TEMPLATE = tiny_models.build_chat_template(
    image_markup=IMAGE_TOKEN + "\n",
    turn_start="{{ '<|im_start|>' + message['role'] + '\n' }}",
    turn_end="{{ '<|im_end|>\n' }}",
    generation_prompt="{{ '<|im_start|>assistant\n' }}",
)


def build_tokenizer():
    """Byte-level tokenizer with ``<image>`` and ``<video>`` (see
    :func:`~vtcompress.integrations.tiny_models.byte_level_tokenizer`)."""
    return tiny_models.byte_level_tokenizer([IMAGE_TOKEN, VIDEO_TOKEN])


def build_config(
    vocab_size: int, image_token_id: int, video_token_id: int, pad_token_id: int, **text_overrides: int
):
    """The tiny config; ``text_overrides`` change the text model's sizes (e.g. ``hidden_size``)."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        **tiny_models.VISION_SIZES, image_size=384, patch_size=14, vision_use_head=False
    )
    text = Qwen2Config(
        **{**tiny_models.TEXT_SIZES, **text_overrides},
        vocab_size=vocab_size,
        max_position_embeddings=16384,
        pad_token_id=pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        video_token_index=video_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )


def build_tiny_onevision(
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    **text_overrides: int,
):
    """Return ``(model, processor)``: a tiny random LLaVA-OneVision, identical for equal seeds
    (``text_overrides``: see :func:`build_config`)."""
    from transformers import LlavaOnevisionForConditionalGeneration

    processor = build_processor(build_tokenizer(), chat_template=CHAT_TEMPLATE)
    tok = processor.tokenizer
    config = build_config(
        len(tok),
        tok.convert_tokens_to_ids(IMAGE_TOKEN),
        tok.convert_tokens_to_ids(VIDEO_TOKEN),
        tok.pad_token_id,
        **text_overrides,
    )
    model = tiny_models.seeded_model(
        LlavaOnevisionForConditionalGeneration, config, seed, tok, dtype, attn_implementation
    )
    return model, processor


def default_tiny_path() -> Path:
    return tiny_models.cache_path("tiny-llava-onevision-random")


def save_tiny_onevision(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build the tiny model and save model + processor to ``path`` (default: the user cache)."""
    path = path if path is not None else default_tiny_path()
    return tiny_models.save_random_tiny(path, TINY_NAME, seed, build_tiny_onevision)


def tiny_checkpoint() -> str:
    """The saved tiny model's folder in the user cache, built on first use."""
    return tiny_models.ensure_saved(default_tiny_path(), save_tiny_onevision)
