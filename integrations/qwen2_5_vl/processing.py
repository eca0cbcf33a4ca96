"""Qwen2.5-VL's processor without torchvision (:class:`ImageOnlyQwen2_5_VLProcessor`, see
:mod:`vtcompress.integrations.image_only_processor`), and its image-token count from the image size.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from vtcompress.integrations.image_only_processor import OptionalVideoProcessor
from vtcompress.integrations.image_only_processor import load_processor as load_image_only

PATCH = 14
MERGE = 2
# The class defaults of transformers' Qwen2-VL image processor (published Qwen2.5-VL
# checkpoints set max_pixels = 28 * 28 * 16384 in their preprocessor config).
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280


class ImageOnlyQwen2_5_VLProcessor(OptionalVideoProcessor, Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` that may have no video processor (images only, no torchvision)."""


def load_processor(path: str | os.PathLike, **kwargs: Any):
    """The checkpoint's processor (see :func:`vtcompress.integrations.image_only_processor.load_processor`)."""
    return load_image_only(path, ImageOnlyQwen2_5_VLProcessor, Qwen2VLImageProcessorPil, **kwargs)


def merged_grid(
    image_size: tuple[int, int], min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """(rows, cols) of merged visual tokens of an image of ``(height, width)`` pixels.

    The processor resizes the image to multiples of 28 px (``smart_resize``: 14 px patches, 2x2
    merged) within ``[min_pixels, max_pixels]``; the model then sees ``rows * cols`` tokens.
    Raises ValueError for an aspect ratio above 200, as the processor does.
    """
    height, width = int(image_size[0]), int(image_size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {(height, width)}")
    factor = PATCH * MERGE
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return h // factor, w // factor


def pixel_limits(processor: Any) -> tuple[int, int]:
    """(min_pixels, max_pixels) a processor (or its image processor) resizes images into."""
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "size", None) or {}
    get = size.get if isinstance(size, dict) else lambda k, d=None: getattr(size, k, d)
    low = get("shortest_edge") or getattr(image_processor, "min_pixels", None) or MIN_PIXELS
    high = get("longest_edge") or getattr(image_processor, "max_pixels", None) or MAX_PIXELS
    return int(low), int(high)
