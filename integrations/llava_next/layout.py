"""LLaVA-NeXT "anyres" layout: which tokens of which view exist.

An image becomes view 0 (the thumbnail, a ``side x side`` grid) plus ``rows x cols`` crops in
row-major order, each ``side x side``. The crops tile a full grid of ``rows*side x cols*side``
tokens, of which LLaVA-NeXT keeps only the rectangle not covered by letterbox padding
("unpadding"). Stock packing (:mod:`vtcompress.packing`) is: thumbnail tokens, then the unpadded full grid in
raster order with one ``image_newline`` after each row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from transformers.image_processing_utils import select_best_resolution

from vtcompress.layout import GridLayout


@dataclass(frozen=True)
class AnyResLayout(GridLayout):
    """Geometry of one image's views.

    rows, cols: crop grid (0, 0 for a single-view image). side: tokens per view side (24 for
    CLIP ViT-L/14-336). valid_rows / valid_cols: the unpadded rectangle ``[start, stop)`` of the
    full crop grid.
    """

    rows: int
    cols: int
    side: int
    valid_rows: tuple[int, int] = (0, 0)
    valid_cols: tuple[int, int] = (0, 0)
    global_view: ClassVar[bool] = True
    patch_group: ClassVar[tuple[int, int]] = (1, 1)

    @classmethod
    def for_image(
        cls,
        image_size: tuple[int, int],
        grid_pinpoints: list[tuple[int, int]] | list[list[int]],
        view_px: int = 336,
        patch_px: int = 14,
    ) -> AnyResLayout:
        """Layout of an image of ``(height, width)`` pixels, as LLaVA-NeXT builds it."""
        h, w = int(image_size[0]), int(image_size[1])
        if h <= 0 or w <= 0:
            raise ValueError(f"image size must be positive, got {(h, w)}")
        side = view_px // patch_px
        ch, cw = select_best_resolution((h, w), [tuple(p) for p in grid_pinpoints])
        rows, cols = ch // view_px, cw // view_px
        return cls.from_grid(rows, cols, side, (h, w))

    @classmethod
    def for_config(cls, config: Any, image_size: tuple[int, int]) -> AnyResLayout:
        """Layout of an image of ``(height, width)`` pixels for a ``LlavaNextConfig``."""
        vision = config.vision_config
        return cls.for_image(image_size, config.image_grid_pinpoints, vision.image_size, vision.patch_size)

    @classmethod
    def from_grid(cls, rows: int, cols: int, side: int, image_size: tuple[int, int]) -> AnyResLayout:
        """Layout with a given crop grid, unpadded as transformers' ``unpad_image`` does."""
        full_h, full_w = rows * side, cols * side
        oh, ow = int(image_size[0]), int(image_size[1])
        top, bottom, left, right = 0, full_h, 0, full_w
        # Same arithmetic as transformers' unpad_image, so counts agree with the processor.
        if ow / oh > full_w / full_h:
            new_h = int(round(oh * (full_w / ow), 7))
            pad = (full_h - new_h) // 2
            top, bottom = pad, full_h - pad
        else:
            new_w = int(round(ow * (full_h / oh), 7))
            pad = (full_w - new_w) // 2
            left, right = pad, full_w - pad
        return cls(rows, cols, side, (top, bottom), (left, right))

    @classmethod
    def single_view(cls, side: int) -> AnyResLayout:
        return cls(0, 0, side)

    @property
    def view_grid(self) -> tuple[int, int]:
        return (self.side, self.side)
