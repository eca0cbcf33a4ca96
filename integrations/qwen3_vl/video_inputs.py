"""Qwen3-VL model inputs for a clip, built from its frames without the video processor (which
needs torchvision): the tensors and the prompt ``Qwen3VLProcessor`` gives with
``Qwen3VLVideoProcessor`` at its defaults.

Pixels: the frames are resized (bicubic) to the size the video processor's ``smart_resize`` gives
for the whole clip (its pixel limits count every frame: the checkpoint's video processor's where
the processor has one, else ``VIDEO_MIN_PIXELS`` / ``VIDEO_MAX_PIXELS``), then cut into
``C x 2 x 16 x 16`` patches (:func:`vtcompress.integrations.mrope_video.frame_patches`).

Prompt: the image markup of the chat template is replaced by one entry per temporal patch,
``<{time:.1f} seconds><|vision_start|>`` + ``h' * w'`` video placeholders + ``<|vision_end|>``,
where ``time`` is the mean of the patch's two frame times (frame ``i`` at ``i * seconds_between``
s: the apps sample the first frame of the file first; an odd count repeats the last frame, as the
processor does). Deviation: the stock resize refuses a one-frame clip; here it is sized as the two
frames the model sees.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

from vtcompress.integrations.mrope_video import frame_patches
from vtcompress.integrations.prompt import chat_prompt
from vtcompress.integrations.qwen3_vl.prompt import (
    IMAGE_PROMPT,
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    VISION_END,
    VISION_START,
)

# Qwen3VLVideoProcessor's defaults: size shortest_edge / longest_edge (pixels of the whole clip),
# and the per-frame token ceiling of its optional cap.
VIDEO_MIN_PIXELS = 128 * 32 * 32
VIDEO_MAX_PIXELS = 768 * 32 * 32
MAX_VIDEO_TOKENS = 768


def video_pixel_limits(processor: Any, frames: int, factor: int) -> tuple[int, int]:
    """(min, max) pixels of a clip of ``frames`` frames: the checkpoint's video processor settings
    where the processor has one (loaded only with torchvision), else the class defaults; with its
    ``cap_pixels_per_frame`` on, the per-frame cap it applies."""
    video = getattr(processor, "video_processor", None)
    size = getattr(video, "size", None)
    low = getattr(size, "shortest_edge", None) or VIDEO_MIN_PIXELS
    high = getattr(size, "longest_edge", None) or VIDEO_MAX_PIXELS
    if getattr(video, "cap_pixels_per_frame", None):
        cap = getattr(video, "max_video_tokens", MAX_VIDEO_TOKENS) * factor * factor
        high = max(min(cap, high // frames), int(low * 1.05)) * frames
    return low, high


def clip_pixels(
    frames: list[Image.Image],
    image_processor: Any,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``(pixel_values_videos [t * h * w, C * 2 * 16 * 16], (t, h, w))`` for one clip; ``(t, h, w)``
    is its ``video_grid_thw`` row (temporal patches, 16-px patch rows and columns)."""
    temporal = image_processor.temporal_patch_size
    factor = image_processor.patch_size * image_processor.merge_size
    width, height = frames[0].size
    seen = max(len(frames), temporal)  # the stock resize refuses fewer frames than one temporal patch
    h, w = smart_resize(seen, height, width, temporal, factor, min_pixels, max_pixels)
    return frame_patches(frames, image_processor, h, w)


def timestamps(frames: int, seconds_between: float, temporal: int = 2) -> list[float]:
    """Per temporal patch, the mean time of its frames (frame ``i`` at ``i * seconds_between``;
    the last frame repeated up to a whole patch)."""
    times = [i * seconds_between for i in range(frames)]
    times += [times[-1]] * (-frames % temporal)
    return [sum(times[j : j + temporal]) / temporal for j in range(0, len(times), temporal)]


def clip_markup(grid: tuple[int, int, int], times: list[float], merge: int = 2) -> str:
    """The prompt text of a clip of ``video_grid_thw`` row ``grid``: per temporal patch its
    timestamp and its run of ``h * w / merge**2`` video placeholders between the vision markers."""
    t, h, w = grid
    run = VISION_START + VIDEO_TOKEN * (h * w // merge**2) + VISION_END
    return "".join(f"<{times[j]:.1f} seconds>" + run for j in range(t))


def video_inputs(
    model_config: Any, processor: Any, frames: list[Image.Image], question: str, seconds_between: float
) -> dict:
    """The model's inputs for one prompt: ``question`` about the clip ``frames`` (sampled
    ``seconds_between`` apart, the first at 0 s), in the processor's chat template."""
    ip = processor.image_processor
    factor = ip.patch_size * ip.merge_size
    low, high = video_pixel_limits(processor, len(frames), factor)
    pixels, grid = clip_pixels(frames, ip, low, high)
    markup = clip_markup(
        grid, timestamps(len(frames), seconds_between, ip.temporal_patch_size), ip.merge_size
    )
    text = chat_prompt(processor, question, 1)
    text = (
        text.replace(IMAGE_PROMPT, markup, 1)
        if IMAGE_PROMPT in text
        else text.replace(IMAGE_TOKEN, markup, 1)
    )
    enc = processor.tokenizer([text], return_tensors="pt")
    return dict(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        mm_token_type_ids=(enc["input_ids"] == model_config.video_token_id).long() * 2,
        pixel_values_videos=pixels,
        video_grid_thw=torch.tensor([grid]),
    )
