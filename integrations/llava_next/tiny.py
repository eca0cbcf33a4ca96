"""A tiny LLaVA-NeXT built offline and deterministically (random weights).

Real geometry (CLIP ViT/14 at 336 px: 24x24 tokens a view, LLaVA-NeXT's anyres pinpoints, the
real processor), toy widths and depth. Its answers are meaningless: it exists so that every
code path -- processor, compression, forward, generate -- runs without any download.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vtcompress.integrations import tiny_models

TINY_NAME = "vtcompress/tiny-llava-next-random"
IMAGE_TOKEN = "<image>"
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CHAT_TEMPLATE = tiny_models.build_chat_template(image_markup=IMAGE_TOKEN + "\n")


def build_tokenizer():
    """Byte-level tokenizer with ``<image>`` (see
    :func:`~vtcompress.integrations.tiny_models.byte_level_tokenizer`)."""
    return tiny_models.byte_level_tokenizer([IMAGE_TOKEN])


def build_processor(tokenizer=None):
    from transformers import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=PINPOINTS,
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or build_tokenizer(),
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the [CLS] token, as in the llava-hf processor configs
        chat_template=CHAT_TEMPLATE,
    )


def build_config(vocab_size: int, image_token_id: int, pad_token_id: int, **text_overrides: Any):
    """The tiny LLaVA-NeXT config; ``text_overrides`` replace the decoder's sizes or add options."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    vision = CLIPVisionConfig(**tiny_models.VISION_SIZES, image_size=336, patch_size=14, projection_dim=32)
    text = dict(
        tiny_models.TEXT_SIZES,
        vocab_size=vocab_size,
        max_position_embeddings=8192,
        pad_token_id=pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlavaNextConfig(
        vision_config=vision,
        text_config=LlamaConfig(**{**text, **text_overrides}),
        image_token_index=image_token_id,
        image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def build_tiny_llava_next(
    seed: int = 0,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    **text_overrides: Any,
):
    """Return ``(model, processor)``: a tiny random LLaVA-NeXT, identical for equal seeds
    (``text_overrides``: see :func:`build_config`)."""
    from transformers import LlavaNextForConditionalGeneration

    processor = build_processor()
    tok = processor.tokenizer
    config = build_config(
        len(tok), tok.convert_tokens_to_ids(IMAGE_TOKEN), tok.pad_token_id, **text_overrides
    )
    model = tiny_models.seeded_model(
        LlavaNextForConditionalGeneration, config, seed, tok, dtype, attn_implementation
    )
    return model, processor


def default_tiny_path() -> Path:
    return tiny_models.cache_path("tiny-llava-next-random")


def save_tiny_llava_next(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build the tiny model and save model + processor to ``path`` (default: the user cache)."""
    path = path if path is not None else default_tiny_path()
    return tiny_models.save_random_tiny(path, TINY_NAME, seed, build_tiny_llava_next)


def tiny_checkpoint() -> str:
    """The saved tiny model's folder in the user cache, built on first use."""
    return tiny_models.ensure_saved(default_tiny_path(), save_tiny_llava_next)
