"""downsample: area-average pooling to the exact budget, tiling, positions, the batched path."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from vtcompress.budget import keep_count
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.layout import UniformGridLayout, view_positions
from vtcompress.methods.downsample import DownsampleConfig, grid_cells
from vtcompress.pipeline import compress_image, compress_images
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens

SPEC = get_method("downsample")


@pytest.mark.parametrize("ratio, kernel", [(0.25, 2), (1 / 9, 3), (1 / 16, 4)])
def test_an_even_tiling_is_average_pooling(ratio, kernel):
    gen = torch.Generator().manual_seed(0)
    layout = UniformGridLayout(1, 1, (24, 24), global_view=False)
    x = torch.randn(1, 576, 8, generator=gen)
    (out,) = compress_image(SPEC, DownsampleConfig(ratio=ratio), ImageTokens(x, layout))
    pooled = F.avg_pool2d(x[0].T.reshape(1, 8, 24, 24), kernel)  # [1, 8, 24/k, 24/k]
    torch.testing.assert_close(out.features, pooled[0].flatten(1).T, rtol=1e-6, atol=1e-6)
    side = 24 // kernel
    top_left = [r * kernel * 24 + c * kernel for r in range(side) for c in range(side)]
    assert out.positions.tolist() == top_left
    assert out.sizes.tolist() == [kernel * kernel] * side * side


def test_cells_tile_the_grid_with_near_equal_areas():
    for h in range(1, 13):
        for w in range(1, 13):
            for k in range(1, h * w + 1):
                cells = grid_cells(h, w, k)
                flat = [p for cell in cells for p in cell]
                assert len(cells) == k and sorted(flat) == [(r, c) for r in range(h) for c in range(w)]
                firsts = [cell[0] for cell in cells]
                assert firsts == sorted(firsts)  # raster order of the top-left corners
    sizes = [len(c) for c in grid_cells(24, 24, 288)]
    assert set(sizes) == {2}  # ratio 0.5 on a 24x24 view: every cell two patches


def test_counts_and_only_valid_tokens_pooled():
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    for _ in range(30):
        layout = AnyResLayout.from_grid(*rng.choice([(1, 2), (2, 2), (3, 1)]), 6, (rng.randint(20, 900), 400))
        ratio = rng.choice([0.05, 0.1, 0.3, 0.5, 0.9])
        h, w = layout.view_grid
        x = torch.randn(layout.num_views, h * w, 4, generator=gen)
        invalid = torch.ones(layout.num_views, h * w, dtype=torch.bool)
        for v, pos in enumerate(view_positions(layout)):
            invalid[v, pos] = False
        x[invalid] = float("nan")  # a padded token must never reach a pooled one
        outs = compress_image(SPEC, DownsampleConfig(ratio=ratio), ImageTokens(x, layout))
        assert sum(o.num_kept for o in outs) == keep_count(layout.num_tokens(), ratio)
        for v, (o, pos, n) in enumerate(zip(outs, view_positions(layout), layout.view_counts())):
            assert torch.isfinite(o.features).all()
            assert int(o.sizes.sum()) == (n if o.num_kept else 0)
            assert set(o.positions.tolist()) <= set(pos.tolist())
            for src, feat in zip(o.sources, o.features):
                torch.testing.assert_close(feat, x[v, src].mean(0))


def test_batch_equals_one_by_one():
    rng, gen = random.Random(3), torch.Generator().manual_seed(3)
    layouts = [AnyResLayout.from_grid(*g, 6, s) for g, s in [((1, 2), (300, 700)), ((2, 2), (800, 800))]]
    tokens = []
    for _ in range(5):
        layout = rng.choice(layouts)
        h, w = layout.view_grid
        tokens.append(ImageTokens(torch.randn(layout.num_views, h * w, 8, generator=gen), layout))
    config = DownsampleConfig(ratio=0.3)
    results = compress_images(SPEC, config, tokens)
    assert all(r.batch is not None for r in results)
    for t, r in zip(tokens, results):
        ref = compress_image(SPEC, config, t)
        for got, want in zip(r.views, ref):
            assert torch.equal(got.positions, want.positions)
            assert torch.equal(got.features, want.features)
            assert torch.equal(got.sizes, want.sizes)
