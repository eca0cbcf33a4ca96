"""Every field of ``handle.last_stats`` against a count made by hand, on the tiny LLaVA-NeXT.

Geometry worked out by hand (CLIP/14 at 336 px: 24x24 tokens a view; pinpoints as (h, w)):

* 672x672 (W x H): best resolution 672x672, a 2x2 crop grid, no letterbox: 576 thumbnail tokens
  + 4 x 576 crop tokens = 2880, one newline per row of the 48-row grid = 48.
* 500x300: best resolution (h 336, w 672) (the smallest canvas that keeps all 150000 pixels), a 1x2
  grid of 24 x 48 tokens; the image scaled to the 48-column width would be 28.8 rows tall, so it
  is fitted to the height instead: 500 * 24 / 300 = 40 columns, (48 - 40) / 2 = 4 columns of
  letterbox each side. Each crop keeps 24 x 20 = 480 tokens: 576 + 960 = 1536, 24 newlines.

At ratio 0.25: floor(0.25 N) tokens, split across views in proportion to their sizes.
"""

from __future__ import annotations

import re

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image, uncompressed


@pytest.fixture
def model(tiny):
    yield from uncompressed(tiny[0])


def prefill_flops(text_config, n: int) -> float:
    """2 FLOPs per multiply-add: q, k, v, o projections, a gated MLP (3 matrices), and the two
    n x n attention matmuls (q k^T and weights v) in full; per decoder layer."""
    d, m = text_config.hidden_size, text_config.intermediate_size
    heads = text_config.num_attention_heads
    hd = getattr(text_config, "head_dim", None) or d // heads
    kv = getattr(text_config, "num_key_value_heads", None) or heads
    projections = 2 * n * (d * heads * hd) + 2 * 2 * n * (d * kv * hd) + 2 * n * (heads * hd * d)
    mlp = 3 * 2 * n * d * m
    attention = 2 * (2 * n * n * heads * hd)
    return float(text_config.num_hidden_layers * (projections + mlp + attention))


