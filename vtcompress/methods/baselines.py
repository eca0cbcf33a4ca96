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

from vtcompress.batch import Plan, Plans, SelectedBatch, rank_mask, stacked
from vtcompress.budget import keep_count, split_budget
from vtcompress.config import CompressionConfig
from vtcompress.layout import Layout, view_positions
from vtcompress.registry import register_batch, register_method
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


# --- batched paths (same tokens as the functions above, image by image) ---------------------------
_PER_IMAGE = {"uniform": uniform, "random": random_drop}


def _layout_keep_mask(layout: Layout, config: CompressionConfig) -> tuple[Tensor, int]:
    """CPU bool [V, N] of the tokens ``uniform`` / ``random`` keep: a function of the layout and
    config alone, so it is the per-image function's own choice on a feature-less image."""
    h, w = layout.view_grid
    empty = ImageTokens(torch.zeros(layout.num_views, h * w, 0), layout)
    mask = torch.zeros(layout.num_views, h * w, dtype=torch.bool)
    for v, out in enumerate(_PER_IMAGE[config.method](empty, config)):
        mask[v, out.positions] = True
    return mask, int(mask.sum())


_keep_masks = Plans(_layout_keep_mask)


def _fastervlm_plan(layout: Layout, config: FasterVLMConfig) -> Plan:
    """Invalid tokens (bool [V, N]), per-view budgets (long [V]) and the image's total."""
    h, w = layout.view_grid
    invalid = torch.ones(layout.num_views, h * w, dtype=torch.bool)
    for v, pos in enumerate(view_positions(layout)):
        invalid[v, pos] = False
    budgets = torch.tensor(uniform_view_budgets(ImageTokens(torch.zeros(0), layout), config.ratio))
    return Plan(invalid=invalid, budgets=budgets, total=int(budgets.sum()))


_fastervlm_plans = Plans(_fastervlm_plan)


def _layout_only(tokens: list[ImageTokens], config: CompressionConfig) -> SelectedBatch:
    layout = tokens[0].layout
    keep, total = _keep_masks(layout, config)
    features = stacked(tokens).features.view(len(tokens), *tokens[0].features.shape)
    return SelectedBatch(layout, features, keep, total)


@register_batch("uniform")
def uniform_batch(tokens: list[ImageTokens], config: UniformConfig) -> SelectedBatch:
    """:func:`uniform` for images of one layout: the kept set is the layout's, nothing to compute."""
    return _layout_only(tokens, config)


@register_batch("random")
def random_drop_batch(tokens: list[ImageTokens], config: RandomConfig) -> SelectedBatch:
    """:func:`random_drop` for images of one layout (its seeded choice depends on the layout only)."""
    return _layout_only(tokens, config)


@register_batch("fastervlm")
def fastervlm_batch(tokens: list[ImageTokens], config: FasterVLMConfig) -> SelectedBatch:
    """:func:`fastervlm` for images of one layout: one score pass, one rank selection."""
    layout, b = tokens[0].layout, len(tokens)
    plan = _fastervlm_plans(layout, config)
    batch = stacked(tokens)
    attn = cls_patch_attention(batch, batch.score_layer).view(b, layout.num_views, -1)  # [B, V, N]
    device = attn.device
    scores = attn.masked_fill(plan.on("invalid", device), float("-inf"))
    keep = rank_mask(scores, plan.on("budgets", device))
    return SelectedBatch(layout, batch.features.view(b, *tokens[0].features.shape), keep, plan["total"])
