"""DivPrune: the official selection in paper mode, ties, exact budgets, the batched path."""

from __future__ import annotations

import random

import pytest
import torch

from vtcompress.budget import keep_count
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.layout import UniformGridLayout, view_positions
from vtcompress.methods.divprune import DivPruneConfig
from vtcompress.pipeline import compress_image, compress_images
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens

SPEC = get_method("divprune")


def official(x: torch.Tensor, ratio: float) -> list[int]:
    """The official steps, written from their description: [n, D] tokens -> kept indices, sorted."""
    k = int(round(ratio * x.shape[0]))
    unit = x / x.norm(dim=1, keepdim=True)
    dist = 1.0 - unit @ unit.T
    picked: list[int] = []
    for i in range(k):
        if i == 0:
            scores = torch.topk(dist, 2, dim=0, largest=False).values[1, :]
        else:
            scores = dist[torch.tensor(picked)].min(dim=0).values
        picked.append(int(torch.argmax(scores)))
    return sorted(picked)


def kept(outs, layout) -> list[int]:
    """Kept tokens as indices into the image's valid tokens, views in order."""
    index, start = [], 0
    for out, pos in zip(outs, view_positions(layout)):
        index += [start + int((pos == p).nonzero()) for p in out.positions]
        start += len(pos)
    return index


@pytest.mark.parametrize("seed", range(5))
def test_paper_mode_is_the_official_selection(seed):
    gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    ratio = rng.choice([0.098, 0.25, 0.5, 0.13])
    layout = rng.choice(
        [UniformGridLayout(1, 1, (24, 24), global_view=False), AnyResLayout.from_grid(2, 2, 6, (500, 300))]
    )
    h, w = layout.view_grid
    tokens = ImageTokens(torch.randn(layout.num_views, h * w, 16, generator=gen), layout)
    valid = torch.cat([tokens.features[v, p] for v, p in enumerate(view_positions(layout))])
    outs = compress_image(SPEC, DivPruneConfig.paper(ratio), tokens)
    assert kept(outs, layout) == official(valid, ratio)
    assert sum(o.num_kept for o in outs) == int(round(ratio * layout.num_tokens()))


def test_ties_go_to_the_first_index():
    """Four directions, each three times: every first-pick score ties (a duplicate is at distance 0),
    and each later pick ties among a direction's copies; the first index wins each time."""
    directions = torch.eye(4)
    x = directions[[2, 0, 2, 1, 3, 0, 1, 3, 2, 1, 0, 3]]
    tokens = ImageTokens(x.view(1, 12, 4), UniformGridLayout(1, 1, (3, 4), global_view=False))
    (out,) = compress_image(SPEC, DivPruneConfig(ratio=4 / 12), tokens)
    assert out.positions.tolist() == official(x, 4 / 12) == [0, 1, 3, 4]


def test_exact_counts_and_scope_view():
    rng, gen = random.Random(1), torch.Generator().manual_seed(1)
    for _ in range(20):
        layout = AnyResLayout.from_grid(*rng.choice([(1, 2), (2, 2), (2, 3)]), 6, (rng.randint(30, 900), 500))
        ratio = rng.choice([0.05, 0.2, 0.5, 0.8])
        h, w = layout.view_grid
        tokens = ImageTokens(torch.randn(layout.num_views, h * w, 8, generator=gen), layout)
        outs = compress_image(SPEC, DivPruneConfig(ratio=ratio), tokens)
        assert sum(o.num_kept for o in outs) == keep_count(layout.num_tokens(), ratio)
        per_view = compress_image(SPEC, DivPruneConfig(ratio=ratio, scope="view"), tokens)
        counts = layout.view_counts()
        budgets = [o.num_kept for o in per_view]
        assert sum(budgets) == keep_count(layout.num_tokens(), ratio)
        assert all(b <= n for b, n in zip(budgets, counts))
        valid = [set(p.tolist()) for p in view_positions(layout)]
        assert all(set(o.positions.tolist()) <= v for o, v in zip(outs + per_view, valid + valid))


@pytest.mark.parametrize("scope", ["image", "view"])
def test_batch_equals_one_by_one(scope):
    rng, gen = random.Random(2), torch.Generator().manual_seed(2)
    layouts = [AnyResLayout.from_grid(*g, 6, s) for g, s in [((1, 2), (300, 700)), ((2, 2), (800, 800))]]
    tokens = []
    for _ in range(5):
        layout = rng.choice(layouts)
        h, w = layout.view_grid
        tokens.append(ImageTokens(torch.randn(layout.num_views, h * w, 8, generator=gen), layout))
    config = DivPruneConfig(ratio=0.3, scope=scope)
    results = compress_images(SPEC, config, tokens)
    assert all(r.batch is not None for r in results)
    for t, r in zip(tokens, results):
        ref = compress_image(SPEC, config, t)
        assert r.num_kept == sum(o.num_kept for o in ref)
        for got, want in zip(r.views, ref):
            assert torch.equal(got.positions, want.positions)
            assert torch.equal(got.features, want.features)


@pytest.mark.parametrize("options", [dict(allocation="round"), dict(scope="crop")])
def test_bad_options_name_the_choices(options):
    with pytest.raises(ValueError, match="must be one of"):
        DivPruneConfig(**options)
