import math

import pytest
import torch

from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.methods.globalcom2 import GlobalCom2Config, crop_ratios, crop_scores, globalcom2
from vtcompress.tokens import ImageTokens, LayerQK


def tokens_with_scores(scores: torch.Tensor, layout: AnyResLayout, dim: int = 3) -> ImageTokens:
    """ImageTokens whose head-mean [CLS] logits over the patches are exactly ``scores`` [V, N]."""
    V, N = scores.shape
    keys = torch.cat([torch.zeros(V, 1), scores], dim=1).view(V, N + 1, 1, 1)
    qk = {0: LayerQK(q_cls=torch.ones(V, 1, 1), keys=keys, scale=1.0)}
    feats = torch.arange(V * N * dim, dtype=torch.float32).view(V, N, dim)
    return ImageTokens(feats, layout, qk, {}, 0, score_layer=0, num_layers=1)


def test_crop_ratios_follow_the_softmax_rule():
    thumb = torch.zeros(4, 4)
    thumb[:, :2] = 1.0  # region sums: left 8, right 0
    r = crop_ratios(thumb, rows=1, cols=2, ratio=0.25, temperature=10.0, aggregation="sum")
    s0 = 1 / (1 + math.exp(-0.8))
    assert r.tolist() == pytest.approx([0.25 * (1 + s0 - 0.5), 0.25 * (1 + (1 - s0) - 0.5)], rel=1e-6)
    mean = crop_ratios(thumb, rows=1, cols=2, ratio=0.25, temperature=10.0, aggregation="mean")
    s0m = 1 / (1 + math.exp(-0.1))  # region means 1 and 0, / tau = 10
    assert mean[0].item() == pytest.approx(0.25 * (0.5 + s0m), rel=1e-6)
    # clipped at 1, never renormalised
    high = crop_ratios(thumb * 100, rows=1, cols=2, ratio=0.8, temperature=1.0, aggregation="sum")
    assert high[0].item() == 1.0 and high[1].item() == pytest.approx(0.8 * 0.5, rel=1e-4)


def test_regions_put_leftover_rows_into_the_last_region():
    thumb = torch.zeros(5, 5)
    thumb[4, :] = 1.0  # row 4 -> region row min(4 // 2, 1) = 1
    r = crop_ratios(thumb, rows=2, cols=1, ratio=0.5, temperature=1.0, aggregation="sum")
    assert r[1] > r[0]
    s1 = 1 / (1 + math.exp(-5.0))
    assert r[1].item() == pytest.approx(0.5 * (1 + s1 - 0.5), rel=1e-6)


def test_crop_scores_mix_unit_normalised_local_and_global():
    layout = AnyResLayout.from_grid(1, 2, 2, (2, 4))
    local = torch.tensor([[3.0, 0.0, 0.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    thumb = torch.full((2, 2), 2.0)  # constant map: resizing keeps it constant
    combined, valid = crop_scores(local, thumb, layout, alpha=0.5)
    assert valid.all()
    expected0 = 0.5 * torch.tensor([0.6, 0.0, 0.0, 0.8]) + 0.5 * torch.full((4,), 0.5)
    assert torch.allclose(combined[0], expected0)
    assert torch.allclose(combined[1], torch.full((4,), 0.5))


def test_unpadded_tokens_are_never_scored():
    layout = AnyResLayout.from_grid(1, 2, 2, (2, 2))  # only the middle columns survive
    combined, valid = crop_scores(torch.ones(2, 4), torch.ones(2, 2), layout, alpha=0.5)
    assert valid.sum().item() == 4
    assert torch.isinf(combined[~valid]).all()


def _hand_case():
    layout = AnyResLayout.from_grid(1, 2, 4, (4, 8))  # thumbnail + 2 crops of 4x4, nothing unpadded
    thumb = torch.zeros(16)
    thumb.view(4, 4)[:, :2] = 1.0
    thumb += torch.arange(16) * 1e-4  # break ties; region sums stay ~8 and ~0
    scores = torch.stack([thumb, torch.arange(16.0), 16 - torch.arange(16.0)])
    return tokens_with_scores(scores, layout)


def test_paper_allocation_hand_case():
    out = globalcom2(_hand_case(), GlobalCom2Config.paper(ratio=0.25, alpha=1.0))
    # thumbnail floor(16 * .25) = 4; r_0 ~ .2975 -> floor(4.76) = 4; r_1 ~ .2025 -> floor(3.24) = 3
    assert [o.num_kept for o in out] == [4, 4, 3]
    assert out[1].positions.tolist() == [12, 13, 14, 15]  # alpha=1: the crop's own top scores
    assert out[2].positions.tolist() == [0, 1, 2]
    # paper mode emits the thumbnail in descending score order (official code)
    assert out[0].positions.tolist() == [13, 12, 9, 8]


def test_exact_allocation_hand_case_and_spatial_thumbnail():
    out = globalcom2(_hand_case(), GlobalCom2Config(ratio=0.25, alpha=1.0))
    # total floor(48 * .25) = 12: thumbnail 4, crops share 8 as 4.76 : 3.24 -> 5 : 3
    assert [o.num_kept for o in out] == [4, 5, 3]
    assert out[0].positions.tolist() == [8, 9, 12, 13]
    assert out[1].positions.tolist() == [11, 12, 13, 14, 15]
    # features are the kept rows, unchanged
    tokens = _hand_case()
    assert torch.equal(out[1].features, tokens.features[1, out[1].positions])


def test_mean_cos_score_needs_no_attention():
    tokens = _hand_case()
    tokens.qk = {}
    out = globalcom2(tokens, GlobalCom2Config(ratio=0.5, score="mean_cos"))
    assert sum(o.num_kept for o in out) == 24


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(allocation="all"),
        dict(newline="every"),
        dict(alpha=1.5),
        dict(temperature=0.0),
        dict(ratio=0.0),
        dict(ratio=float("nan")),
    ],
)
def test_bad_options_raise(kwargs):
    with pytest.raises(ValueError):
        GlobalCom2Config(**kwargs)
