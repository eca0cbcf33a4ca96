"""Which tokens each baseline keeps, on crafted score maps (pure functions, no model).

Layout used throughout: 4x4-token views, a 1x2 crop grid over a wide image, so the full crop
grid is 4x8 and rows 0 and 3 are letterbox padding (valid rows [1, 3)): views hold 16, 8, 8
tokens; at ratio 0.25 the image keeps floor(32 / 4) = 8, split 4 : 2 : 2 by view size.
"""

import pytest
import torch

from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.methods.baselines import (
    FasterVLMConfig,
    RandomConfig,
    UniformConfig,
    evenly_spaced,
    fastervlm,
    random_drop,
    uniform,
    uniform_view_budgets,
)
from vtcompress.tokens import ImageTokens, LayerQK

LAYOUT = AnyResLayout.from_grid(1, 2, 4, (2, 8))
VALID_CROP = list(range(4, 12))  # rows 1 and 2 of a 4x4 crop


def tokens(scores: torch.Tensor, layout: AnyResLayout = LAYOUT, index: int = 0) -> ImageTokens:
    """ImageTokens whose [CLS] logits over the patches are exactly ``scores`` [V, N] (one head)."""
    V, N = scores.shape
    keys = torch.cat([torch.zeros(V, 1), scores], dim=1).view(V, N + 1, 1, 1)
    qk = {0: LayerQK(q_cls=torch.ones(V, 1, 1), keys=keys, scale=1.0)}
    feats = torch.arange(V * N * 2, dtype=torch.float32).view(V, N, 2)
    return ImageTokens(feats, layout, qk, {}, index, score_layer=0, num_layers=1)


def kept(outs) -> list[list[int]]:
    return [o.positions.tolist() for o in outs]


def test_the_layout_is_what_the_tests_assume():
    assert LAYOUT.valid_rows == (1, 3) and LAYOUT.valid_cols == (0, 8)
    assert LAYOUT.view_counts() == [16, 8, 8]
    assert uniform_view_budgets(tokens(torch.zeros(3, 16)), 0.25) == [4, 2, 2]


def test_budgets_split_the_image_total_by_view_size():
    wide = AnyResLayout.from_grid(1, 3, 4, (1, 6))  # 4x12 grid, valid rows [1, 3): 16, 8, 8, 8
    t = tokens(torch.zeros(4, 16), wide)
    assert uniform_view_budgets(t, 0.25) == [4, 2, 2, 2]  # floor(40 / 4) = 10
    # 12 as 4.8 : 2.4 : 2.4 : 2.4 -> floors 4, 2, 2, 2; leftovers to .8, then the first .4 (tie)
    assert uniform_view_budgets(t, 0.3) == [5, 3, 2, 2]
    assert uniform_view_budgets(t, 1.0) == [16, 8, 8, 8]


def test_fastervlm_keeps_the_highest_attention_tokens_of_each_view():
    gen = torch.Generator().manual_seed(0)
    scores = torch.stack([torch.randperm(16, generator=gen).float() for _ in range(3)])
    outs = fastervlm(tokens(scores), FasterVLMConfig(ratio=0.25))
    thumb = scores[0].argsort(descending=True)[:4].sort().values.tolist()
    assert kept(outs)[0] == thumb  # top 4 of 16, returned in raster order
    for v in (1, 2):
        valid = torch.tensor(VALID_CROP)
        top = valid[scores[v, valid].argsort(descending=True)[:2]].sort().values.tolist()
        assert kept(outs)[v] == top
    # The features are the kept rows.
    t = tokens(scores)
    for v, o in enumerate(outs):
        assert torch.equal(o.features, t.features[v, o.positions])


def test_fastervlm_never_keeps_letterbox_padding_even_when_it_scores_highest():
    scores = torch.zeros(3, 16)
    scores[1:, :4] = 100.0  # padded row 0 of each crop
    scores[1:, 12:] = 100.0  # padded row 3
    scores[1:, 6] = 5.0
    scores[1:, 9] = 4.0
    outs = fastervlm(tokens(scores), FasterVLMConfig(ratio=0.25))
    assert kept(outs)[1] == kept(outs)[2] == [6, 9]


