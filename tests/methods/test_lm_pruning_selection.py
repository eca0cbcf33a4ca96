"""The in-LM methods' pure scoring and selection functions, on crafted tensors."""

import math

import pytest
import torch

import vtcompress as vtc
from vtcompress.lm_pruning import (
    apply_rope,
    dart_keep,
    dart_shares,
    key_l1_norms,
    last_query_attention,
    top_by_score,
)
from vtcompress.registry import make_config


def test_last_query_attention_is_the_head_mean_of_per_head_softmax_with_shared_group_keys():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 8, generator=gen)
    k = torch.randn(2, 2, 5, 8, generator=gen)
    valid = torch.tensor([[False, True, True, True, True], [True] * 5])
    got = last_query_attention(q, k, valid, 0.5)
    for b in range(2):
        rows = []
        for h in range(4):
            logits = [float(q[b, h] @ k[b, h // 2, j]) * 0.5 for j in range(5)]
            weights = [math.exp(x) if valid[b, j] else 0.0 for j, x in enumerate(logits)]
            rows.append([w / sum(weights) for w in weights])
        expected = torch.tensor(rows).mean(0)
        torch.testing.assert_close(got[b], expected, atol=1e-6, rtol=1e-5)


def test_rope_rotates_each_half_pair_by_its_angle():
    x = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]]]])  # [B=1, H=1, L=1, D=4]: pairs (x0, x2), (x1, x3)
    angle = torch.tensor([math.pi / 2, 0.0])
    cos = torch.cat([angle.cos(), angle.cos()])[None, None]
    sin = torch.cat([angle.sin(), angle.sin()])[None, None]
    out = apply_rope(x, cos, sin)
    # pair 0 (1, 0) rotated by 90 degrees -> (0, 1); pair 1 (0, 1) by 0 -> unchanged.
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.0, 1.0, 1.0]), atol=1e-6, rtol=0)


def test_top_by_score_keeps_counts_per_row_among_candidates_ties_to_the_lower_index():
    scores = torch.tensor([[9.0, 1.0, 5.0, 5.0, 3.0], [0.0, 2.0, 2.0, 7.0, 7.0]])
    candidates = torch.tensor([[False, True, True, True, True], [True, True, True, True, False]])
    keep = top_by_score(scores, candidates, torch.tensor([2, 3]))
    assert keep.tolist() == [[False, False, True, True, False], [False, True, True, True, False]]


def test_key_l1_norms_sum_heads_and_dims():
    keys = torch.tensor([[[[1.0, -2.0], [0.0, 1.0]], [[-3.0, 0.0], [0.5, 0.5]]]])  # [1, 2, 2, 2]
    assert key_l1_norms(keys).tolist() == [[6.0, 2.0]]


def test_dart_keeps_the_pivot_and_the_tokens_least_similar_to_it():
    # Row of 6 tokens: 0-4 image, 5 text. Token 2 has the largest key norm: the image pivot.
    normed = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [1.0, 0.05], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]])
    norms = torch.tensor([[1.0, 1.0, 9.0, 1.0, 1.0, 1.0]])
    image = torch.tensor([[True] * 5 + [False]])
    text = ~image
    keep = dart_keep(normed, norms, image, text, [[2]], [1], [0])
    # Least similar to the pivot (1, 0.05): token 3 (-1, 0), then token 4 (0, 1).
    assert keep.nonzero()[:, 1].tolist() == [2, 3, 4]
    # With a text pivot (token 5, (0, -1)) taking one of two shares: the image pivot adds token 3,
    # then the text pivot adds its least similar free token, token 4 (0, 1).
    keep = dart_keep(normed, norms, image, text, [[1, 1]], [1], [1])
    assert keep.nonzero()[:, 1].tolist() == [2, 3, 4]
    keep = dart_keep(normed, norms, image, text, [[0, 1]], [1], [1])
    assert keep.nonzero()[:, 1].tolist() == [2, 4]


