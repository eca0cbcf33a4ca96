"""Qwen2.5-VL model inputs for a clip, built from its frames without the video processor (which
needs torchvision): the same tensors as ``Qwen2VLVideoProcessor`` at its defaults.

Each frame is resized (bicubic) to the size ``smart_resize`` gives within the video pixel limits
(the checkpoint's video processor's where the processor has one, else ``VIDEO_MIN_PIXELS``,
``VIDEO_MAX_PIXELS``: multiples of 28 px), rescaled and normalised with the
image processor's mean and std; an odd frame count repeats the last frame (the temporal patch is 2
frames). Frames are cut into ``C x 2 x 14 x 14`` patches in the 2x2-merge order of the image
processor, which a still image goes through as two equal frames.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from vtcompress.integrations.mrope_video import frame_patches
from vtcompress.integrations.prompt import chat_prompt
from vtcompress.integrations.qwen2_5_vl.prompt import IMAGE_TOKEN
from vtcompress.integrations.qwen2_5_vl.tiny import VIDEO_TOKEN

# Qwen2VLVideoProcessor's default size (shortest_edge / longest_edge are pixel counts).
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28


def clip_pixels(
    frames: list[Image.Image],
    image_processor: Any,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``(pixel_values_videos [t * h * w, C * 2 * 14 * 14], (t, h, w))`` for one clip; ``(t, h, w)``
    is its ``video_grid_thw`` row (temporal patches, 14-px patch rows and columns)."""
    factor = image_processor.patch_size * image_processor.merge_size
    width, height = frames[0].size
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return frame_patches(frames, image_processor, h, w)


def video_pixel_limits(processor: Any) -> tuple[int, int]:
    """(min, max) pixels a frame is resized into: the checkpoint's video processor settings where
    the processor has one (it is loaded only with torchvision), else the class defaults."""
    size = getattr(getattr(processor, "video_processor", None), "size", None)
    low, high = getattr(size, "shortest_edge", None), getattr(size, "longest_edge", None)
    return (low or VIDEO_MIN_PIXELS, high or VIDEO_MAX_PIXELS)


def video_inputs(
    model_config: Any, processor: Any, frames: list[Image.Image], question: str, seconds_between: float
) -> dict:
    """The model's inputs for one prompt: ``question`` about the clip ``frames`` (sampled
    ``seconds_between`` apart), in the processor's chat template."""
    pixels, grid = clip_pixels(frames, processor.image_processor, *video_pixel_limits(processor))
    merge = processor.image_processor.merge_size
    run = VIDEO_TOKEN * (grid[0] * grid[1] * grid[2] // merge**2)
    text = chat_prompt(processor, question, 1).replace(IMAGE_TOKEN, run, 1)
    enc = processor.tokenizer([text], return_tensors="pt")
    video_id = model_config.video_token_id
    temporal = processor.image_processor.temporal_patch_size
    return dict(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        mm_token_type_ids=(enc["input_ids"] == video_id).long() * 2,
        pixel_values_videos=pixels,
        video_grid_thw=torch.tensor([grid]),
        second_per_grid_ts=torch.tensor([temporal * seconds_between]),
    )
