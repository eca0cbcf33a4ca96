"""Tiny random Qwen2.5-VL and Qwen3-VL checkpoints that vLLM loads (tests, fully offline).

The transformers hosts' tiny models (:mod:`vtcompress.integrations.qwen2_5_vl.tiny`,
:mod:`vtcompress.integrations.qwen3_vl.tiny`) with what vLLM (0.32, CPU) needs: text attention
heads 32 wide (its CPU attention refuses 16), and a full processor with a video processor (the
vLLM environment has torchvision), frames kept small so that clips stay a few hundred tokens.
The same directory loads in transformers, so both runtimes see identical weights and inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vtcompress.integrations import tiny_models

TEXT_HIDDEN = 128  # 4 heads of 32: the narrowest head vLLM's CPU attention runs
# Frames of 2 to 16 merged tokens per side (the video processor's pixel limits).
VIDEO_MIN_PIXELS = 56 * 56
VIDEO_MAX_PIXELS = 16 * 16 * 28 * 28


def _text_sizes(text_config, mrope_section: list[int]) -> None:
    text_config.hidden_size = TEXT_HIDDEN
    text_config.intermediate_size = 2 * TEXT_HIDDEN
    text_config.head_dim = TEXT_HIDDEN // text_config.num_attention_heads
    rope = dict(text_config.rope_parameters)
    rope["mrope_section"] = mrope_section  # sums to head_dim / 2
    text_config.rope_parameters = rope


def build_qwen2_5_vl(seed: int = 0):
    """``(model, processor)``: the tiny Qwen2.5-VL, 128 wide, float32, identical for equal seeds."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from vtcompress.integrations.qwen2_5_vl import tiny

    tokenizer = tiny.build_tokenizer()
    config = tiny.build_config(tokenizer)
    _text_sizes(config.text_config, [4, 6, 6])
    config.vision_config.out_hidden_size = TEXT_HIDDEN
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(
            size={"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS}
        ),
        chat_template=tiny.CHAT_TEMPLATE,
    )
    model = tiny_models.seeded_model(
        Qwen2_5_VLForConditionalGeneration, config, seed, tokenizer, torch.float32, "sdpa"
    )
    return model, processor


def build_qwen3_vl(seed: int = 0):
    """``(model, processor)``: the tiny Qwen3-VL, 128 wide, float32, identical for equal seeds."""
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from vtcompress.integrations.qwen3_vl import processing, tiny

    tokenizer = tiny.build_tokenizer()
    config = tiny.build_config(tokenizer)
    _text_sizes(config.text_config, [8, 4, 4])
    config.vision_config.out_hidden_size = TEXT_HIDDEN
    image = processing.image_processor()
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**image.to_dict()),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(
            patch_size=processing.PATCH,
            image_mean=processing.IMAGE_MEAN,
            image_std=processing.IMAGE_STD,
            size={"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS},
        ),
        chat_template=tiny.CHAT_TEMPLATE,
    )
    model = tiny_models.seeded_model(
        Qwen3VLForConditionalGeneration, config, seed, tokenizer, torch.float32, "sdpa"
    )
    return model, processor


BUILDERS = {"qwen2_5_vl": build_qwen2_5_vl, "qwen3_vl": build_qwen3_vl}


def save_tiny_qwen_for_vllm(family: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Save the tiny ``family`` ("qwen2_5_vl" or "qwen3_vl") model and processor to ``path``."""
    path = Path(path)
    model, processor = BUILDERS[family](seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
