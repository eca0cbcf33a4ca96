"""Which tokens GlobalCom² keeps, on crafted score maps (the pure compressor, no model)."""

import pytest
import torch

from vtcompress.budget import keep_count
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.layout import view_positions
from vtcompress.methods.globalcom2 import GlobalCom2Config, globalcom2
from vtcompress.tokens import ImageTokens, LayerQK


def tokens(scores: torch.Tensor, layout: AnyResLayout) -> ImageTokens:
    """ImageTokens whose head-mean [CLS] logits over the patches are exactly ``scores`` [V, N]."""
    V, N = scores.shape
    keys = torch.cat([torch.zeros(V, 1), scores], dim=1).view(V, N + 1, 1, 1)
    qk = {0: LayerQK(q_cls=torch.ones(V, 1, 1), keys=keys, scale=1.0)}
    feats = torch.arange(V * N * 2, dtype=torch.float32).view(V, N, 2)
    return ImageTokens(feats, layout, qk, {}, 0, score_layer=0, num_layers=1)


def kept(outs) -> list[list[int]]:
    return [o.positions.tolist() for o in outs]


def test_with_alpha_zero_crops_follow_the_thumbnail_map():
    # 4x4 views, 1x2 crops, no padding. The thumbnail is hot at (1, 0) and warm at (2, 3); resized
    # to the 4x8 crop grid (bilinear, half-pixel centres) it gives (1, 0) 1, (1, 1) .75, (1, 2) .25
    # in the left crop and (2, 7) .5, (2, 6) .375, (2, 5) .125 in the right one.
    layout = AnyResLayout.from_grid(1, 2, 4, (4, 8))
    thumb = torch.zeros(4, 4)
    thumb[1, 0], thumb[2, 3] = 1.0, 0.5
    local = -torch.arange(16.0) * 1e-3  # a faint tie-breaker: lower index first
    scores = torch.stack([thumb.flatten(), local, local])
    outs = globalcom2(tokens(scores, layout), GlobalCom2Config(ratio=0.25, alpha=0.001))
    # 12 kept: thumbnail 4, crops 8 split 4.05 : 3.95 by the region weights -> 4 : 4
    assert [o.num_kept for o in outs] == [4, 4, 4]
    assert kept(outs)[1] == [0, 4, 5, 6]  # (1,0), (1,1), (1,2) and the tie-breaker's pick
    assert kept(outs)[2] == [0, 9, 10, 11]  # (2,1), (2,2), (2,3) of the right crop
    assert {4, 11} <= set(kept(outs)[0])  # the thumbnail's own top tokens are among its 4


def test_with_alpha_one_crops_follow_their_own_scores():
    layout = AnyResLayout.from_grid(1, 2, 4, (4, 8))
    thumb = torch.zeros(16)
    thumb[4] = 1.0
    own = torch.zeros(2, 16)
    own[0, [15, 3, 12, 0, 7]] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    own[1, [8, 2, 13, 14]] = torch.tensor([5.0, 4.0, 3.0, 2.0])
    outs = globalcom2(tokens(torch.cat([thumb[None], own]), layout), GlobalCom2Config(ratio=0.25, alpha=1.0))
    assert kept(outs)[1] == sorted([15, 3, 12, 0, 7][: outs[1].num_kept])
    assert kept(outs)[2] == sorted([8, 2, 13, 14][: outs[2].num_kept])


@pytest.mark.parametrize(("allocation", "counts"), [("exact", [4, 6, 2]), ("paper", [4, 5, 2])])
def test_the_crop_under_the_hotter_thumbnail_region_keeps_more(allocation, counts):
    layout = AnyResLayout.from_grid(1, 2, 4, (4, 8))
    thumb = torch.zeros(4, 4)
    thumb[:, :2] = 2.0  # the left half of the thumbnail covers the left crop
    scores = torch.cat(
        [thumb.flatten()[None], torch.randn(2, 16, generator=torch.Generator().manual_seed(0))]
    )
    outs = globalcom2(
        tokens(scores, layout), GlobalCom2Config(ratio=0.25, temperature=1.0, allocation=allocation)
    )
    # sigma = (1 - 1e-7, 1e-7): r_left just under .25 * 1.5, r_right just over .25 * .5. Paper: floor
    # of 16 r_j -> 5 and 2. Exact: the crops share 12 - 4 = 8 by those weights, 5.99.. : 2.00.. -> 6 : 2.
    assert [o.num_kept for o in outs] == counts


@pytest.mark.parametrize("allocation", ["exact", "paper"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_letterbox_padding_is_never_kept_even_when_it_scores_highest(allocation, alpha):
    layout = AnyResLayout.from_grid(1, 2, 4, (2, 8))  # rows 0 and 3 of the crop grid are padding
    assert layout.valid_rows == (1, 3)
    scores = torch.zeros(3, 16)
    scores[0] = torch.arange(16.0)  # the thumbnail's bottom and top rows are its hottest
    scores[1:, :4] = 100.0
    scores[1:, 12:] = 100.0
    outs = globalcom2(tokens(scores, layout), GlobalCom2Config(ratio=0.5, alpha=alpha, allocation=allocation))
    for o in outs[1:]:
        assert set(o.positions.tolist()) <= set(range(4, 12))
        assert o.num_kept > 0


@pytest.mark.parametrize(
    ("rows", "cols", "image_size"),
    [(1, 3, (1, 6)), (3, 1, (12, 1)), (1, 3, (4, 12)), (3, 1, (12, 4)), (2, 2, (3, 8))],
    ids=["wide-letterbox", "tall-letterbox", "wide", "tall", "2x2-letterbox"],
)
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.6])
def test_thin_and_wide_grids_keep_the_exact_budget_of_valid_tokens(rows, cols, image_size, ratio):
    layout = AnyResLayout.from_grid(rows, cols, 4, image_size)
    gen = torch.Generator().manual_seed(rows * 10 + cols)
    t = tokens(torch.randn(layout.num_views, 16, generator=gen), layout)
    outs = globalcom2(t, GlobalCom2Config(ratio=ratio))
    assert sum(o.num_kept for o in outs) == keep_count(layout.num_tokens(), ratio)
    assert outs[0].num_kept == keep_count(16, ratio)
    valid = view_positions(layout)
    for v, o in enumerate(outs):
        pos = o.positions.tolist()
        assert pos == sorted(set(pos)) and set(pos) <= set(valid[v].tolist())
        assert torch.equal(o.features, t.features[v, o.positions])
    paper = globalcom2(t, GlobalCom2Config.paper(ratio=ratio))
    for v, o in enumerate(paper):
        assert set(o.positions.tolist()) <= set(valid[v].tolist())


def test_thumbnail_keeps_its_top_tokens_in_spatial_or_score_order():
    layout = AnyResLayout.from_grid(1, 2, 4, (4, 8))
    thumb = torch.tensor([3.0, 9, 1, 7, 0, 8, 2, 6, 4, 5, 10, 11, 12, 13, 14, 15]) * -1
    scores = torch.cat([thumb[None], torch.zeros(2, 16)])
    spatial = globalcom2(tokens(scores, layout), GlobalCom2Config(ratio=0.25))
    assert kept(spatial)[0] == [0, 2, 4, 6]  # values -3, -1, 0, -2: the four largest
    by_score = globalcom2(tokens(scores, layout), GlobalCom2Config(ratio=0.25, thumbnail_order="score"))
    assert kept(by_score)[0] == [4, 2, 6, 0]
