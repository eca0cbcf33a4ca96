"""LLaVA-OneVision "anyres_max" layout: the views a compressor sees, and the count rule.

An image becomes a base view (the whole image resized to 384x384: GlobalCom²'s thumbnail, 27x27
SigLIP tokens, no [CLS]) plus crops of the image resized into the best of 36 pinpoints. In the
language model the crops are ONE map: stitched, unpadded as in LLaVA-NeXT, then -- when the
unpadded map holds more than ``1.1**2 * max_crops`` crops' worth of tokens (``anyres_max_9``) --
shrunk by bilinear interpolation, and one ``image_newline`` ends each of its rows.

Compression happens AFTER that interpolation, on exactly the tokens the language model would
see, so every kept token is a real LM token and the count depends on the image size alone:

* ``N = 729 + R * C``, with ``R x C`` the LM crop map (the unpadded grid, shrunk when
  anyres_max applies): the processor's own placeholder count minus its ``R`` newlines;
* kept tokens ``= floor(ratio * N)`` (at least 1), newlines excluded; with the default newline
  policy the ``R`` newlines stay, so an image's placeholder run becomes ``floor(ratio * N) + R``;
* an image of a multi-image prompt is one 27x27 view (``N = 729``) plus one newline.

The crop map is handed to compressors as 27x27 views: the real crops when the map was not shrunk
(unpadded as LLaVA-NeXT's), else 27x27 tiles over the shrunk map (``resampled_from`` set), the
map centred in the tile grid (``valid_rows`` / ``valid_cols``; outer tiles may be partial). After
shrinking, an LM token is a bilinear mix of SigLIP patches, so it has no per-patch attention
score; the methods this host serves score the projected tokens themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from vtcompress.integrations.llava_next.layout import AnyResLayout

VIEW_PX, PATCH_PX = 384, 14
DEFAULT_PINPOINTS = [(VIEW_PX * i, VIEW_PX * j) for i in range(1, 7) for j in range(1, 7)]


def max_crops(vision_aspect_ratio: str) -> int:
    """The N of ``"anyres_max_N"`` (the only aspect-ratio mode OneVision's image path implements)."""
    prefix = "anyres_max_"
    if not (isinstance(vision_aspect_ratio, str) and vision_aspect_ratio.startswith(prefix)):
        raise ValueError(
            f"vision_aspect_ratio must be 'anyres_max_<N>' (OneVision checkpoints use 'anyres_max_9'), "
            f"got {vision_aspect_ratio!r}"
        )
    return int(vision_aspect_ratio[len(prefix) :])


def shrunk_shape(rows: int, cols: int, side: int, limit: int) -> tuple[int, int]:
    """The LM crop map of an unpadded ``rows x cols`` token map under ``anyres_max_<limit>``.

    The arithmetic is transformers' (model and processor agree on it): no change unless the map
    exceeds ``limit`` views by a factor over 1.1 in side length.
    """
    ratio = math.sqrt(rows * cols / (limit * side**2))
    if ratio > 1.1:
        return int(rows // ratio), int(cols // ratio)
    return rows, cols


@dataclass(frozen=True)
class OneVisionLayout(AnyResLayout):
    """Geometry of one OneVision image (see the module docstring).

    rows, cols: crops (or tiles of the shrunk map) of ``side x side`` tokens; (0, 0) for a
    single-view image. resampled_from: the unpadded crop map before anyres_max shrank it, or
    None when it was not shrunk.
    """

    resampled_from: tuple[int, int] | None = None

    @classmethod
    def for_image(
        cls,
        image_size: tuple[int, int],
        grid_pinpoints: list[tuple[int, int]] | list[list[int]] | None = None,
        view_px: int = VIEW_PX,
        patch_px: int = PATCH_PX,
        vision_aspect_ratio: str = "anyres_max_9",
    ) -> OneVisionLayout:
        """Layout of an image of ``(height, width)`` pixels, as an anyres (single-image) sample:
        LLaVA-NeXT's, then shrunk per ``vision_aspect_ratio``.

        ``grid_pinpoints`` default: OneVision's 36 (384i, 384j), i, j in 1..6. ``layout.num_tokens()``
        is the N of the count rule and ``layout.num_newlines()`` the newlines.
        """
        if grid_pinpoints is None:
            grid_pinpoints = DEFAULT_PINPOINTS
        base = AnyResLayout.for_image(image_size, grid_pinpoints, view_px, patch_px)
        rows, cols = base.unpadded_shape
        new_rows, new_cols = shrunk_shape(rows, cols, base.side, max_crops(vision_aspect_ratio))
        if (new_rows, new_cols) == (rows, cols):
            return cls(base.rows, base.cols, base.side, base.valid_rows, base.valid_cols)
        # Tiles cover the shrunk map centred, as the real crops cover the letterboxed image, so the
        # thumbnail's equal regions (GlobalCom²) meet the tiles about where crops would be.
        side = base.side
        tiles_h, tiles_w = -(-new_rows // side), -(-new_cols // side)
        top, left = (tiles_h * side - new_rows) // 2, (tiles_w * side - new_cols) // 2
        return cls(tiles_h, tiles_w, side, (top, top + new_rows), (left, left + new_cols), (rows, cols))

    @classmethod
    def single_view(cls, side: int = VIEW_PX // PATCH_PX) -> OneVisionLayout:
        return cls(0, 0, side)

    def view_names(self) -> list[str]:
        if self.resampled_from is None:
            return super().view_names()
        tiles = [f"tile {r},{c}" for r in range(self.rows) for c in range(self.cols)]
        return [self.global_name, *tiles]


def tile_map(crop_map: Tensor, layout: OneVisionLayout) -> Tensor:
    """Cut an LM crop map into the layout's ``side x side`` tiles, zeros around the map.

    Args:
        crop_map: [D, R, C] (transformers' layout of the stitched, unpadded, shrunk crops), R x C
            the layout's ``unpadded_shape``.
    Returns:
        [rows * cols, side*side, D], tiles in row-major order, raster inside; the map sits at
        ``valid_rows`` x ``valid_cols`` of the tile grid.
    """
    d = crop_map.shape[0]
    side, (top, bottom), (left, right) = layout.side, layout.valid_rows, layout.valid_cols
    if tuple(crop_map.shape[1:]) != (bottom - top, right - left):
        raise ValueError(
            f"crop map {tuple(crop_map.shape[1:])} does not fit the layout's {layout.unpadded_shape}"
        )
    pad = (left, layout.cols * side - right, top, layout.rows * side - bottom)
    padded = F.pad(crop_map, pad)
    # [D, rows*side, cols*side] -> [rows, cols, side, side, D]
    tiles = padded.view(d, layout.rows, side, layout.cols, side).permute(1, 3, 2, 4, 0)
    return tiles.reshape(layout.num_crops, side * side, d)
