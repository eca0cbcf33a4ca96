"""Very thin and very wide images (a few pixels by a few thousand: receipts, banners).

LLaVA-NeXT unpads such an image's crop grid down to no token at all, so only the thumbnail is
left; every method must still run and keep floor(ratio * N) of the N visual tokens.
"""

import math

import pytest
import torch

import vtcompress
from tests.conftest import inputs_for
from vtcompress import GlobalCom2Config
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.methods.globalcom2 import crop_scores, globalcom2
from vtcompress.registry import make_config
from vtcompress.tokens import ImageTokens, LayerQK

SIZES = {"3x3000": (3, 3000), "3000x3": (3000, 3), "10x2000": (10, 2000), "2000x10": (2000, 10)}  # (w, h)
CONFIGS = {m: m for m in vtcompress.available_methods("image")}
CONFIGS["globalcom2 paper"] = GlobalCom2Config.paper()


def config_for(name: str, ratio: float):
    method = CONFIGS[name]
    return make_config(method, ratio=ratio)


def uncompressed_tokens(model, size) -> int:
    w, h = size
    return AnyResLayout.for_image((h, w), model.config.image_grid_pinpoints).num_tokens()


def check_counts(handle, inputs, n: int, ratio: float) -> None:
    image, sample = handle.last_stats.images[0], handle.last_stats.samples[0]
    assert (image.tokens_before, image.tokens_after) == (n, math.floor(ratio * n))
    dropped = image.tokens_before - image.tokens_after + image.newlines_before - image.newlines_after
    assert sample.length_before == inputs["input_ids"].shape[1]
    assert sample.length_after == sample.length_before - dropped


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("ratio", [0.25, 0.1])
@torch.no_grad()
def test_forward_keeps_the_documented_count(model, processor, name, size, ratio):
    inputs = inputs_for(processor, [SIZES[size]])
    n = uncompressed_tokens(model, SIZES[size])
    with vtcompress.compressed(model, config_for(name, ratio)) as handle:
        out = model(**inputs)
    assert torch.isfinite(out.logits).all()
    check_counts(handle, inputs, n, ratio)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", CONFIGS)
@torch.no_grad()
def test_generate_keeps_the_documented_count(model, processor, name, size):
    inputs = inputs_for(processor, [SIZES[size]])
    n = uncompressed_tokens(model, SIZES[size])
    with vtcompress.compressed(model, config_for(name, 0.25)) as handle:
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])  # the caller's prompt
    check_counts(handle, inputs, n, 0.25)


def test_an_empty_unpadded_region_scores_no_crop_token():
    layout = AnyResLayout.from_grid(1, 3, 24, (3, 3000))
    assert layout.unpadded_shape[0] == 0  # as LLaVA-NeXT unpads it: no row left
    combined, valid = crop_scores(torch.rand(3, 576), torch.rand(24, 24), layout, alpha=0.5)
    assert not valid.any() and torch.isneginf(combined).all()


def _tokens(layout: AnyResLayout) -> ImageTokens:
    """ImageTokens with distinct [CLS] logits for every view of ``layout``."""
    v, n = layout.num_views, layout.view_tokens
    scores = torch.randperm(v * n, generator=torch.Generator().manual_seed(0)).float().view(v, n)
    keys = torch.cat([torch.zeros(v, 1), scores], dim=1).view(v, n + 1, 1, 1)
    qk = {0: LayerQK(q_cls=torch.ones(v, 1, 1), keys=keys, scale=1.0)}
    return ImageTokens(torch.randn(v, n, 2), layout, qk, {}, 0, score_layer=0, num_layers=1)


@pytest.mark.parametrize("allocation", ["exact", "paper"])
def test_crops_that_unpadding_empties_keep_nothing(allocation):
    # a 3x3 grid for a 10:1 image: the valid band lies inside the middle row of crops
    layout = AnyResLayout.from_grid(3, 3, 24, (300, 3000))
    counts = layout.view_counts()
    assert counts[1:4] == [0, 0, 0] and counts[7:10] == [0, 0, 0] and min(counts[4:7]) > 0
    out = globalcom2(_tokens(layout), GlobalCom2Config(ratio=0.25, allocation=allocation))
    kept = [o.num_kept for o in out]
    assert kept[1:4] == [0, 0, 0] and kept[7:10] == [0, 0, 0]
    if allocation == "exact":
        assert sum(kept) == math.floor(0.25 * layout.num_tokens())
