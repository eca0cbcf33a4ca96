"""Grouped tokencorr for mPLUG-DocOwl1.5: selecting 1x4 groups before the H-Reducer is exact."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from tests.helpers.tokencorr import clustered_qk
from vtcompress.methods.tokencorr import (
    TokenCorrConfig,
    group_patch_index,
    hreducer_keep_index,
    select_groups,
)
from vtcompress.methods.tokencorr_ops import cls_patch_probs, pool_groups

GRID = (32, 32)
GROUPS = 32 * 8


class TinyHReducer(nn.Module):
    """DocOwl1.5's vision2text with tiny widths: conv 1x4/4 + GELU, channels back to width, conv 1x4/4."""

    def __init__(self, width: int = 8, out: int = 12):
        super().__init__()
        self.reducer_before = nn.Sequential(nn.Conv2d(width, 4 * width, (1, 4), stride=(1, 4)), nn.GELU())
        self.reducer = nn.Conv2d(width, width, (1, 4), stride=(1, 4))
        self.visual_fc = nn.Linear(width, out)
        self.vit_eos = nn.Parameter(torch.randn(1, 1, out))

    def forward(self, patches: Tensor, grid: tuple[int, int]) -> Tensor:
        """[B, R*C, width] patches (no [CLS]) on an R x C grid -> [B, R*C/4 + 1, out]."""
        b, _, c = patches.shape
        rows, cols = grid
        x = patches.transpose(1, 2).reshape(b, c, rows, cols)
        x = self.reducer_before(x)  # [B, 4c, R, C/4]
        # Channel group g of output column w goes back to width position 4w + g.
        x = x.reshape(b, 4, c, rows, cols // 4).permute(0, 2, 3, 4, 1).reshape(b, c, rows, cols)
        x = self.reducer(x).flatten(2).transpose(1, 2)  # [B, R*C/4, c]
        x = self.visual_fc(x)
        return torch.cat([x, self.vit_eos.expand(b, -1, -1)], dim=1)


@pytest.fixture(scope="module")
def qks():
    gen = torch.Generator().manual_seed(0)
    low = clustered_qk(4, 32 * 32, [3, 2, 150, 1024], gen)
    deep = clustered_qk(4, 32 * 32, [1024] * 4, gen)
    return low, deep


@torch.no_grad()
@pytest.mark.parametrize(
    "cfg",
    [
        TokenCorrConfig(allocation="adaptive", ratio=0.5),
        TokenCorrConfig.paper(),  # union of local draws and per-patch outlier groups
        TokenCorrConfig(ratio=0.3, combine="union", group_outliers="group"),
    ],
    ids=["adaptive-inside", "paper", "exact-union-groupsum"],
)
def test_reducer_on_selected_groups_equals_selecting_its_outputs(qks, cfg):
    low, deep = qks
    torch.manual_seed(0)
    reducer = TinyHReducer().eval()
    patches = torch.randn(4, 32 * 32, 8)
    full = reducer(patches, GRID)  # [V, 257, out]
    assert full.shape[1] == GROUPS + 1
    plans = select_groups(low, deep, cfg, GRID, (1, 4))
    assert any(p.kept.numel() < GROUPS for p in plans[1:])
    for v, plan in enumerate(plans):
        idx = group_patch_index(plan.kept, GRID, (1, 4))  # [k, 4]
        assert (idx // 32 == idx[:, :1] // 32).all() and (idx[:, 1:] - idx[:, :-1] == 1).all()
        strip = patches[v][idx].reshape(1, -1, 8)  # kept groups side by side: a 1 x 4k grid
        on_kept = reducer(strip, (1, strip.shape[1]))[0]
        after = full[v, hreducer_keep_index(plan.kept, GROUPS)]
        torch.testing.assert_close(on_kept, after, rtol=1e-5, atol=1e-6)
        assert torch.equal(after[-1], reducer.vit_eos[0, 0])


def test_group_scores_pool_patch_attention(qks):
    low, deep = qks
    cfg = TokenCorrConfig(
        allocation="adaptive", ratio=0.3, sampling="topk", compress_global=True, group_outliers="group"
    )
    plans = select_groups(low, deep, cfg, GRID, (1, 4))
    groups_low = pool_groups(cls_patch_probs(low), GRID, (1, 4), "sum")
    groups_deep = pool_groups(cls_patch_probs(deep), GRID, (1, 4), "sum")
    for v, plan in enumerate(plans):
        glob, sampled = plan.global_units, plan.sampled
        if glob.numel():  # global groups are outliers of the pooled deep attention
            assert groups_deep[v, glob].min() > groups_deep[v].median()
        rest = torch.ones(GROUPS, dtype=torch.bool)
        rest[plan.kept] = False
        if sampled.numel() and rest.any():  # top-k local groups by pooled low-layer attention
            assert groups_low[v, sampled].min() >= groups_low[v, rest].max()


def test_budgets_count_groups_and_keep_one_per_view(qks):
    low, deep = qks
    plans = select_groups(
        low, deep, TokenCorrConfig(allocation="adaptive", ratio=0.5, tau=0.9, min_similar=8), GRID, (1, 4)
    )
    assert plans[0].compressed is False and plans[0].kept.tolist() == list(range(GROUPS))
    for plan in plans[1:]:
        assert plan.units == GROUPS and plan.compressed
        assert plan.budget == min(GROUPS, max(1, math.ceil(plan.density * GROUPS * 0.5 - 1e-9)))
        assert plan.kept.numel() == plan.budget >= 1
        assert plan.kept.tolist() == sorted(set(plan.kept.tolist()))
    densities = [p.density for p in plans[1:]]
    assert densities[0] < densities[1] < densities[2]
    assert plans[1].kept.numel() < plans[2].kept.numel() < plans[3].kept.numel()


def test_ratio_one_keeps_all_257_outputs(qks):
    low, deep = qks
    for plan in select_groups(low, deep, TokenCorrConfig(allocation="adaptive", ratio=1.0), GRID, (1, 4)):
        assert hreducer_keep_index(plan.kept).tolist() == list(range(GROUPS + 1))


def test_without_global_view_every_view_is_compressed(qks):
    low, deep = qks
    plans = select_groups(
        low, deep, TokenCorrConfig(allocation="adaptive", ratio=0.5), GRID, (1, 4), global_view=False
    )
    assert all(p.compressed for p in plans)


def test_grid_mismatch_is_an_error(qks):
    low, deep = qks
    with pytest.raises(ValueError, match="24x24 grid"):
        select_groups(low, deep, TokenCorrConfig(allocation="adaptive", ratio=0.5), (24, 24), (1, 4))
