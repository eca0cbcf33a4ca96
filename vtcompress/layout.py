"""LLaVA-NeXT "anyres" layout: which tokens of which view exist, and how kept tokens are packed.

An image becomes view 0 (the thumbnail, a ``side x side`` grid) plus ``rows x cols`` crops in
row-major order, each ``side x side``. The crops tile a full grid of ``rows*side x cols*side``
tokens, of which LLaVA-NeXT keeps only the rectangle not covered by letterbox padding
("unpadding"). Stock packing is: thumbnail tokens, then the unpadded full grid in raster order
with one ``image_newline`` after each row.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from transformers.image_processing_utils import select_best_resolution

NewlinePolicy = Literal["unpadded", "padded", "none"]
NEWLINE_POLICIES: tuple[str, ...] = ("unpadded", "padded", "none")


@dataclass(frozen=True)
class AnyResLayout:
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

    # --- derived geometry -------------------------------------------------------------------
    @property
    def has_crops(self) -> bool:
        return self.rows * self.cols > 0

    @property
    def num_views(self) -> int:
        return 1 + self.rows * self.cols

    @property
    def view_tokens(self) -> int:
        return self.side * self.side

    @property
    def unpadded_shape(self) -> tuple[int, int]:
        return (self.valid_rows[1] - self.valid_rows[0], self.valid_cols[1] - self.valid_cols[0])

    def crop_valid_mask(self, device: torch.device | str | None = None) -> Tensor:
        """[rows*cols, side*side] bool: which tokens of each crop survive unpadding (a fresh copy)."""
        return _crop_valid_mask(self).to(device, copy=True)

    def view_counts(self) -> list[int]:
        """Tokens per view that the uncompressed model sees (no newlines)."""
        return list(_view_counts(self))

    def num_tokens(self) -> int:
        """Visual tokens of the uncompressed image, newlines excluded."""
        return sum(self.view_counts())

    def num_newlines(self, policy: NewlinePolicy = "unpadded") -> int:
        """Newline tokens that packing adds. A single-view image gets one, as in LLaVA-NeXT."""
        if not self.has_crops:
            return 1
        if policy == "unpadded":
            return self.unpadded_shape[0]
        if policy == "padded":
            return self.rows * self.side
        return 0

    def full_grid_position(self, view: int, index: Tensor) -> tuple[Tensor, Tensor]:
        """Row and column in the full crop grid of token ``index`` (0..side²-1) of crop ``view`` (>= 1)."""
        crop = view - 1
        cr, cc = divmod(crop, self.cols)
        return cr * self.side + index // self.side, cc * self.side + index % self.side


# Cached tensors are built outside inference mode: an inference tensor could not be used later
# in a computation that autograd records.
@functools.lru_cache(maxsize=256)
@torch.inference_mode(False)
def _crop_valid_mask(layout: AnyResLayout) -> Tensor:
    """CPU [rows*cols, side*side] bool mask, computed once per layout (callers copy it)."""
    s = layout.side
    r = torch.arange(layout.rows * s)
    c = torch.arange(layout.cols * s)
    full = ((r >= layout.valid_rows[0]) & (r < layout.valid_rows[1]))[:, None] & (
        (c >= layout.valid_cols[0]) & (c < layout.valid_cols[1])
    )[None, :]
    # [rows*s, cols*s] -> [rows, s, cols, s] -> [rows, cols, s, s]
    return (
        full.view(layout.rows, s, layout.cols, s)
        .permute(0, 2, 1, 3)
        .reshape(layout.rows * layout.cols, s * s)
    )


@functools.lru_cache(maxsize=256)
def _view_counts(layout: AnyResLayout) -> tuple[int, ...]:
    if not layout.has_crops:
        return (layout.view_tokens,)
    return (layout.view_tokens, *_crop_valid_mask(layout).sum(1).tolist())


def _cached(fn, layout):
    """``fn(layout)`` through its per-layout cache when the layout is hashable (frozen dataclasses)."""
    try:
        return fn(layout)
    except TypeError:  # unhashable layout type: compute afresh
        return fn.__wrapped__(layout)


@functools.lru_cache(maxsize=256)
@torch.inference_mode(False)
def _view_positions(layout) -> tuple[Tensor, ...]:
    out = [torch.arange(layout.view_tokens)]
    if layout.has_crops:
        valid = layout.crop_valid_mask()
        out += [valid[j].nonzero().squeeze(1) for j in range(valid.shape[0])]
    return tuple(out)


def view_positions(layout) -> list[Tensor]:
    """Per view, CPU long positions of the tokens that exist after unpadding (raster order).

    Cached per layout: treat the tensors as read-only. Works for any layout with ``view_tokens``,
    ``has_crops`` and ``crop_valid_mask`` (AnyResLayout, DocOwl's layout).
    """
    return list(_cached(_view_positions, layout))


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
