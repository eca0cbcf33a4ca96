"""tokencorr on CUDA tensors: same budgets and choices as on the CPU (device-independent seeding)."""

from __future__ import annotations

import pytest
import torch

from tests._tokencorr_util import synthetic_tokens
from vtcompress.methods.tokencorr import TokenCorrConfig, tokencorr
from vtcompress.tokens import ImageTokens, LayerQK

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda unavailable)"),
]


def to_cuda(tokens: ImageTokens) -> ImageTokens:
    qk = {i: LayerQK(q.q_cls.cuda(), q.keys.cuda(), q.scale) for i, q in tokens.qk.items()}
    return ImageTokens(
        tokens.features.cuda(), tokens.layout, qk, {}, 0, tokens.score_layer, tokens.num_layers
    )


@pytest.mark.parametrize("sampling", ["sample", "topk"])
@pytest.mark.parametrize("allocation", ["adaptive", "exact"])
def test_cuda_matches_cpu(sampling, allocation):
    cpu = synthetic_tokens(
        rows=2, cols=2, side=8, image_size=(60, 90), layers=(0, 1, 2, 3), clusters=[4, 1, 9, 64, 3]
    )
    cfg = TokenCorrConfig(ratio=0.5, sampling=sampling, allocation=allocation)
    want = tokencorr(cpu, cfg)
    got = tokencorr(to_cuda(cpu), cfg)
    for a, b in zip(want, got):
        assert b.positions.is_cuda and b.features.is_cuda
        assert a.info["budget"] == b.info["budget"] and a.info["density"] == pytest.approx(b.info["density"])
        assert torch.equal(a.positions, b.positions.cpu())
