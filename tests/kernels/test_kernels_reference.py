"""The chunked torch reference equals the naive full-matrix ops and never builds an N x N matrix."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tests.helpers.kernels_checks import (
    assert_energy_equivalent,
    assert_redundancy_equivalent,
    assert_topk_equivalent,
    random_mask,
    tokens,
)
from vtcompress.kernels import reference as ref

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
# (batch, Na, Nb, D): odd sizes, Na != Nb, a single token, and more rows than any chunk below.
SHAPES = [(1, 1, 1, 3), (2, 37, 29, 24), (3, 70, 91, 17)]
CHUNKS = [1, 7, 64, None]


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any torch op produces inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("masked", [False, True])
def test_cosine_topk_matches_naive(dtype, shape, chunk, masked):
    bsz, n_a, n_b, d = shape
    a, b = tokens(bsz, n_a, d, dtype, seed=1), tokens(bsz, n_b, d, dtype, seed=2)
    mask_a = random_mask(bsz, n_a, seed=3) if masked else None
    mask_b = random_mask(bsz, n_b, seed=4) if masked else None
    for k in sorted({1, min(3, n_b), n_b}):
        scores, idx = ref.cosine_topk(a, b, k, mask_a, mask_b, chunk_size=chunk)
        assert_topk_equivalent(a, b, k, mask_a, mask_b, scores, idx)


def test_cosine_topk_masks_and_ties():
    # Duplicated rows of b tie exactly; masked columns are never chosen; masked rows give -inf / 0.
    a = tokens(1, 5, 8, seed=5)
    b = torch.cat([a, a, tokens(1, 4, 8, seed=6)], dim=1)  # columns i and i + 5 equal a[i]
    mask_b = torch.ones(1, 14, dtype=torch.bool)
    mask_b[0, 2] = False
    mask_a = torch.tensor([[True, True, True, False, True]])
    scores, idx = ref.cosine_topk(a, b, 2, mask_a, mask_b, chunk_size=2)
    assert_topk_equivalent(a, b, 2, mask_a, mask_b, scores, idx)
    assert torch.allclose(scores[0, [0, 1, 4]], torch.ones(3, 2))
    assert set(idx[0, 0].tolist()) == {0, 5} and set(idx[0, 4].tolist()) == {4, 9}
    assert idx[0, 2].tolist()[0] == 7 and scores[0, 2, 0] == pytest.approx(1.0)  # column 2 is masked
    assert scores[0, 3].tolist() == [float("-inf")] * 2 and idx[0, 3].tolist() == [0, 0]


def test_cosine_topk_fewer_valid_columns_than_k():
    a, b = tokens(2, 6, 5, seed=7), tokens(2, 9, 5, seed=8)
    mask_b = torch.zeros(2, 9, dtype=torch.bool)
    mask_b[:, [1, 4]] = True
    scores, idx = ref.cosine_topk(a, b, 4, mask_b=mask_b, chunk_size=4)
    assert torch.isfinite(scores[..., :2]).all() and torch.isinf(scores[..., 2:]).all()
    assert set(idx[..., :2].flatten().tolist()) <= {1, 4}
    assert_topk_equivalent(a, b, 4, None, mask_b, scores, idx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", [(1, 4), (45, 33), (130, 8)])
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("masked", [False, True])
def test_energy_and_redundancy_match_naive(dtype, n, d, chunk, masked):
    x = tokens(2, n, d, dtype, seed=9)
    mask = random_mask(2, n, seed=10) if masked else None
    for margin, temperature in [(0.5, 1.0), (0.9, 0.1)]:
        out = ref.energy_score(x, margin, temperature, mask, chunk_size=chunk)
        assert_energy_equivalent(x, margin, temperature, mask, out)
    for threshold in (-0.2, 0.3, 0.8):
        out = ref.redundancy_count(x, threshold, mask, chunk_size=chunk)
        assert_redundancy_equivalent(x, threshold, mask, out)


def test_energy_and_redundancy_masked_rows():
    x = tokens(1, 10, 6, seed=11)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, [3, 7]] = False
    energy = ref.energy_score(x, 0.5, 1.0, mask, chunk_size=4)
    assert torch.isinf(energy[0, [3, 7]]).all() and torch.isfinite(energy[mask]).all()
    # Masked tokens do not count for others either: same as dropping them.
    kept = x[:, mask[0]]
    torch.testing.assert_close(energy[mask], ref.energy_score(kept, 0.5, 1.0)[0])
    counts = ref.redundancy_count(x, -2.0, mask, chunk_size=3)  # everything is above -2
    assert counts[0].tolist() == [0 if not m else 7 for m in mask[0].tolist()]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [1, 5, None])
def test_cls_attention_logits_matches_naive(dtype, chunk):
    g = torch.Generator().manual_seed(12)
    q = torch.randn(3, 4, 16, generator=g).to(dtype)
    keys = torch.randn(3, 4, 23, 16, generator=g).to(dtype).transpose(1, 2)  # [B, T, H, dh], strided
    out = ref.cls_attention_logits(q, keys, 0.25, chunk_size=chunk)
    expected = ref.naive_cls_attention_logits(q, keys, 0.25)
    assert out.shape == (3, 4, 23) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_batch_equals_one_by_one():
    x = tokens(3, 40, 12, seed=13)
    mask = random_mask(3, 40, seed=14)
    s, i = ref.cosine_topk(x, x, 3, mask, mask, chunk_size=16)
    e = ref.energy_score(x, 0.4, 0.5, mask, chunk_size=16)
    r = ref.redundancy_count(x, 0.3, mask, chunk_size=16)
    for j in range(3):
        sj, ij = ref.cosine_topk(
            x[j : j + 1], x[j : j + 1], 3, mask[j : j + 1], mask[j : j + 1], chunk_size=16
        )
        torch.testing.assert_close(s[j : j + 1], sj)
        assert torch.equal(i[j : j + 1], ij)
        torch.testing.assert_close(e[j : j + 1], ref.energy_score(x[j : j + 1], 0.4, 0.5, mask[j : j + 1]))
        assert torch.equal(r[j : j + 1], ref.redundancy_count(x[j : j + 1], 0.3, mask[j : j + 1]))


def test_chunked_ops_never_build_the_full_matrix():
    bsz, n, d, chunk = 2, 300, 16, 32
    x = tokens(bsz, n, d, seed=15)
    mask = random_mask(bsz, n, seed=16)
    bound = bsz * chunk * n  # one [B, chunk, N] block
    with LargestTensor() as naive:
        ref.naive_energy_score(x, 0.5, 1.0, mask)
    assert naive.numel >= bsz * n * n  # the probe sees the naive matrix
    calls = [
        lambda: ref.cosine_topk(x, x, 4, mask, mask, chunk_size=chunk),
        lambda: ref.energy_score(x, 0.5, 1.0, mask, chunk_size=chunk),
        lambda: ref.redundancy_count(x, 0.5, mask, chunk_size=chunk),
    ]
    for call in calls:
        with LargestTensor() as probe:
            call()
        assert probe.numel <= bound, f"largest tensor {probe.numel} > {bound} elements"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: ref.cosine_topk(x, x, 0), "k must be"),
        (lambda x: ref.cosine_topk(x, x, 11), "k must be"),
        (lambda x: ref.cosine_topk(x, x[:, :, :3]), "share batch and feature"),
        (lambda x: ref.cosine_topk(x[0], x[0]), r"\[B, N, D\]"),
        (lambda x: ref.energy_score(x, 0.5, mask=torch.ones(2, 9, dtype=torch.bool)), r"\[B, N\]"),
        (lambda x: ref.redundancy_count(x, 0.5, mask=torch.ones(2, 10)), "bool"),
        (lambda x: ref.energy_score(x.long(), 0.5), "floating-point"),
        (lambda x: ref.energy_score(x, 0.5, chunk_size=0), "chunk_size"),
        (lambda x: ref.cls_attention_logits(x, x[:, :, None], 1.0), "do not match"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call(tokens(2, 10, 4))
