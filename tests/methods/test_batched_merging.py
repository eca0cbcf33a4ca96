"""Batched PiToMe / ToMe (projector placement) merge exactly as view by view."""

from __future__ import annotations

import random

import pytest
import torch

from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.layout import view_positions
from vtcompress.packing import pack_selected, pack_views
from vtcompress.pipeline import compress_image, compress_images
from vtcompress.registry import get_method, make_config
from vtcompress.tokens import ImageTokens

SIDE, WIDTH, HIDDEN, LAYERS = 6, 5, 7, 4


def image(layout, gen: torch.Generator, index: int) -> ImageTokens:
    v, n = layout.num_views, SIDE * SIDE
    hidden = {LAYERS - 1: torch.randn(v, 1 + n, HIDDEN, generator=gen)}
    return ImageTokens(torch.randn(v, n, WIDTH, generator=gen), layout, {}, hidden, index, LAYERS - 1, LAYERS)


def same(a, b) -> bool:
    return (
        torch.equal(a.positions, b.positions)
        and torch.equal(a.features, b.features)
        and torch.equal(a.sizes, b.sizes)
        and [s.tolist() for s in a.sources] == [s.tolist() for s in b.sources]
    )


@pytest.mark.parametrize("method", ["tome", "pitome"])
def test_batched_merging_equals_per_view(method):
    spec, rng, gen = get_method(method), random.Random(method), torch.Generator().manual_seed(0)
    newline = torch.randn(WIDTH, generator=gen)
    batched = 0
    for case in range(25):
        config = make_config(
            method,
            ratio=rng.choice([0.1, 0.25, 0.5, 0.9]),
            metric=rng.choice(["vision", "projected"]),
            merge=rng.choice(["weighted", "mean"]),
            steps=rng.choice([1, 4]),
        )
        rows, cols = rng.choice([(1, 2), (2, 1), (2, 2), (1, 3)])
        layouts = [
            AnyResLayout.from_grid(rows, cols, SIDE, (rng.randint(100, 900), rng.randint(100, 900)))
            for _ in range(2)
        ]
        tokens = [image(rng.choice(layouts), gen, i) for i in range(rng.randint(1, 4))]
        results = compress_images(spec, config, tokens)
        for t, r in zip(tokens, results):
            if r.batch is None:  # a view with no valid token or no budget: the per-image path
                continue
            ref = compress_image(spec, config, t)
            assert r.num_kept == sum(o.num_kept for o in ref), (case, config)
            assert all(same(a, b) for a, b in zip(r.views, ref)), (case, config)
            packed = pack_selected(r.batch, newline)[r.row]
            want = pack_views(t.layout, [o.positions for o in ref], [o.features for o in ref], newline)
            assert torch.equal(packed, want), (case, config)
        batched += sum(r.batch is not None for r in results)
    assert batched >= 20


def test_tower_placement_keeps_the_per_image_path():
    layout = AnyResLayout.from_grid(2, 2, SIDE, (400, 400))
    tokens = [image(layout, torch.Generator().manual_seed(1), 0)]
    config = make_config("tome", placement="tower")
    assert get_method("tome").compress_batch(tokens, config) is None


@pytest.mark.parametrize("method", ["tome", "pitome"])
def test_a_view_whose_share_is_nothing_keeps_no_token(method):
    """At a tiny ratio floor(r N) is below the number of views: views with a budget of 0 keep
    nothing, the others merge to theirs, and the image keeps exactly floor(r N)."""
    from vtcompress.budget import keep_count
    from vtcompress.methods.baselines import uniform_view_budgets

    layout = AnyResLayout.from_grid(2, 2, SIDE, (400, 400))  # 5 views
    t = image(layout, torch.Generator().manual_seed(2), 0)
    config = make_config(method, ratio=0.02, metric="projected")
    budgets = uniform_view_budgets(t, 0.02)
    assert 0 in budgets and sum(budgets) == keep_count(layout.num_tokens(), 0.02)
    for r in compress_images(get_method(method), config, [t]):
        assert [o.num_kept for o in r.views] == budgets
        assert all(o.features.shape == (o.num_kept, WIDTH) for o in r.views)
        assert all(
            int(o.sizes.sum()) == len(p) for o, p, k in zip(r.views, view_positions(layout), budgets) if k
        )
