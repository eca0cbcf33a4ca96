"""LLaVA-OneVision geometry: the count rule from image size alone, against published numbers
and the real processor, and the tiles a shrunk crop map is cut into."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_image
from vtcompress.budget import keep_count
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout, max_crops, tile_map

# (H, W) -> (LM crop grid, placeholder tokens): real OneVision geometry (36 pinpoints,
# anyres_max_9), read off transformers 5.24's model and processor, not computed by this code.
PUBLISHED = {
    (384, 384): ((27, 27), 1485),
    (480, 640): ((40, 54), 2929),
    (300, 1000): ((25, 81), 2779),
    (1000, 300): ((81, 25), 2835),
    (768, 1024): ((54, 73), 4725),
    (1080, 1920): ((60, 108), 7269),
    (3000, 4000): ((70, 93), 7309),
    (2000, 2000): ((81, 81), 7371),
    (1152, 1152): ((81, 81), 7371),
}


@pytest.mark.parametrize("size", list(PUBLISHED), ids=lambda s: f"{s[0]}x{s[1]}")
def test_layout_gives_the_lm_crop_grid_and_placeholder_count(size):
    layout = OneVisionLayout.for_image(size)
    grid, placeholders = PUBLISHED[size]
    assert layout.unpadded_shape == grid
    assert layout.num_tokens() == 729 + grid[0] * grid[1]
    assert layout.num_newlines() == grid[0]
    assert layout.num_tokens() + layout.num_newlines() == placeholders


@pytest.mark.parametrize("size", [(480, 640), (1080, 1920), (300, 1000), (7, 2500)], ids=str)
def test_count_rule_matches_the_processor(size):
    from vtcompress.integrations.llava_onevision.tiny import build_processor, build_tokenizer

    processor = build_processor(build_tokenizer())
    h, w = size
    ids = processor(images=[make_image(w, h)], text=["<image>hi"], return_tensors="pt")["input_ids"]
    layout = OneVisionLayout.for_image(size)
    assert int((ids == processor.image_token_id).sum()) == layout.num_tokens() + layout.num_newlines()


def test_a_shrunk_map_becomes_tiles_and_a_small_one_keeps_its_crops():
    shrunk = OneVisionLayout.for_image((1080, 1920))
    assert shrunk.resampled_from == (75, 135)  # unpadded 3 x 5 crops, then anyres_max_9
    assert (shrunk.rows, shrunk.cols) == (3, 4)  # ceil(60 / 27) x ceil(108 / 27) tiles
    assert (shrunk.valid_rows, shrunk.valid_cols) == ((10, 70), (0, 108))  # centred in 81 x 108
    assert shrunk.view_names()[:3] == ["thumbnail", "tile 0,0", "tile 0,1"]
    # 60 rows = 17 in the top row of tiles, 27 in the middle one, 16 in the bottom one
    assert shrunk.view_counts() == [729] + [17 * 27] * 4 + [729] * 4 + [16 * 27] * 4
    small = OneVisionLayout.for_image((480, 640))
    assert small.resampled_from is None and (small.rows, small.cols) == (2, 2)
    assert (small.valid_rows, small.valid_cols) == ((7, 47), (0, 54))  # letterbox rows removed


def test_tiles_hold_the_map_in_raster_order_and_zeros_around_it():
    crop_map = torch.randn(5, 30, 40)  # [D, R, C]
    layout = OneVisionLayout(2, 2, 27, (12, 42), (7, 47), resampled_from=(50, 60))
    tiles = tile_map(crop_map, layout)
    assert tiles.shape == (4, 729, 5)
    grid = tiles.view(2, 2, 27, 27, 5).permute(0, 2, 1, 3, 4).reshape(54, 54, 5)
    assert torch.equal(grid[12:42, 7:47], crop_map.permute(1, 2, 0))
    grid[12:42, 7:47] = 0
    assert not grid.any()
    with pytest.raises(ValueError, match="does not fit"):
        tile_map(torch.randn(5, 31, 40), layout)


def test_count_rule_for_a_ratio():
    layout = OneVisionLayout.for_image((1080, 1920))
    # ratio = kept / original visual tokens, newlines excluded: floor(0.25 * (729 + 60 * 108))
    assert keep_count(layout.num_tokens(), 0.25) == 1802


@pytest.mark.parametrize("bad", ["anyres", "pad", None])
def test_only_anyres_max_is_accepted(bad):
    with pytest.raises(ValueError, match="anyres_max_"):
        max_crops(bad)
