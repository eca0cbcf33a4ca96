"""AnyRes layout geometry, derived by hand: unpadded region, per-view counts, newlines, positions."""

import pytest
import torch

from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.layout import view_positions

# 2x2 crops of 4x4 tokens over a wide image (3 x 8): the 8x8 grid keeps round(3 * 8 / 8) = 3 rows,
# padded by (8 - 3) // 2 = 2 on top, so rows [2, 6) survive (one extra row below, as in
# transformers' unpad_image).
WIDE = AnyResLayout.from_grid(2, 2, 4, (3, 8))
# 2x1 crops over a tall image (8 x 2): the 8x4 grid keeps 2 columns, padded by 1: columns [1, 3).
TALL = AnyResLayout.from_grid(2, 1, 4, (8, 2))


def test_unpadded_region():
    assert (WIDE.valid_rows, WIDE.valid_cols) == ((2, 6), (0, 8))
    assert (TALL.valid_rows, TALL.valid_cols) == ((0, 8), (1, 3))
    assert WIDE.unpadded_shape == (4, 8) and TALL.unpadded_shape == (8, 2)
    square = AnyResLayout.from_grid(1, 1, 4, (5, 5))
    assert (square.valid_rows, square.valid_cols) == ((0, 4), (0, 4))


def test_views_counts_and_newlines():
    assert WIDE.num_views == 5 and WIDE.view_tokens == 16 and WIDE.has_crops
    assert WIDE.view_counts() == [16, 8, 8, 8, 8]
    assert WIDE.num_tokens() == 48
    assert [WIDE.num_newlines(p) for p in ("unpadded", "padded", "none")] == [4, 8, 0]
    assert TALL.view_counts() == [16, 8, 8] and TALL.num_newlines() == 8
    single = AnyResLayout.single_view(4)
    assert single.num_views == 1 and not single.has_crops
    assert single.view_counts() == [16] and single.num_tokens() == 16
    assert [single.num_newlines(p) for p in ("unpadded", "padded", "none")] == [1, 1, 1]


def test_crop_valid_masks_and_positions():
    mask = WIDE.crop_valid_mask()
    assert mask.shape == (4, 16)
    top_crops = [False] * 8 + [True] * 8  # rows 2, 3 of the top crops
    bottom_crops = [True] * 8 + [False] * 8  # rows 0, 1 of the bottom crops
    assert mask.tolist() == [top_crops, top_crops, bottom_crops, bottom_crops]
    positions = view_positions(WIDE)
    assert [p.tolist() for p in positions] == [
        list(range(16)),
        list(range(8, 16)),
        list(range(8, 16)),
        list(range(8)),
        list(range(8)),
    ]
    tall = TALL.crop_valid_mask()
    assert tall[0].view(4, 4).tolist() == [[False, True, True, False]] * 4
    assert torch.equal(tall[0], tall[1])
    mask[0, 0] = True  # callers get a copy: the cached mask stays as it was
    assert not WIDE.crop_valid_mask()[0, 0]


def test_for_image_picks_the_grid_like_llava_next():
    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    assert AnyResLayout.for_image((500, 1000), pinpoints).rows == 1  # wide: 336 x 672 (h x w)
    assert AnyResLayout.for_image((500, 1000), pinpoints).cols == 2
    tall = AnyResLayout.for_image((900, 300), pinpoints)
    assert (tall.rows, tall.cols, tall.side) == (3, 1, 24)
    with pytest.raises(ValueError, match="positive"):
        AnyResLayout.for_image((0, 10), pinpoints)
