"""tokencorr on CUDA tensors: same budgets and choices as on the CPU (device-independent seeding)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tokencorr import clustered_qk, synthetic_tokens
from vtcompress.methods.tokencorr import TokenCorrConfig, select_groups, tokencorr
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


@pytest.mark.parametrize("combine", ["inside", "union"])
@pytest.mark.parametrize("sampling", ["sample", "topk"])
@pytest.mark.parametrize("allocation", ["adaptive", "exact"])
def test_cuda_matches_cpu(sampling, allocation, combine):
    cpu = synthetic_tokens(
        rows=2, cols=2, side=8, image_size=(60, 90), layers=(0, 1, 2, 3), clusters=[4, 1, 9, 64, 3]
    )
    cfg = TokenCorrConfig(ratio=0.5, sampling=sampling, allocation=allocation, combine=combine)
    want = tokencorr(cpu, cfg)
    got = tokencorr(to_cuda(cpu), cfg)
    for a, b in zip(want, got):
        assert b.positions.is_cuda and b.features.is_cuda
        assert a.info["budget"] == b.info["budget"] and a.info["density"] == pytest.approx(b.info["density"])
        assert torch.equal(a.positions, b.positions.cpu())


@pytest.mark.parametrize("group_outliers", ["patch", "group"])
def test_grouped_cuda_matches_cpu(group_outliers):
    gen = torch.Generator().manual_seed(0)
    low = clustered_qk(3, 32 * 32, [3, 150, 1024], gen)
    deep = clustered_qk(3, 32 * 32, [1024] * 3, gen)
    cfg = TokenCorrConfig.paper(group_outliers=group_outliers)
    want = select_groups(low, deep, cfg)
    cuda = [LayerQK(q.q_cls.cuda(), q.keys.cuda(), q.scale) for q in (low, deep)]
    got = select_groups(*cuda, cfg)
    for a, b in zip(want, got):
        assert b.kept.is_cuda and torch.equal(a.kept, b.kept.cpu())
        assert torch.equal(a.global_units, b.global_units.cpu())
