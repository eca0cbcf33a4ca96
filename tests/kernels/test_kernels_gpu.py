"""Triton kernels on a CUDA device, at the launchers' default tiles, against the naive reference."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

import vtcompress.kernels as K
from tests.helpers.kernels_checks import (
    assert_energy_equivalent,
    assert_redundancy_equivalent,
    assert_topk_equivalent,
    random_mask,
    tokens,
)
from vtcompress.kernels import reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(
        importlib.util.find_spec("triton") is None,
        reason='triton is not installed: pip install "vtcompress[kernels]"',
    ),
]

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _cuda(*tensors):
    return [None if t is None else t.cuda() for t in tensors]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 7, 16])
def test_cosine_topk_cuda(dtype, k):
    from vtcompress.kernels import triton_ops

    a, b = tokens(3, 333, 200, dtype, seed=1), tokens(3, 290, 200, dtype, seed=2)
    mask_a, mask_b = random_mask(3, 333, seed=3), random_mask(3, 290, seed=4)
    scores, idx = triton_ops.cosine_topk(*_cuda(a, b), k, *_cuda(mask_a, mask_b))
    assert_topk_equivalent(a, b, k, mask_a, mask_b, scores.cpu(), idx.cpu())


@pytest.mark.parametrize("dtype", DTYPES)
def test_energy_and_redundancy_cuda(dtype):
    from vtcompress.kernels import triton_ops

    x = tokens(2, 577, 1024, dtype, seed=5)
    mask = random_mask(2, 577, seed=6)
    xc, mc = _cuda(x, mask)
    assert_energy_equivalent(x, 0.7, 0.1, mask, triton_ops.energy_score(xc, 0.7, 0.1, mc).cpu())
    assert_energy_equivalent(x, 0.7, 1.0, None, triton_ops.energy_score(xc, 0.7).cpu())
    assert_redundancy_equivalent(x, 0.3, mask, triton_ops.redundancy_count(xc, 0.3, mc).cpu())


@pytest.mark.parametrize("dtype", DTYPES)
def test_cls_attention_logits_cuda(dtype):
    from vtcompress.kernels import triton_ops

    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 16, 64, generator=g).to(dtype)
    keys = torch.randn(2, 16, 577, 64, generator=g).to(dtype).transpose(1, 2)
    out = triton_ops.cls_attention_logits(q.cuda(), keys.cuda(), 0.125).cpu()
    torch.testing.assert_close(
        out, reference.naive_cls_attention_logits(q, keys, 0.125), atol=1e-4, rtol=1e-5
    )


def test_dispatch_takes_triton_on_cuda_without_warnings():
    x = tokens(2, 300, 64, torch.bfloat16, seed=8).cuda()
    assert K.backend_for(x) == "triton"
    assert K.backend_for(x.float()) == "reference"  # float32: the chunked reference is faster
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Triton failure would warn and fall back
        s, i = K.cosine_topk(x, x, 2)
        e = K.energy_score(x, 0.5)
    with K.force_reference():
        rs, ri = K.cosine_topk(x, x, 2)
        re = K.energy_score(x, 0.5)
    torch.testing.assert_close(s, rs, atol=2e-5, rtol=0)
    torch.testing.assert_close(e, re, atol=2e-5, rtol=1e-5)