def evenly(valid: list[tuple[int, int]], k: int) -> list[tuple[int, int]]:
    """``uniform``: the middle token of each of k equal strides of the view's valid tokens."""
    n = len(valid)
    return [valid[(2 * i + 1) * n // (2 * k)] for i in range(k)]


@torch.no_grad()
def test_every_stats_field_on_a_two_image_batch(model, tiny):
    processor = tiny[1]
    images = [make_image(672, 672, seed=0), make_image(500, 300, seed=1)]
    prompts = ["USER: <image>\nWhat? ASSISTANT:", "USER: <image>\nWhere is it? ASSISTANT:"]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    lengths = inputs["attention_mask"].sum(1).tolist()  # real (unpadded) prompt lengths
    handle = vtc.compress(model, "uniform", ratio=0.25)
    logits = model(**inputs).logits
    stats = handle.last_stats
    assert isinstance(handle, vtc.CompressionHandle) and isinstance(stats, vtc.CompressionStats)
    assert all(isinstance(im, vtc.ImageStats) for im in stats.images)
    assert all(isinstance(v, vtc.ViewStats) for im in stats.images for v in im.views)

    # --- per image -------------------------------------------------------------------------
    square, wide = stats.images
    assert [im.index for im in stats.images] == [0, 1]
    assert square.image_size == (672, 672) and wide.image_size == (300, 500)  # (height, width)
    assert square.grid == (2, 2) and wide.grid == (1, 2)
    assert {im.method for im in stats.images} == {"uniform"} and {im.ratio for im in stats.images} == {0.25}
    assert (square.tokens_before, square.newlines_before) == (2880, 48)
    assert (wide.tokens_before, wide.newlines_before) == (1536, 24)
    assert (square.tokens_after, wide.tokens_after) == (720, 384)  # floor(0.25 N)
    # uniform keeps tokens in every row of every view here: every row keeps its newline
    assert (square.newlines_after, wide.newlines_after) == (48, 24)
    assert square.kept_fraction == 0.25 and wide.kept_fraction == 0.25
    assert not square.passthrough and not wide.passthrough and square.note == wide.note == ""
    assert all(im.seconds > 0 for im in stats.images)

    # --- per view ----------------------------------------------------------------------------
    assert [v.name for v in square.views] == ["thumbnail", "crop 0,0", "crop 0,1", "crop 1,0", "crop 1,1"]
    assert [(v.original, v.kept) for v in square.views] == [(576, 144)] * 5
    assert [v.name for v in wide.views] == ["thumbnail", "crop 0,0", "crop 0,1"]
    assert [(v.original, v.kept) for v in wide.views] == [(576, 144), (480, 120), (480, 120)]
    full = [(r, c) for r in range(24) for c in range(24)]
    left = [(r, c) for r in range(24) for c in range(4, 24)]  # letterbox: columns 0..3 of crop 0,0
    right = [(r, c) for r in range(24) for c in range(0, 20)]  # and columns 20..23 of crop 0,1
    assert [v.positions for v in wide.views] == [evenly(full, 144), evenly(left, 120), evenly(right, 120)]
    assert all(v.positions == evenly(full, 144) for v in square.views)
    assert all(v.sizes is None and v.sources is None and not v.info for v in square.views + wide.views)

    # --- per sample ----------------------------------------------------------------------------
    for sample, image, n in zip(stats.samples, stats.images, lengths):
        removed = (image.tokens_before - image.tokens_after) + (image.newlines_before - image.newlines_after)
        assert (sample.index, sample.length_before, sample.length_after) == (image.index, n, n - removed)
        text = model.config.text_config
        assert sample.prefill_flops_before == pytest.approx(prefill_flops(text, n), rel=1e-12)
        assert sample.prefill_flops_after == pytest.approx(prefill_flops(text, n - removed), rel=1e-12)
        saved = prefill_flops(text, n) - prefill_flops(text, n - removed)
        assert sample.flops_saved == pytest.approx(saved, rel=1e-9) and saved > 0
    assert logits.shape[1] >= max(s.length_after for s in stats.samples)

    # --- the whole call ----------------------------------------------------------------------
    assert (stats.tokens_before, stats.tokens_after) == (2880 + 1536, 720 + 384)
    assert stats.vision_seconds > 0 and stats.compress_seconds > 0
    lines = stats.summary().splitlines()
    pattern = r"image {}: {} -> {} visual tokens \(\+{} newlines\), uniform r=0.25, \d+\.\d\d ms"
    assert re.fullmatch(pattern.format(0, 2880, 720, 48), lines[0])
    assert re.fullmatch(pattern.format(1, 1536, 384, 24), lines[1])
    handle.remove()


@torch.no_grad()
def test_a_mixed_batch_is_repadded_to_its_longest_shortened_sample(model, tiny):
    """Not to the longest input row less the smallest cut (1799 positions here instead of 791):
    padding costs prefill."""
    processor = tiny[1]
    images = [make_image(672, 672, seed=0), make_image(500, 300, seed=1)]
    prompts = ["USER: <image>\nWhat? ASSISTANT:", "USER: <image>\nWhere is it? ASSISTANT:"]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    handle = vtc.compress(model, "uniform", ratio=0.25)
    logits = model(**inputs).logits
    lengths = [s.length_after for s in handle.last_stats.samples]
    handle.remove()
    assert logits.shape[1] == max(lengths)


@torch.no_grad()
def test_merging_stats_sizes_and_sources(model, tiny):
    """pitome: each view's sizes add up to its valid tokens, every valid patch is in exactly one
    token's sources, and a token stands at its first source in raster order."""
    processor = tiny[1]
    inputs = processor(
        images=[make_image(500, 300)], text=["USER: <image>\nWhat? ASSISTANT:"], return_tensors="pt"
    )
    handle = vtc.compress(model, "pitome", ratio=0.25)
    model(**inputs)
    image = handle.last_stats.images[0]
    valid = [
        {(r, c) for r in range(24) for c in range(24)},
        {(r, c) for r in range(24) for c in range(4, 24)},
        {(r, c) for r in range(24) for c in range(0, 20)},
    ]
    assert [v.kept for v in image.views] == [144, 120, 120]
    for view, patches in zip(image.views, valid):
        assert len(view.sizes) == len(view.sources) == len(view.positions) == view.kept
        assert sum(view.sizes) == view.original == len(patches)
        flat = [tuple(p) for token in view.sources for p in token]
        assert len(flat) == len(set(flat)) and set(flat) == patches
        assert [len(s) for s in view.sources] == view.sizes
        assert [tuple(view.positions[i]) for i in range(view.kept)] == [
            min(map(tuple, s)) for s in view.sources
        ]
        assert view.positions == sorted(view.positions)  # packed in raster order
    handle.remove()
