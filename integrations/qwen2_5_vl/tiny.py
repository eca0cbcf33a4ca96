"""A tiny Qwen2.5-VL built offline and deterministically (random weights).

Real geometry (14 px patches, 2x2 patch merger, 112 px attention windows with full-attention
blocks, 3-D multimodal rotary positions, the real image processor), toy widths and depth. Its
answers are meaningless: it exists so that every code path -- processor, compression, positions,
forward, generate -- runs without any download.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vtcompress.integrations import tiny_models
from vtcompress.integrations.image_only_processor import save_processor_parts
from vtcompress.integrations.qwen2_5_vl.prompt import IMAGE_PROMPT, IMAGE_TOKEN, VISION_END, VISION_START

TINY_NAME = "vtcompress/tiny-qwen2.5-vl-random"
VIDEO_TOKEN = "<|video_pad|>"
VISION_SPECIALS = [VISION_START, VISION_END, IMAGE_TOKEN, VIDEO_TOKEN]
SPECIALS = tiny_models.BASE_SPECIALS + VISION_SPECIALS
CHAT_TEMPLATE = tiny_models.build_chat_template(image_markup=IMAGE_PROMPT)


def build_tokenizer():
    """Byte-level tokenizer with the vision markers, image and video tokens, and the chat template
    (see :func:`~vtcompress.integrations.tiny_models.byte_level_tokenizer`)."""
    return tiny_models.byte_level_tokenizer(VISION_SPECIALS, chat_template=CHAT_TEMPLATE)


def build_processor(tokenizer=None):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from vtcompress.integrations.qwen2_5_vl.processing import ImageOnlyQwen2_5_VLProcessor

    tokenizer = tokenizer or build_tokenizer()
    return ImageOnlyQwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(),
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    vision = dict(
        depth=4,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=64,
        fullatt_block_indexes=[1, 3],
        window_size=112,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        tokens_per_second=2,
    )
    text = dict(
        tiny_models.TEXT_SIZES,
        vocab_size=len(tokenizer),
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
    )
    return Qwen2_5_VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids[IMAGE_TOKEN],
        video_token_id=ids[VIDEO_TOKEN],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
    )


def build_tiny_qwen2_5_vl(
    seed: int = 0, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32
):
    """Return ``(model, processor)``: a tiny random Qwen2.5-VL, identical for equal seeds."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    processor = build_processor()
    tok = processor.tokenizer
    config = build_config(tok)
    model = tiny_models.seeded_model(
        Qwen2_5_VLForConditionalGeneration, config, seed, tok, dtype, attn_implementation
    )
    return model, processor


def default_tiny_path() -> Path:
    return tiny_models.cache_path("tiny-qwen2.5-vl-random")


def save_tiny_qwen2_5_vl(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build the tiny model and save model + processor to ``path`` (default: the user cache)."""
    path = path if path is not None else default_tiny_path()
    return tiny_models.save_random_tiny(path, TINY_NAME, seed, build_tiny_qwen2_5_vl, save_processor_parts)


def tiny_checkpoint() -> str:
    """The saved tiny model's folder in the user cache, built on first use."""
    return tiny_models.ensure_saved(default_tiny_path(), save_tiny_qwen2_5_vl)
