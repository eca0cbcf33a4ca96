"""tokencorr on rendered pages run through a tiny random CLIP tower: density follows content."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests._tokencorr_util import blank_page, clip_qk, pixels, text_page, tiny_clip
from vtcompress.budget import keep_count
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.methods.tokencorr import TokenCorrConfig
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens

PX, PATCH = 224, 14
SIDE = PX // PATCH


def half_text(px: int) -> Image.Image:
    img = blank_page(px)
    img.paste(text_page(px, seed=1).crop((0, 0, px, px // 2)), (0, 0))
    return img


@pytest.fixture(scope="module")
def page_tokens() -> ImageTokens:
    """A 1x3 anyres page: a blank crop, a half-written crop, a crop dense with text."""
    crops = [blank_page(PX), half_text(PX), text_page(PX)]
    page = Image.new("RGB", (3 * PX, PX), "white")
    for i, crop in enumerate(crops):
        page.paste(crop, (i * PX, 0))
    views = [page.resize((PX, PX), Image.BICUBIC), *crops]
    model = tiny_clip(PX, PATCH, layers=4)
    cfg = TokenCorrConfig()
    layers = cfg.capture_layers(score_layer=3, num_layers=4)[0]
    qk, hidden = clip_qk(model, pixels(views), layers)
    return ImageTokens(
        features=hidden[:, 1:],
        layout=AnyResLayout.from_grid(1, 3, SIDE, (PX, 3 * PX)),
        qk=qk,
        score_layer=3,
        num_layers=4,
    )


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
