import pytest
import torch

from tests.conftest import IMAGE_SIZES
from vtcompress.budget import keep_count, split_budget
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_next.tiny import PINPOINTS, build_processor
from vtcompress.packing import pack_views


@pytest.mark.parametrize(
    "size", list(IMAGE_SIZES.values()) + [(337, 100), (100, 1500), (2000, 2000), (40, 40)]
)
def test_layout_counts_match_the_processor(size):
    processor = build_processor()
    w, h = size
    expected = processor._get_number_of_features(h, w, 336, 336) - 1  # the processor counts [CLS] once
    layout = AnyResLayout.for_image((h, w), PINPOINTS)
    assert layout.num_tokens() + layout.num_newlines("unpadded") == expected


def test_pack_with_everything_kept_is_stock_llava_next_packing(tiny):
    from vtcompress.tokens import ImageTokens, keep_all

    model, _ = tiny
    torch.manual_seed(0)
    for h, w in [(300, 500), (900, 300), (672, 672)]:
        layout = AnyResLayout.for_image((h, w), PINPOINTS)
        feats = torch.randn(layout.num_views, 576, 64)
        newline = torch.randn(64)
        stock, _ = type(model.model).pack_image_features(
            model.model, [feats], torch.tensor([[h, w]]), "default", newline
        )
        outs = keep_all(ImageTokens(feats, layout))
        ours = pack_views(
            layout, [o.positions for o in outs], [o.features for o in outs], newline, "unpadded"
        )
        assert torch.equal(ours, stock[0])


def test_pack_places_newlines_by_policy_and_keeps_raster_order():
    layout = AnyResLayout.from_grid(1, 2, 2, (2, 2))  # full grid 2x4, a square image: cols [1, 3) survive
    assert layout.valid_cols == (1, 3) and layout.valid_rows == (0, 2)
    feats = torch.arange(3 * 4, dtype=torch.float32).view(3, 4, 1)
    positions = [torch.tensor([3, 0]), torch.tensor([3]), torch.tensor([0, 2])]  # crop tokens given unordered
    nl = torch.tensor([-1.0])
    seq = pack_views(layout, positions, [feats[v, p] for v, p in enumerate(positions)], nl, "unpadded")
    # thumbnail as given; crops in full-grid raster order: row 0 -> crop2 pos0 (8); row 1 -> crop1 pos3 (7), crop2 pos2 (10)
    assert seq.flatten().tolist() == [3, 0, 8, -1, 7, 10, -1]
    padded = pack_views(layout, positions, [feats[v, p] for v, p in enumerate(positions)], nl, "padded")
    assert padded.flatten().tolist() == [3, 0, 8, -1, 7, 10, -1]  # 2 padded rows == 2 unpadded rows here
    none = pack_views(layout, positions, [feats[v, p] for v, p in enumerate(positions)], nl, "none")
    assert none.flatten().tolist() == [3, 0, 8, 7, 10]


def test_keep_count_rule():
    assert keep_count(576, 0.25) == 144
    assert keep_count(576, 0.1) == 57
    assert keep_count(100, 0.29) == 29  # no float-error off-by-one
    assert keep_count(10, 0.01) == 1  # never zero for a non-empty view
    assert keep_count(0, 0.5) == 0
    assert keep_count(7, 1.0) == 7


def test_split_budget_is_exact_proportional_and_capped():
    assert split_budget(10, [1, 1], [10, 10]) == [5, 5]
    # shares 7.5 : 2.5 -> floors 7 : 2; the leftover goes to the tie of fractions at the lower index
    assert split_budget(10, [3, 1], [10, 10]) == [8, 2]
    alloc = split_budget(100, [10, 1, 1], [20, 100, 100])
    assert alloc[0] == 20 and sum(alloc) == 100 and alloc[1] == alloc[2] == 40
    assert split_budget(1000, [1, 2], [3, 4]) == [3, 4]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(1, 8, (1,), generator=gen))
        caps = torch.randint(0, 50, (n,), generator=gen).tolist()
        weights = torch.rand(n, generator=gen).tolist()
        total = int(torch.randint(0, 200, (1,), generator=gen))
        alloc = split_budget(total, weights, caps)
        assert sum(alloc) == min(total, sum(caps))
        assert all(0 <= a <= c for a, c in zip(alloc, caps))
