"""Triton kernels vs the torch reference, run on CPU by Triton's interpreter.

Not collected by the normal test run: TRITON_INTERPRET=1 must be set before triton is first
imported and would then route every CPU call of the session through the (slow) interpreter.
``test_kernels_triton.py`` runs this file in its own process; to run it by hand:

    TRITON_INTERPRET=1 python -m pytest tests/kernels/kernels_interp_cases.py

Shapes are small (the interpreter runs each program in numpy) and deliberately not multiples of the
tile sizes; 16-wide tiles make every case span several row, column and feature tiles.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton", reason='triton is not installed: pip install "vtcompress[kernels]"')

import vtcompress.kernels as K  # noqa: E402
from tests.helpers.kernels_checks import (  # noqa: E402
    assert_energy_equivalent,
    assert_redundancy_equivalent,
    assert_topk_equivalent,
    random_mask,
    tokens,
)
from vtcompress.kernels import reference, triton_ops  # noqa: E402

if not triton_ops.INTERPRETED:
    pytest.skip("triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SMALL = {"block_m": 16, "block_n": 16, "block_k": 16}
B, NA, NB, D = 2, 37, 29, 40


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,masked", [(1, False), (5, True)])
def test_cosine_topk(dtype, k, masked):
    a, b = tokens(B, NA, D, dtype, seed=1), tokens(B, NB, D, dtype, seed=2)
    mask_a = random_mask(B, NA, seed=3) if masked else None
    mask_b = random_mask(B, NB, seed=4) if masked else None
    scores, idx = triton_ops.cosine_topk(a, b, k, mask_a, mask_b, **SMALL)
    assert_topk_equivalent(a, b, k, mask_a, mask_b, scores, idx)


def test_cosine_topk_largest_k_and_strided_inputs():
    x = tokens(B, 40, NA, seed=5).transpose(1, 2)  # [B, 37, 40], not contiguous
    b = tokens(B, NB, 40, seed=6)
    mask_b = random_mask(B, NB, seed=7)
    scores, idx = triton_ops.cosine_topk(x, b, triton_ops.MAX_TOPK, None, mask_b, **SMALL)
    assert_topk_equivalent(x, b, triton_ops.MAX_TOPK, None, mask_b, scores, idx)


def test_cosine_topk_ties_pick_lowest_index():
    # Copies of a[i] sit at columns i, i + 16 and i + 21: the tie spans column tiles (16 wide).
    a = tokens(1, 5, 8, seed=8)
    b = torch.cat([a, tokens(1, 11, 8, seed=9), a, a], dim=1)
    for k, expected in [(1, [[i] for i in range(5)]), (2, [[i, i + 16] for i in range(5)])]:
        scores, idx = triton_ops.cosine_topk(a, b, k, **SMALL)
        assert idx[0].tolist() == expected
        torch.testing.assert_close(scores[0], torch.ones(5, k))


def test_cosine_topk_fewer_valid_columns_than_k():
    a, b = tokens(B, 6, 5, seed=10), tokens(B, 21, 5, seed=11)
    mask_b = torch.zeros(B, 21, dtype=torch.bool)
    mask_b[:, [1, 17]] = True
    scores, idx = triton_ops.cosine_topk(a, b, 4, None, mask_b, **SMALL)
    assert torch.isinf(scores[..., 2:]).all()
    assert_topk_equivalent(a, b, 4, None, mask_b, scores, idx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_energy_score(dtype):
    x = tokens(B, NA, D, dtype, seed=12)
    mask = random_mask(B, NA, seed=13)
    out = triton_ops.energy_score(x, 0.6, 0.2, mask, **SMALL)
    assert_energy_equivalent(x, 0.6, 0.2, mask, out)
    if dtype == torch.float32:
        assert_energy_equivalent(x, 0.3, 1.0, None, triton_ops.energy_score(x, 0.3, 1.0, **SMALL))


@pytest.mark.parametrize("dtype", DTYPES)
def test_redundancy_count(dtype):
    x = tokens(B, NA, D, dtype, seed=14)
    mask = random_mask(B, NA, seed=15)
    assert_redundancy_equivalent(x, 0.4, mask, triton_ops.redundancy_count(x, 0.4, mask, **SMALL))
    if dtype == torch.float32:
        assert_redundancy_equivalent(x, 0.1, None, triton_ops.redundancy_count(x, 0.1, **SMALL))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cls_attention_logits(dtype):
    g = torch.Generator().manual_seed(16)
    q = torch.randn(B, 3, 24, generator=g).to(dtype)
    keys = torch.randn(B, 3, 45, 24, generator=g).to(dtype).transpose(1, 2)  # [B, T, H, dh], strided
    out = triton_ops.cls_attention_logits(q, keys, 0.2, block_t=16, block_d=16)
    torch.testing.assert_close(out, reference.naive_cls_attention_logits(q, keys, 0.2), atol=1e-5, rtol=1e-5)


def test_default_tiles():
    # The tile sizes the dispatcher uses (64-row tiles) on a size that is not a multiple of them.
    x = tokens(1, 70, 33, torch.float16, seed=17)
    assert_topk_equivalent(x, x, 3, None, None, *triton_ops.cosine_topk(x, x, 3))
    assert_energy_equivalent(x, 0.5, 1.0, None, triton_ops.energy_score(x, 0.5))


def test_dispatch_uses_interpreted_triton_on_cpu():
    # With the interpreter active, the public ops take the Triton path for CPU tensors. Any
    # warning (a Triton failure falling back to the reference) fails the test.
    x = tokens(1, 20, 16, seed=18)
    mask = random_mask(1, 20, seed=19)
    assert K.backend_for(x, mask) == "triton"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_topk_equivalent(x, x, 2, mask, mask, *K.cosine_topk(x, x, 2, mask, mask))
        assert_energy_equivalent(x, 0.5, 1.0, mask, K.energy_score(x, 0.5, 1.0, mask))
        assert_redundancy_equivalent(x, 0.3, mask, K.redundancy_count(x, 0.3, mask))
        q, keys = torch.randn(1, 2, 8), torch.randn(1, 9, 2, 8)
        torch.testing.assert_close(
            K.cls_attention_logits(q, keys, 0.5), reference.naive_cls_attention_logits(q, keys, 0.5)
        )
    with K.force_reference():
        assert K.backend_for(x, mask) == "reference"
    assert K.backend_for(x, k=K.MAX_TOPK + 1) == "reference"
