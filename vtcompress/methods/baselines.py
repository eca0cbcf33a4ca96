"""Simple baselines for fair comparison, under the same budget rule as GlobalCom²'s exact mode.

Every baseline keeps ``floor(r * N)`` tokens of an image (N = its visual tokens, newlines
excluded), split across views in proportion to their token counts (largest remainders): the
same total as ``globalcom2`` with ``allocation="exact"``, so comparisons are token for token.

* ``random``: a seeded uniform random subset per view (seeded per image, so an image keeps the
  same tokens alone or in any batch).
* ``uniform``: evenly spaced tokens in each view's raster order of valid tokens.
* ``fastervlm``: per view, the top tokens by [CLS] attention (head-mean softmax probabilities of
  the last CLIP layer), as FasterVLM does, with a uniform per-view budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtcompress.budget import keep_count, split_budget
from vtcompress.config import CompressionConfig
from vtcompress.layout import view_positions
from vtcompress.registry import register_method
from vtcompress.scores import cls_patch_attention
from vtcompress.tokens import ImageTokens, ViewOutput, select_views


def uniform_view_budgets(tokens: ImageTokens, ratio: float) -> list[int]:
    """Image total ``floor(r N)`` split across views in proportion to their sizes."""
    counts = tokens.layout.view_counts()
    return split_budget(keep_count(sum(counts), ratio), counts, counts)


@dataclass
class RandomConfig(CompressionConfig):
    """Seeded random drop."""

    seed: int = 0


@dataclass
class UniformConfig(CompressionConfig):
    """Evenly spaced spatial subsampling."""


@dataclass
class FasterVLMConfig(CompressionConfig):
    """Per-view [CLS]-attention top-k."""

    def capture_layers(self, score_layer: int, num_layers: int) -> tuple[set[int], set[int]]:
        return {score_layer}, set()


@register_method("random", RandomConfig, "seeded random drop (baseline)")
def random_drop(tokens: ImageTokens, config: RandomConfig) -> list[ViewOutput]:
    gen = torch.Generator().manual_seed(config.seed)
    positions = []
    for pos, k in zip(view_positions(tokens.layout), uniform_view_budgets(tokens, config.ratio)):
        pick = torch.randperm(len(pos), generator=gen)[:k]
        positions.append(pos[pick].sort().values)
    return select_views(tokens.features, positions)


def evenly_spaced(n: int, k: int, device: torch.device | None = None) -> Tensor:
    """``k`` of ``range(n)``, one at the middle of each of k equal strides (long [k])."""
    return ((torch.arange(k, device=device, dtype=torch.float64) + 0.5) * n / k).floor().long()


@register_method("uniform", UniformConfig, "evenly spaced spatial subsampling (baseline)")
def uniform(tokens: ImageTokens, config: UniformConfig) -> list[ViewOutput]:
    positions = [
        pos[evenly_spaced(len(pos), k)]
        for pos, k in zip(view_positions(tokens.layout), uniform_view_budgets(tokens, config.ratio))
    ]
    return select_views(tokens.features, positions)


@register_method("fastervlm", FasterVLMConfig, "per-view [CLS] attention top-k (FasterVLM-style baseline)")
def fastervlm(tokens: ImageTokens, config: FasterVLMConfig) -> list[ViewOutput]:
    attn = cls_patch_attention(tokens, tokens.score_layer).cpu()  # [V, N]: the one device sync
    positions = []
    for v, (pos, k) in enumerate(
        zip(view_positions(tokens.layout), uniform_view_budgets(tokens, config.ratio))
    ):
        top = torch.topk(attn[v, pos], k).indices
        positions.append(pos[top].sort().values)
    return select_views(tokens.features, positions)
