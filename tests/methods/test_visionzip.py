"""VisionZip: the official selection in paper mode, the exact budget, the batched path, bad input."""

from __future__ import annotations

import random

import pytest
import torch

from vtcompress.budget import keep_count
from vtcompress.config import CLS_ATTENTION
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.layout import UniformGridLayout, view_positions
from vtcompress.methods.visionzip import VisionZipConfig, contextual_share
from vtcompress.pipeline import check_applicable, compress_image, compress_images
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens, LayerQK

HEADS, DH, WIDTH, LAYERS = 3, 8, 6, 4
LAYER = LAYERS - 2  # the penultimate layer: what the default layer=-2 reads
SPEC = get_method("visionzip")


def one_view(side: int) -> UniformGridLayout:
    return UniformGridLayout(1, 1, (side, side), global_view=False)


def image(layout, gen: torch.Generator, keys: torch.Tensor | None = None) -> ImageTokens:
    h, w = layout.view_grid
    v, n = layout.num_views, h * w
    keys = torch.randn(v, 1 + n, HEADS, DH, generator=gen) if keys is None else keys
    qk = {LAYER: LayerQK(torch.randn(v, HEADS, DH, generator=gen), keys, DH**-0.5)}
    return ImageTokens(torch.randn(v, n, WIDTH, generator=gen), layout, qk, {}, 0, LAYERS - 1, LAYERS)


