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

import torch
from torch import Tensor

from vtcompress.layout import GridLayout, NewlinePolicy


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
    models do, LLaVA-1.5 does not).
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

    def num_newlines(self, policy: NewlinePolicy = "unpadded") -> int:
        """Newline tokens that packing adds with ``policy``."""
        if not self.has_crops:
            return int(self.newline)
        if policy == "unpadded":
            return self.unpadded_shape[0]
        if policy == "padded":
            return self.rows * self.side
        return 0


def pack_image(
    layout: LlavaPackageLayout,
    positions: list[Tensor],
    features: list[Tensor],
    newline: Tensor | None,
    policy: NewlinePolicy = "unpadded",
) -> Tensor:
    """One image's token sequence from its per-view kept tokens.

    Args:
        positions: per view, long [k_v] positions in that view's ``side x side`` grid.
        features: per view, [k_v, D].
        newline: [D] ``image_newline`` (None: the model has none).
    Returns:
        [T, D]: view 0's tokens in the given order, then the crops' tokens in full-grid raster
        order with a newline after each row that ``policy`` names ("unpadded": the kept rows;
        "padded": every row of the full grid; "none"). Every token kept with "unpadded" gives the
        ``llava`` package's own sequence.
    """
    base = features[0]
    if not layout.has_crops:
        if newline is None or not layout.newline:
            return base
        return torch.cat([base, newline[None].to(base)])
    side, width = layout.side, layout.cols * layout.side
    keys = []  # raster key in a grid one column wider (the newline column)
    for v in range(1, len(positions)):
        p = positions[v].detach().long().cpu()
        crop_row, crop_col = divmod(v - 1, layout.cols)
        keys.append((crop_row * side + p // side) * (width + 1) + crop_col * side + p % side)
    table = list(features[1:])
    if newline is not None and policy != "none":
        lines = torch.arange(*layout.valid_rows) if policy == "unpadded" else torch.arange(layout.rows * side)
        keys.append(lines * (width + 1) + width)
        table.append(newline.to(base)[None].expand(len(lines), -1))
    crops = torch.cat(table)
    order = torch.argsort(torch.cat(keys), stable=True).to(crops.device)
    return torch.cat([base, crops.index_select(0, order)])
