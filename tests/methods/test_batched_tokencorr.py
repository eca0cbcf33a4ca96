"""Batched tokencorr (exact allocation, "inside") keeps the per-image path's tokens and stats."""

from __future__ import annotations

import random

import torch

from vtcompress.budget import split_budget, split_budget_rows
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.layout import UniformGridLayout
from vtcompress.packing import pack_selected, pack_views
from vtcompress.pipeline import compress_image, compress_images
from vtcompress.registry import get_method, make_config
from vtcompress.tokens import ImageTokens, LayerQK

SIDE, HEADS, DH, WIDTH, LAYERS = 6, 2, 4, 5, 4  # tokencorr's layers: low 0, deep 2


def image(layout, gen: torch.Generator, index: int, redundancy: float) -> ImageTokens:
    v, n = layout.num_views, SIDE * SIDE
    qk = {}
    for layer in (0, 2):
        # keys near a few shared directions: the higher ``redundancy``, the more alike tokens
        centres = torch.randn(v, 3, HEADS, DH, generator=gen)
        pick = torch.randint(0, 3, (v, 1 + n), generator=gen)
        keys = redundancy * centres.gather(1, pick[..., None, None].expand(v, 1 + n, HEADS, DH))
        keys = keys + torch.randn(v, 1 + n, HEADS, DH, generator=gen)
        qk[layer] = LayerQK(torch.randn(v, HEADS, DH, generator=gen), keys, DH**-0.5)
    return ImageTokens(torch.randn(v, n, WIDTH, generator=gen), layout, qk, {}, index, LAYERS - 1, LAYERS)


def layouts(rng: random.Random) -> AnyResLayout:
    rows, cols = rng.choice([(1, 2), (2, 1), (2, 2), (1, 3), (2, 3)])
    return AnyResLayout.from_grid(rows, cols, SIDE, (rng.randint(20, 900), rng.randint(20, 900)))


def config(rng: random.Random):
    return make_config(
        "tokencorr",
        ratio=rng.choice([0.05, 0.1, 0.25, 0.5, 0.8]),
        tau=rng.choice([0.3, 0.6, 0.9]),
        min_similar=rng.choice([1, 3, 8]),
        iqr_k=rng.choice([0.0, 0.5, 1.5]),
        sampling=rng.choice(["sample", "sample", "topk"]),
        seed=rng.randint(0, 3),
        compress_global=rng.random() < 0.3,
        key_heads=rng.choice(["concat", "mean"]),
    )


def plain(info: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in info.items()}


def test_batched_tokencorr_equals_per_image():
    spec, rng, gen = get_method("tokencorr"), random.Random(0), torch.Generator().manual_seed(0)
    newline = torch.randn(WIDTH, generator=gen)
    for case in range(40):
        cfg = config(rng)
        groups = [layouts(rng) for _ in range(2)]
        tokens = [
            image(rng.choice(groups), gen, i, rng.choice([0.0, 2.0, 8.0])) for i in range(rng.randint(1, 5))
        ]
        results = compress_images(spec, cfg, tokens)
        assert all(r.batch is not None for r in results)
        for t, r in zip(tokens, results):
            ref = compress_image(spec, cfg, t)
            assert r.num_kept == sum(o.num_kept for o in ref), (case, cfg)
            assert [o.positions.tolist() for o in r.views] == [o.positions.tolist() for o in ref], (case, cfg)
            assert [plain(o.info) for o in r.views] == [plain(o.info) for o in ref], (case, cfg)
            assert all(torch.equal(a.features, b.features) for a, b in zip(r.views, ref))
            packed = pack_selected(r.batch, newline)[r.row]
            want = pack_views(t.layout, [o.positions for o in ref], [o.features for o in ref], newline)
            assert torch.equal(packed, want)


def test_other_modes_keep_the_per_image_path():
    spec, gen = get_method("tokencorr"), torch.Generator().manual_seed(1)
    layout = AnyResLayout.from_grid(2, 2, SIDE, (400, 400))
    tokens = [image(layout, gen, i, 2.0) for i in range(2)]
    for cfg in (
        make_config("tokencorr", combine="union"),
        make_config("tokencorr", allocation="adaptive"),
        make_config("tokencorr").paper(),
    ):
        assert all(r.batch is None for r in compress_images(spec, cfg, tokens))
    grouped = UniformGridLayout(1, 2, (2, 2), True, (1, 4))
    qk = {i: LayerQK(torch.randn(3, HEADS, DH), torch.randn(3, 17, HEADS, DH), 0.5) for i in (0, 2)}
    docowl = ImageTokens(torch.randn(3, 4, WIDTH), grouped, qk, {}, 0, LAYERS - 1, LAYERS)
    assert compress_images(spec, make_config("tokencorr"), [docowl])[0].batch is None


def test_split_budget_rows_equals_split_budget():
    rng, gen = random.Random(2), torch.Generator().manual_seed(2)
    for _ in range(300):
        n = rng.randint(1, 7)
        caps = torch.tensor([rng.choice([0, 1, 2, 5, 30]) for _ in range(n)])
        weights = torch.rand(3, n, generator=gen, dtype=torch.float64) * rng.choice([1, 100])
        weights[:, rng.randrange(n)] *= rng.choice([0, 1, 50])  # zero and dominant weights
        total = rng.randint(0, int(caps.sum()))
        got = split_budget_rows(weights, caps, total, n)
        assert got.tolist() == [split_budget(total, w, caps) for w in weights]
