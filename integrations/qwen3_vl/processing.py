"""Qwen3-VL's processor without torchvision, and its image-token count from the image size.

:class:`ImageOnlyQwen3VLProcessor` is ``Qwen3VLProcessor`` that may have no video processor (see
:mod:`vtcompress.integrations.image_only_processor`). Qwen3-VL uses the Qwen2-VL image processor
with 16 px patches, 2x2 merged: one token per 32 x 32 px.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from vtcompress.integrations.image_only_processor import OptionalVideoProcessor
from vtcompress.integrations.image_only_processor import load_processor as load_image_only

PATCH = 16
MERGE = 2
# Published Qwen3-VL preprocessor configs set shortest_edge 65536 (256 x 256 px) and
# longest_edge 16777216 (4096 x 4096 px); these defaults keep the published minimum and cap at
# 1280 tokens (as transformers' Qwen2-VL class default does at its own 28 px), so that the
# tiny model stays fast on a CPU. A checkpoint's own config always wins.
MIN_PIXELS = 65536
MAX_PIXELS = (PATCH * MERGE) ** 2 * 1280
IMAGE_MEAN = IMAGE_STD = [0.5, 0.5, 0.5]


class ImageOnlyQwen3VLProcessor(OptionalVideoProcessor, Qwen3VLProcessor):
    """``Qwen3VLProcessor`` that may have no video processor (images only, no torchvision)."""


def image_processor(**kwargs: Any) -> Qwen2VLImageProcessorPil:
    """The PIL image processor with Qwen3-VL's geometry and normalisation (``kwargs`` override)."""
    settings = dict(
        patch_size=PATCH,
        merge_size=MERGE,
        temporal_patch_size=2,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
    )
    return Qwen2VLImageProcessorPil(**{**settings, **kwargs})


def load_processor(path: str | os.PathLike, **kwargs: Any):
    """The checkpoint's processor (see :func:`vtcompress.integrations.image_only_processor.load_processor`)."""
    return load_image_only(path, ImageOnlyQwen3VLProcessor, Qwen2VLImageProcessorPil, **kwargs)


def merged_grid(
    image_size: tuple[int, int], min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """(rows, cols) of merged visual tokens of an image of ``(height, width)`` pixels.

    The processor resizes the image to multiples of 32 px (``smart_resize``: 16 px patches, 2x2
    merged) within ``[min_pixels, max_pixels]``; the model then sees ``rows * cols`` tokens.
    Raises ValueError for an aspect ratio above 200, as the processor does.
    """
    height, width = int(image_size[0]), int(image_size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {(height, width)}")
    factor = PATCH * MERGE
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return h // factor, w // factor