def test_dart_counts_paper_128_of_576_keeps_132_and_exact_keeps_the_ratio():
    ratio = 128 / 576
    assert make_config("dart", ratio=ratio, budget="paper").stage_count(0, 576) == 132
    assert make_config("dart", ratio=ratio).stage_count(0, 576) == 128
    assert dart_shares(128, 4, 8) == [16, 16, 16, 16, 15, 15, 15, 15]
    assert sum(dart_shares(128, 4, 8)) + 4 == 128


def test_pyramiddrop_paper_stages_and_bad_settings():
    config = make_config("pyramiddrop")
    assert config.stages() == [(8, 0.5), (16, 0.25), (24, 0.125)]
    assert make_config("pyramiddrop", layers="1,2").layers == (1, 2)
    with pytest.raises(ValueError, match="layers must increase"):
        make_config("pyramiddrop", layers=(16, 8))
    with pytest.raises(ValueError, match="decay must be a number in"):
        make_config("pyramiddrop", decay=0)
    with pytest.raises(ValueError, match="at least one pivot"):
        make_config("dart", image_pivots=0, text_pivots=0)
    with pytest.raises(ValueError, match="layer must be a decoder layer index >= 1"):
        make_config("fastv", layer=0)


def test_the_exported_configs_carry_the_papers_settings():
    """FastV and DART act after layer 2 (both papers' scripts); DART takes 4 image and 4 text
    pivots; PyramidDrop's stages keep 0.5 / 0.25 / 0.125 before layers 8 / 16 / 24."""
    assert vtc.FastVConfig.method == "fastv" and vtc.FastVConfig().stages() == [(2, 0.25)]
    dart = vtc.DARTConfig()
    assert vtc.DARTConfig.method == "dart"
    assert (dart.layer, dart.image_pivots, dart.text_pivots, dart.budget) == (2, 4, 4, "exact")
    assert vtc.PyramidDropConfig.method == "pyramiddrop"
    assert vtc.PyramidDropConfig().stages() == [(8, 0.5), (16, 0.25), (24, 0.125)]


def _dart_one_row(normed, norms, image, text, shares, image_pivots, text_pivots):
    """DART's greedy loop written out for one row, a pivot and a token at a time."""
    unit = torch.nn.functional.normalize(normed.float(), dim=-1)
    by_norm = sorted(range(len(norms)), key=lambda i: (-float(norms[i]), i))
    image_p = sorted([i for i in by_norm if image[i]][:image_pivots])
    text_p = sorted([i for i in by_norm if text[i]][:text_pivots])
    keep = set(image_p)
    for pivot, n in zip(image_p + text_p, shares):
        free = [i for i in range(len(norms)) if image[i] and i not in keep]
        free.sort(key=lambda i: (float(unit[i] @ unit[pivot]), i))
        keep.update(free[: max(n, 0)])
    return sorted(keep)


def test_dart_rows_of_a_batch_each_keep_what_they_keep_alone():
    """Rows with different numbers of candidates, text tokens, pivots and shares run together and
    each keeps what the one-row loop keeps (a batched loop that mixed rows' pivots would not)."""
    gen = torch.Generator().manual_seed(3)
    b, n, d = 4, 24, 6
    normed = torch.randn(b, n, d, generator=gen)
    norms = torch.rand(b, n, generator=gen)
    image = torch.zeros(b, n, dtype=torch.bool)
    text = torch.zeros(b, n, dtype=torch.bool)
    spans = [(2, 18), (0, 10), (5, 21), (1, 3)]  # image tokens [a, c), text after them
    for row, (a, c) in enumerate(spans):
        image[row, a:c] = True
        text[row, c:] = True
    image_pivots, text_pivots = [2, 1, 3, 1], [2, 0, 1, 2]
    counts = [9, 4, 12, 2]
    shares = [dart_shares(k, pi, pi + pt) for k, pi, pt in zip(counts, image_pivots, text_pivots)]
    keep = dart_keep(normed, norms, image, text, shares, image_pivots, text_pivots)
    for row in range(b):
        expected = _dart_one_row(
            normed[row], norms[row], image[row], text[row], shares[row], image_pivots[row], text_pivots[row]
        )
        assert keep[row].nonzero()[:, 0].tolist() == expected, row
        assert len(expected) == counts[row]
