"""The registered ``tokencorr`` method on anyres ImageTokens: budgets, layout, stats, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.tokencorr import synthetic_tokens
from vtcompress.budget import keep_count
from vtcompress.methods.tokencorr import (
    TokenCorrConfig,
    plan_views,
    tokencorr,
    view_generator,
    view_valid_mask,
)
from vtcompress.methods.tokencorr_ops import cls_patch_probs, information_density, patch_keys, select_view
from vtcompress.packing import pack_views
from vtcompress.registry import get_method, make_config
from vtcompress.tokens import keep_all

LAYERS = (0, 1, 2, 3)


def tokens_with_density(clusters, **kw):
    return synthetic_tokens(layers=LAYERS, clusters=clusters, **kw)


def test_registered_with_its_config():
    spec = get_method("tokencorr")
    assert spec.compress is tokencorr and spec.config_cls is TokenCorrConfig
    cfg = make_config("tokencorr", ratio=0.5, sampling="topk")
    assert isinstance(cfg, TokenCorrConfig) and cfg.to_dict()["method"] == "tokencorr"


@pytest.mark.parametrize(
    "kw",
    [
        {"allocation": "budget"},
        {"key_heads": "sum"},
        {"sampling": "random"},
        {"group_pool": "median"},
        {"scale": 0.0},
        {"tau": 1.5},
        {"min_similar": 0},
        {"iqr_k": -1.0},
        {"ratio": 0.0},
    ],
)
def test_bad_options_raise(kw):
    with pytest.raises(ValueError):
        TokenCorrConfig(**kw)


def test_capture_layers_resolve_negative_indices():
    cfg = TokenCorrConfig(low_layer=3, deep_layer=-2)
    assert cfg.capture_layers(score_layer=23, num_layers=24) == ({3, 22}, set())
    assert TokenCorrConfig().resolve_layers(24) == (2, 22)  # default low layer: num_layers // 12
    assert TokenCorrConfig().resolve_layers(2) == (0, 0)
    assert TokenCorrConfig(low_layer=-24, deep_layer=23).resolve_layers(24) == (0, 23)
    with pytest.raises(ValueError, match="outside a vision tower of 4 layers"):
        TokenCorrConfig(low_layer=4).capture_layers(3, 4)
    with pytest.raises(TypeError):
        TokenCorrConfig(low_layer=1.5)


def test_missing_layer_is_named():
    tokens = synthetic_tokens(layers=(2,))
    with pytest.raises(KeyError, match=r"vision layers \[0\]; captured: \[2\]"):
        tokencorr(tokens, TokenCorrConfig(low_layer=0, deep_layer=2))


@pytest.mark.parametrize("allocation", ["adaptive", "exact"])
def test_ratio_one_keeps_everything_exactly(allocation):
    tokens = tokens_with_density([1, 3, 9, 50, 2, 7], rows=1, cols=5, side=6, image_size=(20, 100))
    outs = tokencorr(tokens, TokenCorrConfig(ratio=1.0, allocation=allocation))
    ref = keep_all(tokens)
    assert len(outs) == len(ref)
    for got, want in zip(outs, ref):
        assert torch.equal(got.positions, want.positions)
        assert torch.equal(got.features, want.features)
        assert got.info["compressed"] is False
    newline = torch.randn(tokens.features.shape[-1])
    packed = pack_views(tokens.layout, [o.positions for o in outs], [o.features for o in outs], newline)
    stock = pack_views(tokens.layout, [o.positions for o in ref], [o.features for o in ref], newline)
    assert torch.equal(packed, stock)


def test_scale_with_ratio_one_still_compresses():
    tokens = tokens_with_density([1, 1, 50])
    outs = tokencorr(tokens, TokenCorrConfig.paper())
    # scale 1: n_c = ceil(rho N); a one-key crop has density 0 and keeps one token.
    assert outs[1].num_kept == 1
    assert outs[2].num_kept == math.ceil(outs[2].info["density"] * 36 - 1e-9)


def test_thumbnail_left_whole_unless_asked():
    tokens = tokens_with_density([1, 1, 1])
    outs = tokencorr(tokens, TokenCorrConfig(allocation="adaptive", ratio=0.5))
    assert outs[0].num_kept == 36 and outs[0].info["compressed"] is False
    assert 0.0 <= outs[0].info["density"] <= 1.0  # reported even when uncompressed
    outs = tokencorr(tokens, TokenCorrConfig(allocation="adaptive", ratio=0.5, compress_global=True))
    assert outs[0].num_kept == 1 and outs[0].info["compressed"] is True


def test_single_view_image_is_compressed():
    tokens = synthetic_tokens(rows=0, cols=0, side=6, layers=LAYERS, clusters=[1])
    outs = tokencorr(tokens, TokenCorrConfig(allocation="adaptive", ratio=0.5))
    assert len(outs) == 1 and outs[0].num_kept == 1


def test_dense_crop_keeps_more_and_ratio_bounds_the_total():
    tokens = tokens_with_density([5, 1, 4, 36], rows=1, cols=3)
    cfg = TokenCorrConfig(allocation="adaptive", ratio=0.5, tau=0.9, min_similar=2)
    outs = tokencorr(tokens, cfg)
    kept = [o.num_kept for o in outs[1:]]
    dens = [o.info["density"] for o in outs[1:]]
    assert dens[0] == 0.0 and dens[2] > dens[1]
    assert kept[0] == 1 and kept[2] > kept[1]
    assert kept == [max(1, math.ceil(d * 36 * 0.5 - 1e-9)) for d in dens]
    assert sum(kept) <= keep_count(3 * 36, 0.5) + 3


def test_exact_mode_total_is_a_function_of_size_and_ratio():
    for clusters in ([5, 1, 4, 36], [5, 36, 36, 36], [5, 2, 2, 2]):
        tokens = tokens_with_density(clusters, rows=1, cols=3)
        outs = tokencorr(tokens, TokenCorrConfig(ratio=0.3, allocation="exact"))
        assert outs[0].num_kept == 36  # the thumbnail stays whole and counts inside the total
        assert sum(o.num_kept for o in outs) == keep_count(4 * 36, 0.3)
        assert all(o.num_kept >= 1 for o in outs)
        # a total too small to keep the thumbnail whole compresses every view
        outs = tokencorr(tokens, TokenCorrConfig(ratio=0.2, allocation="exact"))
        assert sum(o.num_kept for o in outs) == keep_count(4 * 36, 0.2) and outs[0].num_kept < 36
        assert all(o.num_kept >= 1 for o in outs)
    tokens = tokens_with_density([5, 1, 4, 36], rows=1, cols=3)
    outs = tokencorr(tokens, TokenCorrConfig(ratio=0.3, allocation="exact", compress_global=True))
    assert sum(o.num_kept for o in outs) == keep_count(4 * 36, 0.3)


@pytest.mark.parametrize(
    "rows,cols,image_size",
    [(2, 2, (60, 120)), (3, 1, (30, 60))],  # second: the top and bottom crops are all padding
)
def test_padding_is_never_kept_and_positions_are_raster_order(rows, cols, image_size):
    tokens = synthetic_tokens(rows=rows, cols=cols, side=6, image_size=image_size, layers=LAYERS)
    valid = tokens.layout.crop_valid_mask()
    assert not valid.all()
    outs = tokencorr(
        tokens, TokenCorrConfig(allocation="adaptive", ratio=0.6, tau=1.0)
    )  # tau=1: nothing is alike -> density 1
    for v, out in enumerate(outs[1:], start=1):
        pos = out.positions
        assert pos.tolist() == sorted(set(pos.tolist()))
        assert valid[v - 1][pos].all()
        n_valid = int(valid[v - 1].sum())
        assert out.info["tokens"] == n_valid
        assert out.num_kept == (0 if n_valid == 0 else max(1, math.ceil(n_valid * 0.6 - 1e-9)))
        torch.testing.assert_close(out.features, tokens.features[v][pos])


def test_stats_split_global_and_sampled():
    tokens = tokens_with_density([5, 3, 36], rows=1, cols=2)
    outs = tokencorr(tokens, TokenCorrConfig(allocation="adaptive", ratio=0.7))
    for out in outs[1:]:
        info = out.info
        glob, sampled = set(info["global"].tolist()), set(info["sampled"].tolist())
        assert not glob & sampled
        assert glob | sampled == set(out.positions.tolist())
        assert info["kept"] == out.num_kept == info["budget"]
        assert 0.0 <= info["density"] <= 1.0 and 0 <= info["redundant"] <= info["tokens"]


def test_seed_reproducible_and_topk_deterministic():
    tokens = tokens_with_density([5, 36, 36], rows=1, cols=2)
    a = tokencorr(tokens, TokenCorrConfig(allocation="adaptive", ratio=0.4, seed=3))
    b = tokencorr(tokens, TokenCorrConfig(allocation="adaptive", ratio=0.4, seed=3))
    c = tokencorr(tokens, TokenCorrConfig(allocation="adaptive", ratio=0.4, seed=4))
    assert all(torch.equal(x.positions, y.positions) for x, y in zip(a, b))
    assert any(not torch.equal(x.positions, y.positions) for x, y in zip(a, c))
    t1 = tokencorr(tokens, TokenCorrConfig(allocation="adaptive", ratio=0.4, sampling="topk", seed=3))
    t2 = tokencorr(tokens, TokenCorrConfig(allocation="adaptive", ratio=0.4, sampling="topk", seed=4))
    assert all(torch.equal(x.positions, y.positions) for x, y in zip(t1, t2))


def test_topk_keeps_the_most_attended_local_tokens():
    tokens = tokens_with_density([5, 36, 36], rows=1, cols=2)
    cfg = TokenCorrConfig(allocation="adaptive", ratio=0.4, sampling="topk")
    low, _ = cfg.resolve_layers(tokens.num_layers)
    probs = cls_patch_probs(tokens.qk[low])
    for v, out in enumerate(tokencorr(tokens, cfg)[1:], start=1):
        glob, sampled = out.info["global"], out.info["sampled"]
        rest = torch.ones(36, dtype=torch.bool)
        rest[glob] = False
        rest[sampled] = False
        if sampled.numel() and rest.any():
            assert probs[v, sampled].min() >= probs[v, rest].max()


def test_views_together_equal_views_one_by_one():
    tokens = tokens_with_density([5, 1, 4, 36, 12], rows=2, cols=2, image_size=(50, 60))
    cfg = TokenCorrConfig(allocation="adaptive", ratio=0.5, compress_global=True)
    low, deep = cfg.resolve_layers(tokens.num_layers)
    valid = view_valid_mask(tokens)
    together = plan_views(tokens.qk[low], tokens.qk[deep], cfg, [True] * 5, valid)
    probs_low, probs_deep = cls_patch_probs(tokens.qk[low]), cls_patch_probs(tokens.qk[deep])
    for v in range(5):
        keys = patch_keys(tokens.qk[low])[v : v + 1]
        density, _ = information_density(keys, cfg.tau, cfg.min_similar, valid[v : v + 1])
        n = int(valid[v].sum())
        budget = max(1, math.ceil(float(density) * n * cfg.ratio - 1e-9))
        kept, glob, loc = select_view(
            probs_deep[v], probs_low[v], budget, valid[v], generator=view_generator(cfg.seed, v)
        )
        assert together[v].density == pytest.approx(float(density))
        assert torch.equal(together[v].kept, kept)
        assert torch.equal(together[v].global_units, glob) and torch.equal(together[v].sampled, loc)


def test_image_alone_equals_image_in_a_batch_of_images():
    # Compressors see one image at a time; the same image gives the same tokens whatever its index.
    a = tokens_with_density([5, 1, 36], rows=1, cols=2, seed=4)
    b = tokens_with_density([5, 1, 36], rows=1, cols=2, seed=4)
    b.index = 3
    cfg = TokenCorrConfig(allocation="adaptive", ratio=0.5)
    for x, y in zip(tokencorr(a, cfg), tokencorr(b, cfg)):
        assert torch.equal(x.positions, y.positions) and torch.equal(x.features, y.features)


def test_key_heads_choose_the_density_keys():
    tokens = tokens_with_density([5, 3, 36], rows=1, cols=2)
    for heads in ("concat", "mean"):
        cfg = TokenCorrConfig(allocation="adaptive", ratio=0.5, key_heads=heads, tau=0.5, min_similar=2)
        want, _ = information_density(patch_keys(tokens.qk[cfg.resolve_layers(4)[0]], heads), 0.5, 2)
        got = [o.info["density"] for o in tokencorr(tokens, cfg)]
        assert got == pytest.approx(want.tolist())
