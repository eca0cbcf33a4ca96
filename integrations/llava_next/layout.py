"""LLaVA-NeXT "anyres" layout: which tokens of which view exist, and how kept tokens are packed.

An image becomes view 0 (the thumbnail, a ``side x side`` grid) plus ``rows x cols`` crops in
row-major order, each ``side x side``. The crops tile a full grid of ``rows*side x cols*side``
tokens, of which LLaVA-NeXT keeps only the rectangle not covered by letterbox padding
("unpadding"). Stock packing is: thumbnail tokens, then the unpadded full grid in raster order
with one ``image_newline`` after each row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from transformers.image_processing_utils import select_best_resolution

from vtcompress.batch import CompressedImage, pack_selected
from vtcompress.layout import GridLayout, NewlinePolicy


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

    def num_newlines(self, policy: NewlinePolicy = "unpadded") -> int:
        """Newline tokens that packing adds. A single-view image gets one, as in LLaVA-NeXT."""
        if not self.has_crops:
            return 1
        if policy == "unpadded":
            return self.unpadded_shape[0]
        if policy == "padded":
            return self.rows * self.side
        return 0


def _grid_keys(layout: AnyResLayout, views: Tensor, index: Tensor, width: int) -> Tensor:
    """Raster keys ``row * (width + 1) + col`` in the full crop grid of token ``index`` of crop
    ``views`` (>= 1), both long CPU tensors of the same length."""
    crop = views - 1
    row = (crop // layout.cols) * layout.side + index // layout.side
    col = (crop % layout.cols) * layout.side + index % layout.side
    return row * (width + 1) + col


def pack_views(
    layout: AnyResLayout,
    positions: list[Tensor],
    features: list[Tensor],
    newline: Tensor | None,
    policy: NewlinePolicy = "unpadded",
) -> Tensor:
    """Assemble one image's token sequence from per-view kept tokens.

    Args:
        positions: per view, long [k_v] token positions in that view's ``side x side`` grid.
            Thumbnail tokens are emitted in the given order; crop tokens in full-grid raster order.
        features: per view, [k_v, D] features of those tokens.
        newline: [D] LLaVA-NeXT ``image_newline`` or None (no newlines at all).
    Returns:
        [T, D]: thumbnail tokens, then crop tokens with newlines placed by ``policy``. With every
        valid token kept and policy "unpadded" this is exactly LLaVA-NeXT's own packing.
    """
    thumb = features[0]
    if not layout.has_crops:
        if newline is None:
            return thumb
        return torch.cat([thumb, newline[None].to(thumb)], dim=0)

    # The order is worked out on the CPU from the (small) positions; the features then move
    # once: one cat of every kept row (newline last) and one gather in packing order.
    dtype, device = thumb.dtype, thumb.device
    width = layout.cols * layout.side
    pos = _to_cpu(positions)
    counts = [len(p) for p in pos]
    crop_index = torch.cat(pos[1:]) if len(pos) > 1 else torch.empty(0, dtype=torch.long)
    crop_views = torch.repeat_interleave(
        torch.arange(1, len(pos)), torch.tensor(counts[1:], dtype=torch.long)
    )
    crop_keys = _grid_keys(layout, crop_views, crop_index.long(), width)
    rows_out = torch.arange(counts[0], len(crop_keys) + counts[0])  # rows in the cat of features
    rows = []
    table = list(features)
    if newline is not None and policy != "none":
        rows = (
            torch.arange(*layout.valid_rows)
            if policy == "unpadded"
            else torch.arange(layout.rows * layout.side)
        )
        # A row's newline sorts after every token of that row; every newline reads the last row.
        crop_keys = torch.cat([crop_keys, rows * (width + 1) + width])
        rows_out = torch.cat([rows_out, torch.full((len(rows),), sum(counts), dtype=torch.long)])
        table.append(newline.to(device, dtype)[None])
    order = torch.argsort(crop_keys, stable=True)
    index = torch.cat([torch.arange(counts[0]), rows_out[order]])
    return torch.cat(table, dim=0).index_select(0, index.to(device))


def _to_cpu(positions: list[Tensor]) -> list[Tensor]:
    """The positions on the CPU, with at most one device -> host copy for all views."""
    if all(p.device.type == "cpu" for p in positions):
        return list(positions)
    flat = torch.cat([p.reshape(-1).long() for p in positions]).cpu()
    return list(flat.split([p.numel() for p in positions]))


def pack_images(
    images: list[CompressedImage], newline: Tensor | None, policy: NewlinePolicy = "unpadded"
) -> list[Tensor]:
    """Every image's packed sequence ([T_i, D] each, as :func:`pack_views` packs it).

    Images compressed together (one :class:`~vtcompress.batch.SelectedBatch`) are packed at once,
    with no read back to the host; the others one by one.
    """
    out: list[Tensor | None] = [None] * len(images)
    groups: dict[int, list[int]] = {}
    for i, im in enumerate(images):
        if im.batch is not None:
            groups.setdefault(id(im.batch), []).append(i)
        else:
            views = im.views
            out[i] = pack_views(
                im.layout, [o.positions for o in views], [o.features for o in views], newline, policy
            )
    for members in groups.values():
        packed = pack_selected(images[members[0]].batch, newline, policy).unbind(0)
        for i in members:
            out[i] = packed[images[i].row]
    return out