def test_fastervlm_uses_attention_probabilities_averaged_over_heads():
    # Two heads disagree: head 0 prefers token 0 strongly, head 1 prefers tokens 1..3 mildly. The
    # mean of softmax probabilities picks token 0; the mean of logits would pick token 1.
    layout = AnyResLayout.from_grid(1, 1, 2, (2, 2))
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0], [0.0, 4.0, 4.0, 4.0]])  # [H, N]
    keys = torch.cat([torch.zeros(2, 1), logits], 1).T.reshape(1, 5, 2, 1).repeat(2, 1, 1, 1)
    qk = {0: LayerQK(q_cls=torch.ones(2, 2, 1), keys=keys, scale=1.0)}
    t = ImageTokens(torch.zeros(2, 4, 1), layout, qk, {}, 0, score_layer=0, num_layers=1)
    outs = fastervlm(t, FasterVLMConfig(ratio=0.25))
    assert kept(outs) == [[0], [0]]


def test_uniform_keeps_evenly_spaced_valid_tokens():
    outs = uniform(tokens(torch.zeros(3, 16)), UniformConfig(ratio=0.25))
    # thumbnail: 4 of 16 at the middle of each stride of 4; crops: 2 of the 8 valid tokens 4..11
    assert kept(outs) == [[2, 6, 10, 14], [6, 10], [6, 10]]
    assert evenly_spaced(10, 3).tolist() == [1, 5, 8]
    assert evenly_spaced(5, 5).tolist() == [0, 1, 2, 3, 4]
    assert evenly_spaced(7, 1).tolist() == [3]


def test_uniform_ignores_scores():
    a = uniform(tokens(torch.randn(3, 16)), UniformConfig(ratio=0.5))
    b = uniform(tokens(torch.zeros(3, 16)), UniformConfig(ratio=0.5))
    assert kept(a) == kept(b)
    assert kept(a) == [[1, 3, 5, 7, 9, 11, 13, 15], [5, 7, 9, 11], [5, 7, 9, 11]]


def test_random_is_seeded_per_image():
    t = tokens(torch.zeros(3, 16))
    first = kept(random_drop(t, RandomConfig(ratio=0.25, seed=3)))
    # Same seed: the same tokens, whatever the image's place in a batch and however often.
    assert kept(random_drop(tokens(torch.zeros(3, 16), index=5), RandomConfig(ratio=0.25, seed=3))) == first
    assert kept(random_drop(t, RandomConfig(ratio=0.25, seed=3))) == first
    # Scores play no part.
    assert kept(random_drop(tokens(torch.randn(3, 16)), RandomConfig(ratio=0.25, seed=3))) == first
    # Different seeds give different subsets, and over many seeds every valid token is drawn.
    draws = [kept(random_drop(t, RandomConfig(ratio=0.25, seed=s))) for s in range(40)]
    assert len({str(d) for d in draws}) > 30
    for v, valid in enumerate([list(range(16)), VALID_CROP, VALID_CROP]):
        seen = {p for d in draws for p in d[v]}
        assert seen == set(valid), v


@pytest.mark.parametrize(
    "method, config", [(random_drop, RandomConfig), (uniform, UniformConfig), (fastervlm, FasterVLMConfig)]
)
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.9, 1.0])
def test_every_baseline_keeps_the_exact_budget_of_sorted_unique_valid_tokens(method, config, ratio):
    gen = torch.Generator().manual_seed(1)
    outs = method(tokens(torch.randn(3, 16, generator=gen)), config(ratio=ratio))
    assert [o.num_kept for o in outs] == uniform_view_budgets(tokens(torch.zeros(3, 16)), ratio)
    for v, o in enumerate(outs):
        pos = o.positions.tolist()
        assert pos == sorted(set(pos))
        assert set(pos) <= set(range(16) if v == 0 else VALID_CROP)


@pytest.mark.parametrize(("n", "k"), [(16, 4), (10, 3), (576, 144), (2016, 57), (9000, 8999)])
def test_evenly_spaced_is_exact_integer_arithmetic(n, k):
    # Stride middles floor((i + 1/2) n / k) == ((2i + 1) n) // (2k), exactly, for any view size.
    assert evenly_spaced(n, k).tolist() == [((2 * i + 1) * n) // (2 * k) for i in range(k)]
