"""Qwen2.5-VL's layout: one view per image, the grid of merged tokens (14 px patches, 2x2
merged: one token per 28 x 28 px), no global view (see
:class:`~vtcompress.integrations.mrope_host.MergedGridLayout`).
"""

from __future__ import annotations

from dataclasses import dataclass

from vtcompress.integrations.mrope_host import MergedGridLayout
from vtcompress.integrations.qwen2_5_vl.processing import MAX_PIXELS, MIN_PIXELS, merged_grid


@dataclass(frozen=True)
class Qwen2_5_VLLayout(MergedGridLayout):
    """One image: a single ``grid`` = (rows, cols) view of merged tokens."""

    @classmethod
    def for_image(
        cls, image_size: tuple[int, int], min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
    ) -> Qwen2_5_VLLayout:
        """Layout of an image of ``(height, width)`` pixels under the processor's pixel limits."""
        return cls(merged_grid(image_size, min_pixels, max_pixels))
