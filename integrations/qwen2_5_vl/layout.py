"""Qwen2.5-VL's layout: one view per image, the grid of merged tokens, no global view.

The processor resizes each image to multiples of 28 px and the 2x2 patch merger turns every
2x2 block of 14 px patches into one token, so an image of ``rows x cols`` merged tokens is one
view whose tokens all exist (no letterbox), in raster order -- the order of the placeholders in
the prompt and of the model's 3-D rotary positions. ``patch_group`` is (2, 2): the patches a
token merges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vtcompress.integrations.qwen2_5_vl.processing import MAX_PIXELS, MIN_PIXELS, merged_grid
from vtcompress.layout import GridLayout


@dataclass(frozen=True)
class Qwen2_5_VLLayout(GridLayout):
    """One image: a single ``grid`` = (rows, cols) view of merged tokens."""

    grid: tuple[int, int]
    rows: ClassVar[int] = 1
    cols: ClassVar[int] = 1
    global_view: ClassVar[bool] = False
    patch_group: ClassVar[tuple[int, int]] = (2, 2)

    @classmethod
    def for_image(
        cls, image_size: tuple[int, int], min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
    ) -> Qwen2_5_VLLayout:
        """Layout of an image of ``(height, width)`` pixels under the processor's pixel limits."""
        return cls(merged_grid(image_size, min_pixels, max_pixels))

    @classmethod
    def from_grid_thw(cls, grid_thw: tuple[int, int, int], merge: int = 2) -> Qwen2_5_VLLayout:
        """Layout of one row of the processor's ``image_grid_thw`` (t, h, w in patches)."""
        t, h, w = (int(x) for x in grid_thw)
        if t != 1:
            raise ValueError(f"an image has one temporal patch, got image_grid_thw {(t, h, w)}")
        return cls((h // merge, w // merge))

    @property
    def view_grid(self) -> tuple[int, int]:
        return self.grid

    def view_names(self) -> list[str]:
        return ["image"]
