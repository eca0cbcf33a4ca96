"""GlobalCom² paper mode: crop ratios in float64, as the official code computes them.

The crafted thumbnails below put N_j r_j within 1e-6 of an integer, where float32 arithmetic
moves a crop's budget floor(N_j r_j) by one token.
"""

import math

import pytest
import torch

from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.methods.globalcom2 import GlobalCom2Config, crop_ratios, globalcom2
from vtcompress.tokens import ImageTokens, LayerQK

RATIO, TAU = 0.25, 10.0
CROP_TOKENS = 16  # 1x2 grid of 4x4 crops, nothing unpadded


def crafted_thumbnail(bits: int) -> torch.Tensor:
    """[4, 4] map: left half = the float32 with these bits, right half 0 (region sums 8a and 0)."""
    a = torch.tensor(bits, dtype=torch.int32).view(torch.float32)
    thumb = torch.zeros(4, 4)
    thumb[:, :2] = a
    return thumb


def official_budgets(thumb: torch.Tensor) -> list[int]:
    """The official arithmetic in plain Python floats (float64): softmax with +1e-8 in the
    denominator, r_j = r (1 + sigma_j - mean sigma), budget int(N_j r_j)."""
    sums = [math.fsum(thumb[:, :2].flatten().tolist()), math.fsum(thumb[:, 2:].flatten().tolist())]
    e = [math.exp((s - max(sums)) / TAU) for s in sums]
    sigma = [x / (sum(e) + 1e-8) for x in e]
    mean = sum(sigma) / len(sigma)
    return [int(CROP_TOKENS * min(RATIO * (1 + s - mean), 1.0)) for s in sigma]


def float32_budgets(thumb: torch.Tensor) -> list[int]:
    """The same rule computed in float32 (what the crop budgets were before)."""
    sums = torch.stack([thumb[:, :2].sum(), thumb[:, 2:].sum()])
    ratios = RATIO * (1 + torch.softmax((sums - sums.max()) / TAU, dim=0) - 0.5)
    return [math.floor(CROP_TOKENS * r + 1e-9) for r in ratios.tolist()]


def tokens_for(thumb: torch.Tensor) -> ImageTokens:
    """ImageTokens whose head-mean [CLS] logits are ``thumb`` (view 0) and distinct crop scores."""
    layout = AnyResLayout.from_grid(1, 2, 4, (4, 8))
    scores = torch.stack([thumb.flatten(), torch.arange(16.0), 16 - torch.arange(16.0)])
    keys = torch.cat([torch.zeros(3, 1), scores], dim=1).view(3, 17, 1, 1)
    qk = {0: LayerQK(q_cls=torch.ones(3, 1, 1), keys=keys, scale=1.0)}
    return ImageTokens(torch.randn(3, 16, 2), layout, qk, {}, 0, score_layer=0, num_layers=1)


# (float32 bits of the left-half score, crop budgets in float64, crop budgets in float32)
CASES = [(0x3FAFC725, [4, 3], [5, 3]), (0x3FAFC729, [5, 2], [5, 3])]


@pytest.mark.parametrize("bits, want, float32_want", CASES)
def test_crafted_case_separates_float32_from_float64(bits, want, float32_want):
    thumb = crafted_thumbnail(bits)
    assert official_budgets(thumb) == want
    assert float32_budgets(thumb) == float32_want != want  # the case is a discriminating one


@pytest.mark.parametrize("bits, want, float32_want", CASES)
def test_paper_mode_budgets_follow_the_float64_arithmetic(bits, want, float32_want):
    thumb = crafted_thumbnail(bits)
    ratios = crop_ratios(thumb, rows=1, cols=2, ratio=RATIO, temperature=TAU, aggregation="sum")
    assert ratios.dtype == torch.float64
    out = globalcom2(tokens_for(thumb), GlobalCom2Config.paper(ratio=RATIO))
    assert [o.num_kept for o in out] == [4, *want]  # thumbnail floor(16 r) = 4
