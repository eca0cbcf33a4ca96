"""The batched path of every selection method keeps exactly the tokens of its per-image path."""

from __future__ import annotations

import random

import pytest
import torch

from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.layout import UniformGridLayout
from vtcompress.packing import pack_selected, pack_views
from vtcompress.pipeline import compress_image, compress_images
from vtcompress.registry import get_method, make_config
from vtcompress.tokens import ImageTokens, LayerQK

SIDE, HEADS, DH, WIDTH, LAYER = 6, 2, 4, 5, 1
BATCHED = ["uniform", "random", "fastervlm", "globalcom2"]


def anyres_layout(rng: random.Random) -> AnyResLayout:
    rows, cols = rng.choice([(1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (2, 3)])
    size = (rng.randint(20, 900), rng.randint(20, 900))
    return AnyResLayout.from_grid(rows, cols, SIDE, size)


def image(layout, gen: torch.Generator, index: int = 0) -> ImageTokens:
    h, w = layout.view_grid
    v, n = layout.num_views, h * w
    qk = {
        LAYER: LayerQK(
            torch.randn(v, HEADS, DH, generator=gen),
            torch.randn(v, 1 + n, HEADS, DH, generator=gen),
            DH**-0.5,
        )
    }
    return ImageTokens(torch.randn(v, n, WIDTH, generator=gen), layout, qk, {}, index, LAYER, 2)


def configs(method: str, rng: random.Random):
    ratio = rng.choice([0.05, 0.1, 0.25, 0.4, 0.5, 0.7, 0.9, 0.99])
    opts = {"ratio": ratio}
    if method == "random":
        opts["seed"] = rng.randint(0, 5)
    if method == "globalcom2":
        opts |= {
            # alpha 0 scores crops by the upsampled thumbnail alone, full of exact ties, among
            # which torch.topk (the per-image path) picks in no specified order: tested apart.
            "alpha": rng.choice([0.3, 0.5, 1.0]),
            "temperature": rng.choice([0.01, 1.0, 10.0]),
            "region_aggregation": rng.choice(["sum", "mean"]),
            "score": rng.choice(["cls", "cls", "mean_cos"]),
        }
    return make_config(method, **opts)


def kept_sets(outs) -> list[list[int]]:
    return [sorted(o.positions.tolist()) for o in outs]


@pytest.mark.parametrize("method", BATCHED)
def test_batched_keeps_the_reference_tokens(method):
    spec = get_method(method)
    rng, gen = random.Random(method), torch.Generator().manual_seed(0)
    for case in range(40):
        config = configs(method, rng)
        layouts = [anyres_layout(rng) for _ in range(rng.randint(1, 3))]
        # images of a few layouts, interleaved: each layout's images go through one batch
        tokens = [image(rng.choice(layouts), gen, i) for i in range(rng.randint(1, 6))]
        results = compress_images(spec, config, tokens)
        assert all(r.batch is not None for r in results), "every image should take the batched path"
        for t, r in zip(tokens, results):
            ref = compress_image(spec, config, t)
            assert r.num_kept == sum(o.num_kept for o in ref), (case, config)
            assert kept_sets(r.views) == kept_sets(ref), (case, config)
            for got, want in zip(r.views, ref):
                order = torch.argsort(want.positions)
                assert torch.equal(got.features, want.features[order])


@pytest.mark.parametrize("method", BATCHED)
@pytest.mark.parametrize("policy", ["unpadded", "padded", "none"])
def test_batched_packing_matches_pack_views(method, policy):
    spec = get_method(method)
    rng, gen = random.Random(f"{method}{policy}"), torch.Generator().manual_seed(1)
    newline = torch.randn(WIDTH, generator=gen)
    for _ in range(15):
        config = configs(method, rng)
        layout = anyres_layout(rng)
        tokens = [image(layout, gen, i) for i in range(rng.randint(1, 4))]
        (first, *_) = results = compress_images(spec, config, tokens)
        packed = pack_selected(first.batch, newline, policy)
        for t, got in zip(tokens, packed):
            ref = compress_image(spec, config, t)
            want = pack_views(layout, [o.positions for o in ref], [o.features for o in ref], newline, policy)
            assert torch.equal(got, want)
        assert len(results) == len(tokens)


def test_static_layout_reaches_the_layout_mask_once():
    """uniform/random keep the same positions in every image of a layout (no device work)."""
    layout = AnyResLayout.from_grid(2, 2, SIDE, (500, 300))
    gen = torch.Generator().manual_seed(2)
    tokens = [image(layout, gen, i) for i in range(3)]
    results = compress_images(get_method("uniform"), make_config("uniform", ratio=0.3), tokens)
    assert results[0].batch.static and results[0].batch is results[2].batch


def test_paper_mode_and_single_views_take_the_per_image_path():
    gen = torch.Generator().manual_seed(3)
    layout = AnyResLayout.from_grid(2, 2, SIDE, (400, 400))
    tokens = [image(layout, gen, i) for i in range(2)]
    paper = compress_images(get_method("globalcom2"), make_config("globalcom2").paper(), tokens)
    assert all(r.batch is None for r in paper)
    for t, r in zip(tokens, paper):
        assert kept_sets(r.views) == kept_sets(
            compress_image(get_method("globalcom2"), make_config("globalcom2").paper(), t)
        )


def test_docowl_grouped_layout_batches_identically():
    """DocOwl's layout: 1x4 patch groups, a global view, every token valid."""
    rng, gen = random.Random(4), torch.Generator().manual_seed(4)
    for method in BATCHED:
        spec = get_method(method)
        for _ in range(5):
            layout = UniformGridLayout(rng.randint(1, 3), rng.randint(1, 3), (4, 2), True, (1, 4))
            v = layout.num_views
            tokens = []
            for i in range(3):
                qk = {
                    LAYER: LayerQK(
                        torch.randn(v, HEADS, DH, generator=gen),
                        torch.randn(v, 1 + 32, HEADS, DH, generator=gen),
                        0.5,
                    )
                }
                tokens.append(
                    ImageTokens(torch.randn(v, 8, WIDTH, generator=gen), layout, qk, {}, i, LAYER, 2)
                )
            config = configs(method, rng)
            for t, r in zip(tokens, compress_images(spec, config, tokens)):
                assert r.batch is not None
                assert kept_sets(r.views) == kept_sets(compress_image(spec, config, t))


def test_globalcom2_ties_keep_the_same_counts_per_view():
    """With alpha 0 (many tied scores) the batched path still gives every view its reference budget."""
    rng, gen = random.Random(5), torch.Generator().manual_seed(5)
    spec = get_method("globalcom2")
    for _ in range(20):
        config = configs("globalcom2", rng).replace(alpha=0.0, score="cls")
        layout = anyres_layout(rng)
        tokens = [image(layout, gen, i) for i in range(3)]
        for t, r in zip(tokens, compress_images(spec, config, tokens)):
            assert [o.num_kept for o in r.views] == [o.num_kept for o in compress_image(spec, config, t)]


def test_globalcom2_water_filling_rounds_match_split_budget():
    """High ratios let a crop's share reach its cap: the device split then runs several rounds."""
    from vtcompress.methods.globalcom2 import _exact_plans

    spec, gen, rng = get_method("globalcom2"), torch.Generator().manual_seed(6), random.Random(6)
    several = 0
    for _ in range(30):
        config = make_config(
            "globalcom2", ratio=rng.choice([0.6, 0.8, 0.95]), temperature=rng.choice([0.01, 0.1])
        )
        layout = anyres_layout(rng)
        several += _exact_plans(layout, config)["rounds"] > 1
        tokens = [image(layout, gen, i) for i in range(3)]
        for t, r in zip(tokens, compress_images(spec, config, tokens)):
            assert kept_sets(r.views) == kept_sets(compress_image(spec, config, t))
    assert several > 10
