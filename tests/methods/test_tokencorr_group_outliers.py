"""Grouped tokencorr (DocOwl's 1x4 H-Reducer groups): which groups count as global.

The deep-layer score map is crafted on a 32x32 patch grid. Ordinary groups hold patch weights
[0.5, 1.5, 0.5, 1.5]: patch quartiles 0.5 and 1.5 (fence 3.0), group sums all 4.0 (fence 4.0).
Then, by construction:
* group 10, [2.5] * 4: sum 10.0 is a group-sum outlier, but no patch passes 3.0;
* group 100, [3.5, 0.2, 0.1, 0.1]: patch 3.5 is an outlier, but its sum 3.9 is not;
* group 150, [3.2, 1.5, 1.5, 1.5]: both (patch 3.2 > 3.0, sum 7.7 > 4.0).
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tokencorr import weights_qk
from vtcompress.methods.tokencorr import TokenCorrConfig, select_groups
from vtcompress.methods.tokencorr_ops import group_outliers

GRID, GROUP = (32, 32), (1, 4)
SPECIAL = {10: [2.5] * 4, 100: [3.5, 0.2, 0.1, 0.1], 150: [3.2, 1.5, 1.5, 1.5]}


def score_map(views: int = 2) -> torch.Tensor:
    w = torch.tensor([0.5, 1.5, 0.5, 1.5]).repeat(256)
    for g, vals in SPECIAL.items():
        w[4 * g : 4 * g + 4] = torch.tensor(vals)
    return w.repeat(views, 1)


def flat_low(views: int = 2):
    """Every patch key alike (density 0, so n_c = 1) and uniform local attention."""
    return weights_qk(torch.full((views, 1024), 2.0))  # keys log 2 > 0: all cosines 1


def plans(**kw):
    cfg = TokenCorrConfig.paper(sampling="topk", **kw)
    return select_groups(flat_low(), weights_qk(score_map()), cfg, GRID, GROUP, global_view=False)


def test_per_patch_outliers_make_their_groups_global():
    for p in plans():  # the paper-faithful default
        assert p.global_units.tolist() == [100, 150]
        # n_c = 1 draw (group 0 on uniform attention) united with both global groups
        assert p.kept.tolist() == [0, 100, 150]


def test_group_sum_outliers_are_the_option():
    for p in plans(group_outliers="group"):
        assert p.global_units.tolist() == [10, 150]
        assert p.kept.tolist() == [0, 10, 150]


def test_global_groups_are_ranked_by_their_strongest_patch():
    # One token to keep: per patch, group 100 (patch 3.5) beats group 150 (patch 3.2, sum 7.7);
    # by group sums group 10 (10.0) wins.
    assert [p.kept.tolist() for p in plans(combine="inside")] == [[100], [100]]
    assert [p.kept.tolist() for p in plans(combine="inside", group_outliers="group")] == [[10], [10]]


def test_group_outliers_op_on_the_crafted_map():
    scores = score_map(1)[0]
    valid = torch.ones(1024, dtype=torch.bool)
    hit, rank = group_outliers(scores, valid, GRID, GROUP, 1.5, "patch")
    assert hit.nonzero().squeeze(1).tolist() == [100, 150]
    assert rank[100] == 3.5 and rank[150] == pytest.approx(3.2)
    hit, rank = group_outliers(scores, valid, GRID, GROUP, 1.5, "group", "sum")
    assert hit.nonzero().squeeze(1).tolist() == [10, 150]
    assert rank[10] == pytest.approx(10.0)
    # a group with an invalid patch is never global, even around an outlier patch
    valid[401] = False
    hit, _ = group_outliers(scores, valid, GRID, GROUP, 1.5, "patch")
    assert hit.nonzero().squeeze(1).tolist() == [150]


def test_ungrouped_views_find_the_same_outliers_either_way():
    # group (1, 1): each unit is one patch, so the two tests agree.
    low, deep = flat_low(1), weights_qk(score_map(1))
    a = select_groups(low, deep, TokenCorrConfig.paper(), GRID, (1, 1), global_view=False)[0]
    b = select_groups(
        low, deep, TokenCorrConfig.paper(group_outliers="group"), GRID, (1, 1), global_view=False
    )[0]
    assert torch.equal(a.global_units, b.global_units)
    assert a.global_units.tolist() == [400, 600]  # the patches 3.5 and 3.2
