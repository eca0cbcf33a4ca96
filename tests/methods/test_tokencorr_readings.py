"""How tokencorr's two branches combine (``combine``), on crafted blank, half-text and dense views.

Every view has 36 patches and the same three deep-layer IQR outliers (positions 3, 17, 30, by
rising score); density is 0 (blank), 1/2 (half) or 1 (dense) by construction, so every count
and kept set below follows from the reading's definition, not from the code under test.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tokencorr import SPIKES, crafted_deep, crafted_low, synthetic_tokens
from vtcompress.budget import keep_count
from vtcompress.methods.tokencorr import TokenCorrConfig, plan_views, tokencorr
from vtcompress.methods.tokencorr_ops import select_view
from vtcompress.tokens import keep_all

KINDS = ["blank", "half", "dense"]
G = set(SPIKES)  # {3, 17, 30}
TOP_G = max(SPIKES, key=SPIKES.get)  # 30, the most attended outlier


def plan(cfg: TokenCorrConfig, kinds=KINDS, local_hot=()):
    low, deep = crafted_low(kinds, local_hot=local_hot), crafted_deep(len(kinds))
    return plan_views(low, deep, cfg, [True] * len(kinds))


def kept_sets(plans):
    return [set(p.kept.tolist()) for p in plans]


def test_crafted_views_have_the_intended_density():
    plans = plan(TokenCorrConfig.paper())
    assert [p.density for p in plans] == [0.0, 0.5, 1.0]
    assert [p.budget for p in plans] == [1, 18, 36]  # n_c = ceil(rho * 36), at least one


# Adaptive allocation, scale 1 (the paper's n_c = ceil(rho N)), deterministic top-k draws.
# Local attention: shared-key patches 0..17 (0.6) above distinct patches i (1 - i/36).
EXPECTED = {
    # union: n_c draws over ALL patches (top 1 = patch 0; top 18 = 0..17), united with G.
    "union": [{0} | G, set(range(18)) | G, set(range(36))],
    # inside: G inside n_c; blank keeps its single most attended outlier.
    "inside": [{TOP_G}, G | (set(range(16)) - G), set(range(36))],
    # disjoint: n_c draws outside G, on top of G.
    "disjoint": [{0} | G, G | (set(range(18)) - G) | {18, 19}, set(range(36))],
}


@pytest.mark.parametrize("combine", sorted(EXPECTED))
def test_adaptive_kept_sets_per_reading(combine):
    cfg = TokenCorrConfig.paper(combine=combine, sampling="topk")
    plans = plan(cfg)
    assert kept_sets(plans) == EXPECTED[combine]
    for p in plans:
        assert set(p.global_units.tolist()) | set(p.sampled.tolist()) == set(p.kept.tolist())
        assert not set(p.global_units.tolist()) & set(p.sampled.tolist())
    blank = plans[0]
    if combine == "inside":
        assert blank.kept.numel() == 1  # the outliers are cut to n_c = 1
    else:
        assert G <= set(blank.kept.tolist())  # a blank crop keeps every outlier


def test_union_draws_over_all_patches_not_only_outside_the_outliers():
    # Outlier 17 is the most attended locally: union's one draw lands on it (3 kept),
    # disjoint's draw must avoid G (4 kept), inside keeps the top outlier only.
    got = {
        c: kept_sets(plan(TokenCorrConfig.paper(combine=c, sampling="topk"), ["blank"], local_hot=(17,)))[0]
        for c in ("union", "disjoint", "inside")
    }
    assert got == {"union": G, "disjoint": G | {0}, "inside": {TOP_G}}


@pytest.mark.parametrize("seed", range(5))
def test_sampled_union_keeps_every_outlier_and_n_c_draws(seed):
    plans = plan(TokenCorrConfig.paper(seed=seed))
    for p, n_c in zip(plans, (1, 18, 36)):
        kept = set(p.kept.tolist())
        assert G <= kept and set(p.global_units.tolist()) == G
        # n_c distinct draws, some of which may be outliers
        assert max(n_c, len(G)) <= len(kept) <= n_c + len(G)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("combine", ["union", "inside"])
def test_exact_allocation_keeps_the_budget_per_view(combine, seed):
    cfg = TokenCorrConfig(ratio=0.25, combine=combine, seed=seed)
    plans = plan(cfg)
    total = keep_count(3 * 36, 0.25)
    assert sum(p.kept.numel() for p in plans) == total
    assert all(p.kept.numel() == p.budget for p in plans)
    blank, half, dense = plans
    assert blank.budget == 1 < half.budget < dense.budget  # the split follows density
    # blank: the union {draw} | G is cut back to one token: the draw first, then the weakest outliers
    assert blank.kept.tolist() == [TOP_G]
    for p in (half, dense):  # budgets hold all three outliers
        assert set(p.global_units.tolist()) == G and G <= set(p.kept.tolist())


def test_exact_union_cuts_the_least_attended_draws():
    cfg = TokenCorrConfig(ratio=0.25, combine="union", sampling="topk")
    half = plan(cfg)[1]
    # n_c top draws are 0..n_c-1 (all shared-key patches, most attended first by index);
    # united with G then cut to n_c: G plus the n_c - 3 most attended non-outlier draws.
    want = G | set(sorted(set(range(half.budget)) - G)[: half.budget - 3])
    assert set(half.kept.tolist()) == want


def test_select_view_union_and_exact_cut_on_scores():
    scores = torch.full((10,), 0.01)
    scores[[2, 7]] = torch.tensor([0.5, 0.9])  # the outliers; 7 is the stronger
    local = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    kept, glob, loc = select_view(scores, local, 3, combine="union", sampling="topk")
    assert kept.tolist() == [0, 1, 2, 7] and glob.tolist() == [2, 7] and loc.tolist() == [0, 1]
    kept, glob, loc = select_view(scores, local, 3, combine="union", sampling="topk", exact=True)
    assert kept.tolist() == [0, 2, 7] and loc.tolist() == [0]  # 1 is the least attended draw
    kept, _, _ = select_view(scores, local, 1, combine="union", sampling="topk", exact=True)
    assert kept.tolist() == [7]
    with pytest.raises(ValueError, match="exact"):
        select_view(scores, local, 3, combine="disjoint", exact=True)
    with pytest.raises(ValueError, match="combine must be one of"):
        select_view(scores, local, 3, combine="both")


def test_config_readings_and_the_older_spelling():
    assert TokenCorrConfig().combination == "inside"
    assert TokenCorrConfig(global_inside=True).combination == "inside"
    assert TokenCorrConfig(allocation="adaptive", global_inside=False).combination == "disjoint"
    assert TokenCorrConfig(combine="union").combination == "union"
    paper = TokenCorrConfig.paper()
    assert (paper.combination, paper.group_outliers, paper.allocation, paper.scale) == (
        "union",
        "patch",
        "adaptive",
        1.0,
    )
    assert TokenCorrConfig.paper(global_inside=True).combination == "inside"
    assert TokenCorrConfig.paper(combine="disjoint").combination == "disjoint"
    assert TokenCorrConfig().group_outliers == "patch"


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"combine": "sum"}, "combine must be one of"),
        ({"group_outliers": "view"}, "group_outliers must be one of"),
        ({"combine": "union", "global_inside": True}, "pass combine only"),
        ({"global_inside": False}, "allocation='adaptive'"),  # disjoint cannot be exact
        ({"combine": "disjoint"}, "allocation='adaptive'"),
    ],
)
def test_bad_reading_options_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        TokenCorrConfig(**kw)


@pytest.mark.parametrize(
    ("combine", "allocation"),
    [
        (c, a)
        for c in ("union", "inside", "disjoint")
        for a in ("adaptive", "exact")
        if (c, a) != ("disjoint", "exact")
    ],
)  # disjoint with exact allocation is refused by the config (test_bad_reading_options_raise)
def test_ratio_one_keeps_everything_under_every_reading(combine, allocation):
    tokens = synthetic_tokens(rows=1, cols=3, layers=(0, 1, 2, 3), clusters=[1, 1, 4, 36])
    outs = tokencorr(tokens, TokenCorrConfig(ratio=1.0, allocation=allocation, combine=combine))
    for got, want in zip(outs, keep_all(tokens)):
        assert torch.equal(got.positions, want.positions) and torch.equal(got.features, want.features)


@pytest.mark.parametrize("combine", ["union", "inside", "disjoint"])
def test_views_together_equal_views_one_by_one(combine):
    # top-k draws do not depend on a view's generator, so every view must match exactly
    cfg = TokenCorrConfig.paper(combine=combine, sampling="topk")
    low, deep = crafted_low(KINDS), crafted_deep(3)
    together = plan_views(low, deep, cfg, [True] * 3)
    for v in range(3):
        alone = plan_views(crafted_low([KINDS[v]]), crafted_deep(1), cfg, [True])[0]
        assert torch.equal(together[v].kept, alone.kept) and together[v].budget == alone.budget
        assert torch.equal(together[v].global_units, alone.global_units)
