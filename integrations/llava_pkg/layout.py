"""The views of one image as the original LLaVA codebase (``llava`` package) builds them.

LLaVA-1.6 ``anyres`` (``mm_patch_merge_type="spatial_unpad"``): view 0 is the whole image
squashed to one view, then ``rows x cols`` crops in row-major order, each ``side x side``
tokens. The crops tile a full grid of which only the letterbox-free rectangle is kept, packed in
raster order with ``image_newline`` after each row. LLaVA-1.5 (``pad`` / ``square``): one view,
no newline.

The arithmetic is the ``llava`` package's own, which differs from transformers' LLaVA-NeXT in two
places (so counts can differ between the two codebases for the same image):

* sizes and grid pinpoints are read as (width, height); transformers reads (height, width). A
  symmetric pinpoint list mirrors the choice, except for ties, which each breaks by list order;
* the unpadded side is truncated with ``int()``; transformers rounds to 7 decimals first.

This module imports no transformers (the ``llava`` package runs on transformers 4.x).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import ClassVar

from vtcompress.layout import GridLayout


def parse_pinpoints(grid_pinpoints: str | list) -> list[tuple[int, int]]:
    """Pinpoints as (width, height) pairs; the config may hold a list or its string form."""
    points = ast.literal_eval(grid_pinpoints) if isinstance(grid_pinpoints, str) else grid_pinpoints
    return [(int(w), int(h)) for w, h in points]


def best_resolution(size: tuple[int, int], pinpoints: list[tuple[int, int]]) -> tuple[int, int]:
    """The (width, height) pinpoint that shows most of an image of ``size`` = (width, height)
    pixels after an aspect-preserving resize, the least wasted area breaking ties, then list order."""
    w, h = size
    best, best_shown, best_waste = pinpoints[0], -1, float("inf")
    for pw, ph in pinpoints:
        scale = min(pw / w, ph / h)
        shown = min(int(w * scale) * int(h * scale), w * h)
        waste = pw * ph - shown
        if shown > best_shown or (shown == best_shown and waste < best_waste):
            best, best_shown, best_waste = (pw, ph), shown, waste
    return best


@dataclass(frozen=True)
class LlavaPackageLayout(GridLayout):
    """Geometry of one image's views.

    rows, cols: crop grid (0, 0 for a single-view image). side: tokens per view side (24 for
    CLIP ViT-L/14-336). valid_rows / valid_cols: the kept rectangle ``[start, stop)`` of the full
    crop grid. newline: whether a single-view image ends with one ``image_newline`` (anyres
    models do, LLaVA-1.5 does not). Kept tokens are packed by :mod:`vtcompress.packing`, as
    the ``llava`` package packs them.
    """

    rows: int
    cols: int
    side: int
    valid_rows: tuple[int, int] = (0, 0)
    valid_cols: tuple[int, int] = (0, 0)
    newline: bool = True
    global_view: ClassVar[bool] = True
    patch_group: ClassVar[tuple[int, int]] = (1, 1)

    @classmethod
    def for_image(
        cls, image_size: tuple[int, int], grid_pinpoints: str | list, view_px: int, patch_px: int
    ) -> LlavaPackageLayout:
        """Anyres layout of an image of ``image_size`` = (width, height) pixels (PIL's ``.size``)."""
        w, h = int(image_size[0]), int(image_size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"image size (width, height) must be positive, got {(w, h)}")
        pw, ph = best_resolution((w, h), parse_pinpoints(grid_pinpoints))
        rows, cols, side = ph // view_px, pw // view_px, view_px // patch_px
        full_h, full_w = rows * side, cols * side
        top, bottom, left, right = 0, full_h, 0, full_w
        if w / h > full_w / full_h:  # wider than the grid: rows of letterbox at top and bottom
            pad = (full_h - int(h * (full_w / w))) // 2
            top, bottom = pad, full_h - pad
        else:
            pad = (full_w - int(w * (full_h / h))) // 2
            left, right = pad, full_w - pad
        return cls(rows, cols, side, (top, bottom), (left, right))

    @classmethod
    def single_view(cls, side: int, newline: bool) -> LlavaPackageLayout:
        return cls(0, 0, side, newline=newline)

    @property
    def view_grid(self) -> tuple[int, int]:
        return (self.side, self.side)

    @property
    def single_view_newline(self) -> bool:
        return self.newline
