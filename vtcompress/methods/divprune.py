"""DivPrune: keep a maximally diverse subset of the projected visual tokens (max-min diversity).

Paper: "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models" (CVPR 2025).
Written from the paper and the facts of its official code (CC BY-NC 4.0: read for facts only).

Selection over one image's tokens (the official code: the whole image's projected tokens before
the language model; on LLaVA-1.6 the whole AnyRes sequence):

1. Distance ``1 - cos(x_i, x_j)`` between every two tokens.
2. First pick: the token whose nearest other token is farthest (the largest second-smallest
   distance of its column: the smallest is its distance to itself).
3. Then, greedily, the token whose distance to the selected set (its minimum distance to a
   selected token) is largest, until ``k`` are selected. Ties go to the first index.
4. Kept tokens return to their original order.

Budgets: ``allocation="exact"`` (default) keeps ``k = floor(r N)`` of the image's N tokens (the
[budget rule](docs/budget.md)); ``allocation="paper"`` keeps ``k = int(round(r N))`` as the
official code does (Python's rounding, half to even; at least 1). Both counts are pure functions
of the layout and ratio. ``scope="image"`` (default, official) selects among every token of the
image, so how many each view keeps depends on the content; ``scope="view"`` splits the budget
across views in proportion to their sizes (as every baseline) and selects inside each view
(for hosts with a placeholder run per view that needs a token in every view: DocOwl1.5).

Deliberate deviations from the official code:

* separator tokens (LLaVA-NeXT's newlines) are neither candidates nor counted in N: the host
  keeps them per row (the official code runs on the sequence with newlines, so it may drop some);
* cosine similarities are float32 (the official code uses the model's dtype);
* a selected token is never picked again (the official greedy step could pick one again when
  every remaining token duplicates a selected one);
* every image of a batch is selected on its own (the official code handles batch size 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtcompress.batch import Plan, Plans, SelectedBatch, stacked
from vtcompress.budget import keep_count
from vtcompress.config import CompressionConfig, check_choice
from vtcompress.layout import Layout, view_positions
from vtcompress.methods.baselines import uniform_view_budgets
from vtcompress.registry import register_batch, register_method
from vtcompress.tokens import ImageTokens, ViewOutput, select_views


@dataclass
class DivPruneConfig(CompressionConfig):
    """DivPrune options (see the module docstring)."""

    allocation: str = "exact"  # "exact": floor(r N) | "paper": int(round(r N)), the official count
    scope: str = "image"  # "image" (official) | "view": the budget split across views first

    def validate(self) -> None:
        check_choice("allocation", self.allocation, ("exact", "paper"))
        check_choice("scope", self.scope, ("image", "view"))

    @classmethod
    def paper(cls, ratio: float = 0.098, **overrides) -> DivPruneConfig:
        """The official count (``SUBSET_RATIO=0.098``: 56 of 576 tokens) and scope."""
        return cls(ratio=ratio, **{"allocation": "paper", "scope": "image", **overrides})

    def kept_count(self, layout: Layout) -> int | None:
        """The plan's total: ``floor(r N)``, or the official ``int(round(r N))`` in paper mode."""
        return layout.num_tokens() if self.is_off else _plans(layout, self)["total"]


def budget(n: int, config: DivPruneConfig) -> int:
    """Tokens kept of ``n``."""
    if config.allocation == "paper":
        return min(n, max(1, int(round(config.ratio * n))))
    return keep_count(n, config.ratio)


def max_min_diverse(x: Tensor, k: int) -> Tensor:
    """Steps 1-3 of the module docstring for B sets of n tokens at once.

    Args:
        x: [B, n, D] features; k: tokens to select (0 <= k <= n).
    Returns:
        bool [B, n], True for the k selected tokens of each set.
    """
    b, n, _ = x.shape
    chosen = torch.zeros(b, n, dtype=torch.bool, device=x.device)
    if k == 0:
        return chosen
    if k >= n:
        return ~chosen
    unit = x.float()
    unit = unit / unit.norm(dim=-1, keepdim=True)
    dist = 1.0 - torch.bmm(unit, unit.transpose(1, 2))  # [B, n, n]
    rows = torch.arange(b, device=x.device)
    if n > 1:
        nearest_other = dist.kthvalue(2, dim=1).values  # per column: the 2nd-smallest distance
    else:
        nearest_other = dist[:, 0]
    pick = nearest_other.argmax(dim=1)  # first index among equals
    chosen[rows, pick] = True
    to_set = dist[rows, pick]  # [B, n] min distance of every token to the selected set (rows)
    for _ in range(k - 1):
        pick = to_set.masked_fill(chosen, float("-inf")).argmax(dim=1)
        chosen[rows, pick] = True
        to_set = torch.minimum(to_set, dist[rows, pick])
    return chosen


def _plan(layout: Layout, config: DivPruneConfig) -> Plan:
    """The image's valid token slots (long [n] into V*N, raster order per view) and its budget; with
    ``scope="view"``, each view's budget."""
    h, w = layout.view_grid
    positions = view_positions(layout)
    slots = torch.cat([p + v * h * w for v, p in enumerate(positions)])
    if config.scope == "view":
        if config.allocation == "paper":
            budgets = [budget(len(p), config) for p in positions]
        else:
            budgets = uniform_view_budgets(ImageTokens(torch.zeros(0), layout), config.ratio)
        return Plan(slots=slots, views=budgets, total=sum(budgets))
    return Plan(slots=slots, views=None, total=budget(len(slots), config))


_plans = Plans(_plan)


def _keep_mask(features: Tensor, layout: Layout, config: DivPruneConfig) -> Tensor:
    """bool [B, V*N] of the kept tokens of B images ([B, V, N, D] features of one layout)."""
    b, v, n, d = features.shape
    plan = _plans(layout, config)
    flat = features.reshape(b, v * n, d)
    keep = torch.zeros(b, v * n, dtype=torch.bool, device=features.device)
    if plan["views"] is None:
        slots = plan.on("slots", features.device)
        keep[:, slots] = max_min_diverse(flat[:, slots], plan["total"])
        return keep
    for view, (pos, k) in enumerate(zip(view_positions(layout), plan["views"])):
        slots = (pos + view * n).to(features.device)
        keep[:, slots] = max_min_diverse(flat[:, slots], k)
    return keep


@register_method("divprune", DivPruneConfig, "max-min diversity selection of projected tokens (DivPrune)")
def divprune(tokens: ImageTokens, config: DivPruneConfig) -> list[ViewOutput]:
    """One image; one ViewOutput per view (kept tokens in raster order)."""
    v, n, _ = tokens.features.shape
    keep = _keep_mask(tokens.features[None], tokens.layout, config).view(v, n).cpu()
    return select_views(tokens.features, [m.nonzero().squeeze(1) for m in keep])


@register_batch("divprune")
def divprune_batch(tokens: list[ImageTokens], config: DivPruneConfig) -> SelectedBatch:
    """:func:`divprune` for images of one layout: one distance matrix and one greedy loop for all."""
    layout, b = tokens[0].layout, len(tokens)
    features = stacked(tokens).features.view(b, *tokens[0].features.shape)
    keep = _keep_mask(features, layout, config).view(b, *features.shape[1:3])
    return SelectedBatch(layout, features, keep, _plans(layout, config)["total"])
