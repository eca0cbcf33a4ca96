"""Every branch-combination reading on rendered blank, half-text and dense crops (tiny random CLIP).

The IQR outliers are recomputed here from the captured q/k with numpy's percentiles, so the
assertions check the method against an independent reading of the spec.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers.tokencorr import rendered_page_tokens
from vtcompress.budget import keep_count
from vtcompress.methods.tokencorr import TokenCorrConfig, tokencorr
from vtcompress.tokens import ImageTokens

N = 16 * 16  # patches per view (224 px, 14 px patches)


@pytest.fixture(scope="module")
def page() -> ImageTokens:
    return rendered_page_tokens()


def reference_outliers(tokens: ImageTokens, layer: int, view: int, k: float = 1.5) -> set[int]:
    """Upper IQR outliers of the head-mean [CLS] attention over the patches of one view."""
    qk = tokens.qk[layer]
    logits = torch.einsum("hd,thd->ht", qk.q_cls[view].double(), qk.keys[view].double()) * qk.scale
    probs = logits.softmax(-1)[:, 1:].mean(0).numpy()
    q1, q3 = np.percentile(probs, [25, 75])
    return set(np.flatnonzero(probs > q3 + k * (q3 - q1)).tolist())


def crops(tokens: ImageTokens, cfg: TokenCorrConfig):
    outs = tokencorr(tokens, cfg)
    low, deep = cfg.resolve_layers(tokens.num_layers)
    return outs, [reference_outliers(tokens, deep, v) for v in range(1, 4)]


ADAPTIVE = [
    pytest.param(TokenCorrConfig.paper(), id="paper-union"),
    pytest.param(TokenCorrConfig(allocation="adaptive", ratio=0.5, combine="union"), id="union-0.5"),
    pytest.param(TokenCorrConfig(allocation="adaptive", ratio=0.5, combine="inside"), id="inside-0.5"),
    pytest.param(TokenCorrConfig(allocation="adaptive", ratio=0.5, combine="disjoint"), id="disjoint-0.5"),
]


@pytest.mark.parametrize("cfg", ADAPTIVE)
def test_adaptive_counts_per_crop(page, cfg):
    outs, outliers = crops(page, cfg)
    scale = cfg.scale if cfg.scale is not None else cfg.ratio
    assert outs[0].num_kept == N  # the global view stays whole
    dens = [o.info["density"] for o in outs[1:]]
    assert dens[0] < dens[1] < dens[2]  # blank < half text < dense
    for out, g in zip(outs[1:], outliers):
        info, kept = out.info, set(out.positions.tolist())
        n_c = max(1, math.ceil(info["density"] * N * scale - 1e-9))
        assert info["budget"] == n_c
        glob = set(info["global"].tolist())
        if cfg.combination == "union":  # every outlier, plus n_c draws over all patches
            assert glob == g and g <= kept
            assert max(n_c, len(g)) <= len(kept) <= n_c + len(g)
        elif cfg.combination == "inside":  # n_c in all, outliers first
            assert len(kept) == n_c and glob <= g and len(glob) == min(len(g), n_c)
        else:  # disjoint: every outlier plus n_c others
            assert glob == g and len(kept) == len(g) + min(n_c, N - len(g))
    assert [o.info["budget"] for o in outs[1:]] == sorted(o.info["budget"] for o in outs[1:])


@pytest.mark.parametrize("combine", ["union", "inside"])
def test_exact_counts_per_crop(page, combine):
    outs, outliers = crops(page, TokenCorrConfig(ratio=0.5, combine=combine))
    assert sum(o.num_kept for o in outs) == keep_count(4 * N, 0.5)
    assert outs[0].num_kept == N
    budgets = [o.info["budget"] for o in outs[1:]]
    assert budgets[0] < budgets[1] < budgets[2]  # density moves the total to the dense crop
    for out, g in zip(outs[1:], outliers):
        assert out.num_kept == out.info["budget"]
        if len(g) <= out.num_kept:  # the budget holds every outlier: none is cut
            assert set(out.info["global"].tolist()) == g


def test_union_keeps_outliers_that_inside_counts_against_n_c(page):
    union, outliers = crops(page, TokenCorrConfig.paper())
    inside, _ = crops(page, TokenCorrConfig.paper(combine="inside"))
    half_g = outliers[1]
    assert half_g  # the half-written crop has outliers (42 with this tower)
    u, i = union[2], inside[2]
    assert u.info["budget"] == i.info["budget"] < N
    assert set(u.positions.tolist()) >= half_g and i.num_kept == i.info["budget"]
    assert u.num_kept > i.num_kept  # the draws missed some outliers; union adds them on top
