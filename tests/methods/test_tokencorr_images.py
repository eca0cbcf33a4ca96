"""tokencorr on rendered pages run through a tiny random CLIP tower: density follows content."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tokencorr import rendered_page_tokens
from vtcompress.budget import keep_count
from vtcompress.methods.tokencorr import TokenCorrConfig
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens

PX, PATCH = 224, 14
SIDE = PX // PATCH


@pytest.fixture(scope="module")
def page_tokens() -> ImageTokens:
    """A 1x3 anyres page: a blank crop, a half-written crop, a crop dense with text."""
    return rendered_page_tokens(PX, PATCH, layers=4)


def test_dense_crop_keeps_more_tokens(page_tokens):
    compress = get_method("tokencorr").compress
    outs = compress(page_tokens, TokenCorrConfig(allocation="adaptive", ratio=0.5))
    blank, half, dense = outs[1:]
    assert blank.info["density"] < half.info["density"] < dense.info["density"]
    assert blank.num_kept < half.num_kept < dense.num_kept
    assert blank.num_kept <= 2  # a white crop is almost all redundant
    assert dense.num_kept <= SIDE * SIDE // 2  # ratio is the share a fully dense crop keeps
    assert outs[0].num_kept == SIDE * SIDE  # the global view stays whole by default


def test_exact_mode_moves_budget_to_the_dense_crop(page_tokens):
    compress = get_method("tokencorr").compress
    outs = compress(page_tokens, TokenCorrConfig(ratio=0.5, allocation="exact"))
    kept = [o.num_kept for o in outs[1:]]
    # the whole thumbnail takes its SIDE² tokens out of the image total first
    assert outs[0].num_kept == SIDE * SIDE
    assert sum(kept) == keep_count(4 * SIDE * SIDE, 0.5) - SIDE * SIDE
    assert kept[0] < kept[1] < kept[2]


def test_features_are_the_towers_at_kept_positions(page_tokens):
    outs = get_method("tokencorr").compress(
        page_tokens, TokenCorrConfig(allocation="adaptive", ratio=0.3, sampling="topk")
    )
    for v, out in enumerate(outs):
        assert torch.equal(out.features, page_tokens.features[v, out.positions])
