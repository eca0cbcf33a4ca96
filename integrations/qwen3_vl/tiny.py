"""A tiny Qwen3-VL built offline and deterministically (random weights).

Real geometry (16 px patches, 2x2 patch merger, interpolated learned position grid, DeepStack
features from two vision layers added after both decoder layers, interleaved 3-D multimodal
rotary positions, the real image processor), toy widths and depth. Its answers are meaningless:
it exists so that every code path -- processor, compression, DeepStack, positions, forward,
generate -- runs without any download.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vtcompress.integrations import tiny_models
from vtcompress.integrations.image_only_processor import save_processor_parts
from vtcompress.integrations.qwen3_vl.processing import PATCH
from vtcompress.integrations.qwen3_vl.prompt import (
    IMAGE_PROMPT,
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    VISION_END,
    VISION_START,
)

TINY_NAME = "vtcompress/tiny-qwen3-vl-random"
VISION_SPECIALS = [VISION_START, VISION_END, IMAGE_TOKEN, VIDEO_TOKEN]
CHAT_TEMPLATE = tiny_models.build_chat_template(image_markup=IMAGE_PROMPT)


def build_tokenizer():
    """Byte-level tokenizer with the vision markers, image and video tokens, and the chat template
    (see :func:`~vtcompress.integrations.tiny_models.byte_level_tokenizer`)."""
    return tiny_models.byte_level_tokenizer(VISION_SPECIALS, chat_template=CHAT_TEMPLATE)


def build_processor(tokenizer=None):
    from vtcompress.integrations.qwen3_vl.processing import ImageOnlyQwen3VLProcessor, image_processor

    return ImageOnlyQwen3VLProcessor(
        image_processor=image_processor(),
        tokenizer=tokenizer or build_tokenizer(),
        video_processor=None,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer):
    from transformers import Qwen3VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tiny_models.BASE_SPECIALS + VISION_SPECIALS}
    text_sizes = tiny_models.TEXT_SIZES
    vision = dict(
        depth=4,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=text_sizes["hidden_size"],
        patch_size=PATCH,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=256,  # a 16 x 16 learned grid, interpolated to each image
        deepstack_visual_indexes=[1, 2],
    )
    head_dim = text_sizes["hidden_size"] // text_sizes["num_attention_heads"]
    text = dict(
        text_sizes,
        head_dim=head_dim,
        vocab_size=len(tokenizer),
        max_position_embeddings=32768,
        # mrope_section sums to head_dim / 2; Qwen3-VL interleaves the t / h / w frequencies.
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
    )
    return Qwen3VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids[IMAGE_TOKEN],
        video_token_id=ids[VIDEO_TOKEN],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
    )


def build_tiny_qwen3_vl(seed: int = 0, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32):
    """Return ``(model, processor)``: a tiny random Qwen3-VL, identical for equal seeds."""
    from transformers import Qwen3VLForConditionalGeneration

    processor = build_processor()
    tok = processor.tokenizer
    model = tiny_models.seeded_model(
        Qwen3VLForConditionalGeneration, build_config(tok), seed, tok, dtype, attn_implementation
    )
    return model, processor


def default_tiny_path() -> Path:
    return tiny_models.cache_path("tiny-qwen3-vl-random")


def save_tiny_qwen3_vl(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build the tiny model and save model + processor to ``path`` (default: the user cache)."""
    path = path if path is not None else default_tiny_path()
    return tiny_models.save_random_tiny(path, TINY_NAME, seed, build_tiny_qwen3_vl, save_processor_parts)


def tiny_checkpoint() -> str:
    """The saved tiny model's folder in the user cache, built on first use."""
    return tiny_models.ensure_saved(default_tiny_path(), save_tiny_qwen3_vl)
