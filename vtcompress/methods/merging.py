"""What PiToMe and ToMe share as LLaVA-NeXT methods: options, budgets, the two placements.

Placements (``placement``):

* ``"projector"`` (default): merge each view's tokens AFTER the projector, before packing.
  The metric is the CLIP hidden state the features come from (``metric="vision"``) or the
  projected features themselves (``"projected"``); the projected features are merged with the
  same plan. Only valid (unpadded) tokens take part, so newlines and the letterbox stay exactly
  as LLaVA-NeXT packs them. Budget: an image keeps ``floor(ratio * N)`` tokens (N its visual
  tokens, newlines excluded), split across views in proportion to their sizes by largest
  remainders -- the same rule as the baselines and GlobalCom²'s exact mode. A view is merged in
  ``max(steps, ceil(log2(n / k)))`` steps (a step at most halves) on a geometric schedule.
* ``"tower"``: merge after CLIP encoder layers, as PiToMe's LLaVA code does (see
  :mod:`vtcompress.integrations.clip_merge`); the tower gets cheaper too. Merges run after layers
  ``0 .. F-1``, F the layer whose input LLaVA uses (23 of 24 for CLIP ViT-L: hidden state -2).
  Every view -- padded crops included, the tower sees their full 24x24 grid -- ends with
  ``K = floor(ratio * 576)`` tokens (``schedule="exact"``: a geometric count schedule over the F
  layers, more than one step in a layer only when F steps cannot reach K), or with the official
  constant per-layer keep ratio (``schedule="paper"``: ``r = floor(T - T * rho)`` each layer, rho
  = ``layer_ratio`` or ``ratio ** (1 / F)``). Afterwards each merged token stands at its first
  VALID source patch in raster order; tokens made only of letterbox padding are dropped, so on
  padded crops the count is data-dependent (at most K).

Either way every kept token carries ``sizes`` (original valid patches it holds) and ``sources``
(their positions), and merged tokens are packed in spatial order with LLaVA-NeXT's newlines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vtcompress.budget import keep_count
from vtcompress.config import HIDDEN_STATES, TOWER_MERGE, CompressionConfig, check_choice
from vtcompress.layout import NEWLINE_POLICIES, view_positions
from vtcompress.merge import (
    MERGE_MODES,
    MergePlan,
    exact_token_schedule,
    initial_owner,
    merge_owner,
    merge_sizes,
    merge_tokens,
    paper_token_schedule,
)
from vtcompress.methods.baselines import uniform_view_budgets
from vtcompress.tokens import ImageTokens, ViewOutput

PLACEMENTS = ("projector", "tower")
SCHEDULES = ("exact", "paper")
METRICS = ("vision", "projected")


@dataclass
class TokenMergingConfig(CompressionConfig):
    """Options shared by ``pitome`` and ``tome`` (see the module docstring).

    ratio: final kept fraction of visual tokens. placement: "projector" | "tower".
    schedule: "exact" | "paper" (tower only). layer_ratio: the paper schedule's per-layer keep
    ratio (None: ``ratio ** (1 / F)``). merge: "weighted" (size-weighted mean) | "mean" (plain
    mean, PiToMe's official LLaVA path). proportional_attention: tower only, add log(size) to
    key logits. steps: projector placement, the least number of merge steps per view.
    metric: projector placement, "vision" (CLIP hidden state) | "projected". newline: packing
    policy ("unpadded" = stock LLaVA-NeXT).
    """

    placement: str = "projector"
    schedule: str = "exact"
    layer_ratio: float | None = None
    merge: str = "weighted"
    proportional_attention: bool = False
    steps: int = 4
    metric: str = "vision"
    newline: str = "unpadded"

    def validate(self) -> None:
        check_choice("placement", self.placement, PLACEMENTS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("merge", self.merge, MERGE_MODES)
        check_choice("metric", self.metric, METRICS)
        check_choice("newline", self.newline, NEWLINE_POLICIES)
        if self.layer_ratio is not None and not 0.5 <= self.layer_ratio <= 1.0:
            raise ValueError(
                f"layer_ratio must be in [0.5, 1] (a layer at most halves), got {self.layer_ratio}"
            )
        if self.placement == "projector" and (self.schedule == "paper" or self.proportional_attention):
            raise ValueError(
                "schedule='paper' and proportional_attention act inside the vision tower: "
                "use placement='tower' with them"
            )
        if self.layer_ratio is not None and self.schedule != "paper":
            raise ValueError("layer_ratio is the paper schedule's per-layer keep ratio: set schedule='paper'")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")

    def capture_layers(self, score_layer: int, num_layers: int) -> tuple[set[int], set[int]]:
        if self.placement == "projector" and self.metric == "vision":
            return set(), {score_layer}
        return set(), set()

    def content_dependence(self) -> str:
        # The tower merges whole views (letterbox padding included) by its own per-layer schedule:
        # the count is not the exact budget rule of the unpadded layout.
        return "placement='tower' (use placement='projector')" if self.placement == "tower" else ""

    def requirements(self, score_layer: int, num_layers: int) -> dict[str, str]:
        if self.placement == "tower":
            return {TOWER_MERGE: "use placement='projector'"}
        if self.metric == "vision":
            return {HIDDEN_STATES: "use metric='projected'"}
        return {}

    # --- what each method defines -----------------------------------------------------------
    def plan(self, metric: Tensor, r: int, layer: int, num_layers: int, class_token: bool) -> MergePlan:
        """One merge step. metric: [B, 1+T, D] with ``class_token`` else [B, T, D]; ``layer`` is
        the tower layer whose output is merged (for the projector placement: the last merge
        layer, i.e. ``score_layer - 1``)."""
        raise NotImplementedError

    def counts_cls(self, layer: int) -> bool:
        """Whether the official code counts the [CLS] in T when computing r at ``layer``."""
        return False

    # --- schedules ----------------------------------------------------------------------------
    def tower_schedule(self, patches: int, merge_layers: int) -> list[list[int]]:
        """Patch-token counts after each merge step, per merge layer (see the module docstring)."""
        if self.schedule == "paper":
            rho = self.layer_ratio if self.layer_ratio is not None else self.ratio ** (1 / merge_layers)
            flags = [self.counts_cls(layer) for layer in range(merge_layers)]
            return [[c] for c in paper_token_schedule(patches, rho, merge_layers, flags)]
        keep = keep_count(patches, self.ratio)
        steps = max(merge_layers, math.ceil(math.log2(patches / keep)) if keep < patches else 0)
        counts = iter(exact_token_schedule(patches, keep, steps))
        per_layer = [
            steps // merge_layers + int(layer < steps % merge_layers) for layer in range(merge_layers)
        ]
        return [[next(counts) for _ in range(n)] for n in per_layer]


# --- projector placement -------------------------------------------------------------------------
def merge_view(
    features: Tensor, metric: Tensor, keep: int, config: TokenMergingConfig, layer: int, num_layers: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Merge one view's valid tokens down to ``keep``.

    Args:
        features: [n, D] projected features; metric: [n, M] (same tokens, same order).
    Returns:
        merged features [keep, D], sizes long [keep], owner long [n] (token of each input; -1
        for every input when ``keep`` is 0).
    """
    n = features.shape[0]
    if keep == 0:  # a view whose share of a tiny budget is nothing: every token goes
        empty = torch.zeros(0, dtype=torch.long, device=features.device)
        return features[:0], empty, torch.full((n,), -1, dtype=torch.long, device=features.device)
    x, m = features[None], metric[None]
    sizes, owner = None, initial_owner(1, n, features.device)
    if keep < n:
        steps = max(config.steps, math.ceil(math.log2(n / keep)))
        for target in exact_token_schedule(n, keep, steps):
            plan = config.plan(m, m.shape[1] - target, layer, num_layers, class_token=False)
            x = merge_tokens(x, plan, sizes, config.merge)
            m = merge_tokens(m, plan, sizes, config.merge)
            sizes, owner = merge_sizes(plan, sizes), merge_owner(plan, owner)
    if sizes is None:
        sizes = torch.ones(1, n, dtype=torch.long, device=features.device)
    return x[0], sizes[0], owner[0]


def _view_output(features: Tensor, owner: Tensor, positions: Tensor) -> ViewOutput:
    """Merged tokens of one view in raster order of their first source.

    features: [K, D]; owner: long [n] token index of each valid patch; positions: long [n] the
    grid positions of those patches (ascending). Tokens holding no valid patch are dropped.
    The bookkeeping (a few hundred integers) runs on the CPU: one copy instead of a GPU launch
    per token.
    """
    k = features.shape[0]
    if k == 0:
        return ViewOutput(positions.cpu()[:0], features, torch.zeros(0, dtype=torch.long), [])
    owner_cpu, pos_cpu = owner.cpu(), positions.cpu()
    n = owner_cpu.shape[0]
    counts = torch.bincount(owner_cpu, minlength=k)
    first = torch.full((k,), n, dtype=torch.long).scatter_reduce_(0, owner_cpu, torch.arange(n), "amin")
    present = (counts > 0).nonzero().squeeze(1)
    order = present[torch.argsort(first[present])]
    # positions ascend, so a stable sort by owner keeps each token's sources in raster order
    groups = torch.split(pos_cpu[torch.argsort(owner_cpu, stable=True)], counts.tolist())
    sources = [groups[t] for t in order.tolist()]
    return ViewOutput(
        positions=pos_cpu[first[order]],
        features=features.index_select(0, order.to(features.device)),
        sizes=counts[order],
        sources=sources,
    )


def compress_projector(tokens: ImageTokens, config: TokenMergingConfig) -> list[ViewOutput]:
    """Projector placement: merge every view's valid tokens to its share of ``floor(ratio N)``."""
    layer = max(tokens.score_layer - 1, 0)
    if config.metric == "vision":
        if tokens.score_layer not in tokens.hidden:
            raise ValueError(
                f"metric='vision' needs the vision hidden state {tokens.score_layer}, which this model's "
                "adapter did not capture; use metric='projected'"
            )
        metric = tokens.hidden[tokens.score_layer][:, 1:]  # drop [CLS]
    else:
        metric = tokens.features
    outs = []
    for v, (pos, keep) in enumerate(
        zip(view_positions(tokens.layout), uniform_view_budgets(tokens, config.ratio))
    ):
        feats, _, owner = merge_view(
            tokens.features[v, pos], metric[v, pos], keep, config, layer, tokens.num_layers
        )
        outs.append(_view_output(feats, owner, pos))
    return outs


# --- tower placement -----------------------------------------------------------------------------
def compress_tower_output(tokens: ImageTokens) -> list[ViewOutput]:
    """Tower placement: turn the tower's merged tokens into per-view outputs.

    ``tokens.features`` is [V, K, D] and ``tokens.sources`` long [V, side*side] (token of each
    original patch). Each token stands at its first valid source patch; padding-only tokens drop.
    """
    if tokens.sources is None:
        raise ValueError(
            "placement='tower' needs an adapter that merges inside the vision tower (LLaVA-NeXT); "
            "this one did not, so use placement='projector'"
        )
    outs = []
    for v, pos in enumerate(view_positions(tokens.layout)):
        outs.append(_view_output(tokens.features[v], tokens.sources[v, pos], pos))
    return outs


def compress_merging(tokens: ImageTokens, config: TokenMergingConfig) -> list[ViewOutput]:
    """The registered compress function of ``pitome`` and ``tome``."""
    if config.placement == "tower":
        return compress_tower_output(tokens)
    return compress_projector(tokens, config)
