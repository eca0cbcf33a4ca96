"""The llava package's anyres geometry (no model, no ``llava`` import: runs in every venv).

Expected counts were measured on the llava package's own models (tiny 112 px views, and the
LLaVA-1.6 arithmetic at 336 px); where transformers' LLaVA-NeXT counts differ, both are stated.
"""

from __future__ import annotations

import pytest
import torch

from vtcompress.integrations.llava_pkg.layout import LlavaPackageLayout, best_resolution
from vtcompress.packing import pack_views

TINY = [[112, 224], [224, 112], [224, 224], [336, 112], [112, 336]]
LLAVA_16 = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def visual_tokens(layout: LlavaPackageLayout) -> int:
    return layout.num_tokens() + layout.num_newlines()


@pytest.mark.parametrize(
    "size, grid, tokens",
    [
        ((200, 150), (2, 2), 268),
        ((150, 200), (2, 2), 272),
        ((300, 90), (1, 3), 264),
        ((500, 333), (2, 2), 234),
        ((112, 112), (2, 1), 136),  # a tie: llava takes width 112, height 224 (crops stacked)
        ((64, 64), (2, 1), 136),
        ((16, 18), (2, 1), 154),
        ((47, 376), (3, 1), 136),  # int() unpadding: transformers rounds and gets 184
    ],
)
def test_tiny_counts_match_the_llava_package(size, grid, tokens):
    layout = LlavaPackageLayout.for_image(size, TINY, 112, 14)
    assert (layout.rows, layout.cols) == grid
    assert visual_tokens(layout) == tokens


@pytest.mark.parametrize("size, tokens", [((110, 352), 1296), ((47, 1128), 792)])
def test_llava_16_counts_truncate_with_int(size, tokens):
    assert visual_tokens(LlavaPackageLayout.for_image(size, LLAVA_16, 336, 14)) == tokens


def test_pinpoints_may_be_a_string_and_sizes_are_width_height():
    assert best_resolution((1000, 400), [(336, 672), (672, 336)]) == (672, 336)
    as_text = LlavaPackageLayout.for_image((1000, 400), str(LLAVA_16), 336, 14)
    assert as_text == LlavaPackageLayout.for_image((1000, 400), LLAVA_16, 336, 14)
    assert (as_text.rows, as_text.cols) == (1, 3)  # 1008 x 336 shows the most of it


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="positive"):
        LlavaPackageLayout.for_image((0, 10), TINY, 112, 14)


def test_single_view_layouts():
    one_five = LlavaPackageLayout.single_view(24, newline=False)
    assert one_five.num_tokens() == 576 and one_five.num_newlines() == 0 and not one_five.has_crops
    assert LlavaPackageLayout.single_view(24, newline=True).num_newlines() == 1


def test_pack_orders_crops_in_raster_order_with_newlines():
    layout = LlavaPackageLayout(1, 2, 2, (0, 2), (0, 4))  # 2 crops of 2x2 side by side
    thumb = torch.zeros(2, 1)
    crops = [torch.tensor([[10.0], [13.0]]), torch.tensor([[21.0], [22.0]])]
    positions = [torch.tensor([3, 0]), torch.tensor([0, 3]), torch.tensor([1, 2])]
    out = pack_views(layout, positions, [thumb, *crops], torch.tensor([-1.0]))
    # thumbnail in the given order; full-grid row 0: crop 1 col 0 (10), crop 2 col 3 (21), newline;
    # row 1: crop 1 col 1 (13), crop 2 col 2 (22), newline
    assert out.flatten().tolist() == [0, 0, 10, 21, -1, 13, 22, -1]
    none = pack_views(layout, positions, [thumb, *crops], torch.tensor([-1.0]), "none")
    assert none.flatten().tolist() == [0, 0, 10, 21, 13, 22]


def test_divergences_from_transformers_llava_next():
    """The same image, two codebases: the tie order and the unpad rounding differ."""
    # transformers < 4.39 lacks the select_best_resolution that host imports
    hf = pytest.importorskip("vtcompress.integrations.llava_next.layout", exc_type=ImportError)
    tie = hf.AnyResLayout.for_image((112, 112), TINY, 112, 14)  # transformers: (height, width)
    assert (tie.rows, tie.cols) == (1, 2)
    assert (LlavaPackageLayout.for_image((112, 112), TINY, 112, 14).cols) == 1
    hf_count = hf.AnyResLayout.for_image((352, 110), LLAVA_16, 336, 14)
    assert hf_count.num_tokens() + hf_count.num_newlines() == 1392
    # where both agree (every size in the cross-host test), the counts are equal
    for w, h in [(200, 150), (150, 200), (300, 90), (500, 333), (1000, 500)]:
        a = LlavaPackageLayout.for_image((w, h), TINY, 112, 14)
        b = hf.AnyResLayout.for_image((h, w), TINY, 112, 14)
        assert (a.rows, a.cols, a.valid_rows, a.valid_cols) == (b.rows, b.cols, b.valid_rows, b.valid_cols)
