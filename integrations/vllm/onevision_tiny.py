"""A tiny random LLaVA-OneVision checkpoint that vLLM loads, images and videos (tests, benchmarks).

The model is :func:`vtcompress.integrations.llava_onevision.tiny.build_tiny_onevision` with the
two changes vLLM (0.32, CPU) needs, as for LLaVA-NeXT (:mod:`vtcompress.integrations.vllm.tiny`):
32-wide text attention heads and the published llava-hf key layout. The processor is the full
``LlavaOnevisionProcessor``, with a video processor built from the image processor's settings
(vLLM's OneVision processor calls it for videos; it needs torchvision, which vLLM installs).
The same directory loads in transformers, so both runtimes see identical weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from vtcompress.integrations.vllm.tiny import TEXT_HIDDEN, llava_hf_key


def save_tiny_onevision_for_vllm(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save the tiny OneVision (llava-hf key layout) and its image+video processor to ``path``."""
    from safetensors.torch import load_file, save_file
    from transformers import LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    from vtcompress.integrations.llava_onevision.tiny import build_tiny_onevision

    path = Path(path)
    model, processor = build_tiny_onevision(seed, hidden_size=TEXT_HIDDEN, intermediate_size=2 * TEXT_HIDDEN)
    model.save_pretrained(path)
    images = processor.image_processor
    videos = LlavaOnevisionVideoProcessor(
        size={"height": images.size["height"], "width": images.size["width"]},
        image_mean=list(images.image_mean),
        image_std=list(images.image_std),
        rescale_factor=images.rescale_factor,
    )
    full = LlavaOnevisionProcessor(
        image_processor=images,
        tokenizer=processor.tokenizer,
        video_processor=videos,
        num_image_tokens=processor.num_image_tokens,
        vision_feature_select_strategy=processor.vision_feature_select_strategy,
        chat_template=processor.chat_template,
        vision_aspect_ratio=processor.vision_aspect_ratio,
    )
    full.save_pretrained(path)
    weights = path / "model.safetensors"
    state = load_file(weights)
    save_file({llava_hf_key(k): v.contiguous() for k, v in state.items()}, weights, metadata={"format": "pt"})
    return path