def official(hidden, q_cls, keys, scale, dominant, contextual):
    """The official steps on one view, written from their description: hidden [1+N, D] with [CLS]
    first, q_cls [H, dh], keys [1+N, H, dh]. Returns the kept patch indices (0-based, [CLS]
    excluded), the contextual targets' patch indices and the contextual tokens."""
    attn = torch.softmax(torch.einsum("hd,nhd->hn", q_cls, keys) * scale, dim=-1)
    top = attn[:, 1:].sum(0).topk(dominant - 1).indices + 1
    chosen = torch.cat([torch.zeros(1, dtype=torch.long), top])
    rest = torch.ones(hidden.shape[0], dtype=torch.bool)
    rest[chosen] = False
    metric = keys.mean(1)[rest]
    metric = metric / metric.norm(dim=-1, keepdim=True)
    hidden_rest, index_rest = hidden[rest], torch.arange(hidden.shape[0])[rest]
    m = metric.shape[0]
    targets = torch.arange(0, m, max(1, m // contextual))[:contextual]
    others = ~torch.isin(torch.arange(m), targets)
    assign = (metric[others] @ metric[targets].T).argmax(1)
    one_hot = torch.zeros(int(others.sum()), contextual).scatter_(1, assign[:, None], 1.0)
    merged = one_hot.T @ hidden_rest[others] / one_hot.sum(0).clamp(min=1)[:, None]
    return top - 1, index_rest[targets] - 1, hidden_rest[targets] + merged


@pytest.mark.parametrize("seed", range(6))
def test_paper_mode_is_the_official_selection(seed):
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    side = rng.choice([6, 8, 24])
    dominant, contextual = rng.choice([(54, 10), (5, 3), (10, 4), (2, 1)])
    dominant = min(dominant, side * side // 2)
    tokens = image(one_view(side), gen)
    cls_hidden = torch.randn(1, WIDTH, generator=gen)
    hidden = torch.cat([cls_hidden, tokens.features[0]])
    qk = tokens.qk[LAYER]
    top, targets, context = official(hidden, qk.q_cls[0], qk.keys[0], qk.scale, dominant, contextual)
    (out,) = compress_image(SPEC, VisionZipConfig.paper(dominant, contextual), tokens)
    expected = torch.cat([top, targets]).sort().values
    assert out.positions.tolist() == expected.tolist()
    is_context = torch.isin(out.positions, targets)
    assert torch.equal(out.features[~is_context], tokens.features[0, out.positions[~is_context]])
    order = targets.argsort()
    torch.testing.assert_close(out.features[is_context], context[order], rtol=1e-6, atol=1e-6)
    assert out.num_kept == dominant - 1 + contextual  # the [CLS] slot stays empty


def test_exact_mode_gives_the_cls_slot_to_one_more_patch():
    """At 64 tokens of a 24x24 view: the published 54 + 10, all 54 dominant slots patch tokens."""
    gen = torch.Generator().manual_seed(3)
    tokens = image(one_view(24), gen)
    qk = tokens.qk[LAYER]
    attention = torch.softmax(torch.einsum("hd,nhd->hn", qk.q_cls[0], qk.keys[0]) * qk.scale, -1)[:, 1:].sum(
        0
    )
    (out,) = compress_image(SPEC, VisionZipConfig(ratio=64 / 576), tokens)
    assert out.num_kept == 64
    top54 = set(attention.topk(54).indices.tolist())
    assert top54 <= set(out.positions.tolist())
    assert int((out.sizes > 1).sum()) <= 10 and contextual_share(64) == 10


def test_published_proportion():
    assert [contextual_share(k) for k in (64, 128, 192, 221, 1, 3, 4)] == [10, 20, 30, 35, 0, 0, 1]


def test_equal_attention_keeps_the_lower_positions():
    gen = torch.Generator().manual_seed(0)
    layout = one_view(6)
    keys = torch.randn(1, 1, HEADS, DH, generator=gen).expand(1, 37, HEADS, DH).clone()
    tokens = image(layout, gen, keys)  # every patch has the [CLS] key: uniform attention
    (out,) = compress_image(SPEC, VisionZipConfig(dominant=5, contextual=0), tokens)
    assert out.positions.tolist() == [0, 1, 2, 3, 4]


def test_override_keeps_the_same_split_in_every_view_even_at_ratio_one():
    gen = torch.Generator().manual_seed(1)
    layout = AnyResLayout.from_grid(2, 2, 6, (300, 500))  # unpadding cuts some crops
    tokens = image(layout, gen)
    config = VisionZipConfig(ratio=1.0, dominant=8, contextual=3)
    assert not config.is_off
    outs = compress_images(SPEC, config, [tokens])[0].views
    assert [o.num_kept for o in outs] == [min(11, n) for n in layout.view_counts()]


def test_counts_are_a_function_of_layout_and_ratio():
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    for _ in range(30):
        layout = AnyResLayout.from_grid(*rng.choice([(1, 2), (2, 2), (3, 1)]), 6, (rng.randint(20, 900), 400))
        ratio = rng.choice([0.05, 0.1, 0.3, 0.5, 0.9])
        outs = compress_image(SPEC, VisionZipConfig(ratio=ratio), image(layout, gen))
        assert sum(o.num_kept for o in outs) == keep_count(layout.num_tokens(), ratio)
        valid = [set(p.tolist()) for p in view_positions(layout)]
        assert all(set(o.positions.tolist()) <= v for o, v in zip(outs, valid))  # never a padded token


@pytest.mark.parametrize(
    "config", [VisionZipConfig(ratio=0.3), VisionZipConfig.paper(7, 3)], ids=["exact", "paper"]
)
def test_batch_equals_one_by_one(config):
    rng, gen = random.Random(5), torch.Generator().manual_seed(5)
    layouts = [AnyResLayout.from_grid(*g, 6, s) for g, s in [((1, 2), (300, 700)), ((2, 2), (800, 800))]]
    tokens = [image(rng.choice(layouts), gen) for _ in range(5)]
    results = compress_images(SPEC, config, tokens)
    assert all(r.batch is not None for r in results)
    for t, r in zip(tokens, results):
        ref = compress_image(SPEC, config, t)
        assert r.num_kept == sum(o.num_kept for o in ref)
        for got, want in zip(r.views, ref):
            assert torch.equal(got.positions, want.positions)
            assert torch.equal(got.features, want.features)
            assert torch.equal(got.sizes, want.sizes)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(dominant=54), "set both"),
        (dict(dominant=-1, contextual=2), "whole number"),
        (dict(dominant=0, contextual=0), "at least one"),
        (dict(cls_slot="cls"), "cls_slot"),
        (dict(dominant=0, contextual=3, cls_slot="drop"), "dominant >= 1"),
    ],
)
def test_bad_options_name_the_fix(options, match):
    with pytest.raises(ValueError, match=match):
        VisionZipConfig(**options)


def test_a_host_without_cls_refuses_it_in_one_line():
    with pytest.raises(ValueError) as err:
        check_applicable(VisionZipConfig(), "SomeHost (a tower without [CLS])", frozenset(), 23, 24)
    message = str(err.value)
    assert "\n" not in message and "visionzip" in message and "divprune" in message
    check_applicable(VisionZipConfig(), "host", frozenset({CLS_ATTENTION}), 23, 24)
    assert VisionZipConfig().capture_layers(23, 24) == ({22}, set())
