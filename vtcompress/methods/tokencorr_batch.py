"""Batched ``tokencorr`` (exact allocation, ``combine="inside"``): every image of one layout at once.

Same tokens as :func:`vtcompress.methods.tokencorr.tokencorr`, image by image, with nothing read
back to the host. What the per-image path computes view by view becomes, for all views of all
images together:

* density: one redundancy count over every view;
* budgets: the exact split (:func:`~vtcompress.methods.tokencorr_ops.exact_budgets`) as
  :func:`~vtcompress.budget.split_budget_rows`, one water-filling round per compressed view;
* IQR fences: the valid tokens of a view are as many as the layout says, so the quartiles are a
  sort and two gathers at positions fixed by the plan, interpolated as ``torch.quantile`` does;
* global tokens: a rank mask among the outliers when they exceed the budget;
* local draws: the per-view generator's uniforms are drawn on the host once per (layout, seed)
  (the j-th candidate of a view gets the j-th number, as in the per-image draw) and the
  exponential race is a rank mask.

Grouped layouts (DocOwl's 1x4 H-Reducer groups), adaptive allocation and the "union" /
"disjoint" combinations keep the per-image path: their counts depend on the scores, or (union's
cut-back) would need another ranking pass; the batched function returns None for them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vtcompress.batch import Plan, Plans, SelectedBatch, stacked
from vtcompress.budget import keep_count, split_budget_rows
from vtcompress.layout import Layout
from vtcompress.methods.tokencorr import TokenCorrConfig, view_generator
from vtcompress.methods.tokencorr_ops import cls_patch_probs, information_density, patch_keys
from vtcompress.registry import register_batch
from vtcompress.tokens import ImageTokens


def _plan(layout: Layout, config: TokenCorrConfig, num_views: int, n: int) -> Plan:
    """What the layout and options decide: valid tokens, which views are compressed, the exact
    split's caps, quartile positions and the per-view uniforms of the draws."""
    valid = torch.ones(num_views, n, dtype=torch.bool)
    if layout.has_crops:
        valid[1:] = layout.crop_valid_mask()
    units = valid.sum(1)
    flags = [config.compress_global or not layout.has_crops] + [True] * (num_views - 1)
    chosen = [v for v in range(num_views) if flags[v]]
    total = keep_count(int(units.sum()), config.ratio)
    whole = int(units.sum()) - int(units[chosen].sum())
    if total - whole < len(chosen):  # too small to leave any view whole: compress them all
        chosen = [v for v in range(num_views) if int(units[v]) > 0]
        whole = 0
    n_chosen = units[chosen]
    floor = torch.minimum(n_chosen, torch.ones_like(n_chosen))
    rest = max(0, total - whole - int(floor.sum()))
    caps = n_chosen - floor
    rest = min(rest, int(caps.sum()))
    # A share never exceeds ``rest``: when every open cap is above it, the first round is final.
    compressed = torch.zeros(num_views, dtype=torch.bool)
    compressed[chosen] = True
    # torch.quantile's linear interpolation over a view's valid scores, sorted first
    ranks = torch.tensor([0.25, 0.75], dtype=torch.float64)[None] * (units[:, None] - 1).clamp_min(0).double()
    below = ranks.long()
    # draws: view v's generator gives the j-th candidate the j-th uniform (n >= any candidate count)
    uniforms = torch.stack(
        [
            torch.rand(n, generator=view_generator(config.seed, v), dtype=torch.float64)
            for v in range(num_views)
        ]
    )
    return Plan(
        valid=valid,
        invalid=~valid,
        units=units,
        chosen=torch.tensor(chosen, dtype=torch.long),
        compressed=compressed,
        floor=floor,
        caps=caps,
        rest=rest,
        rounds=1 if bool((caps[caps > 0] > rest).all()) else len(chosen),
        below=below,
        above=ranks.ceil().long(),
        weight=ranks - below,
        has_units=units > 0,
        uniforms=uniforms,
        total=whole + int(floor.sum()) + rest,
    )


_plans = Plans(_plan)


@register_batch("tokencorr")
def tokencorr_batch(tokens: list[ImageTokens], config: TokenCorrConfig) -> SelectedBatch | None:
    """:func:`~vtcompress.methods.tokencorr.tokencorr` for images of one layout (see the module
    docstring for which configs; None for the others)."""
    layout = tokens[0].layout
    if config.allocation != "exact" or config.combination != "inside" or tuple(layout.patch_group) != (1, 1):
        return None
    low, deep = config.resolve_layers(tokens[0].num_layers)
    if not {low, deep} <= set(tokens[0].qk):
        return None  # the per-image path names the missing layers
    b, (v, n) = len(tokens), tokens[0].features.shape[:2]
    plan = _plans(layout, config, v, n)
    batch = stacked(tokens)
    dev = batch.features.device
    valid = plan.on("valid", dev)  # [V, N]
    valid_all = valid.repeat(b, 1)  # [B*V, N]
    density, redundant = information_density(
        patch_keys(batch.qk[low], config.key_heads), config.tau, config.min_similar, valid_all
    )
    p_low = cls_patch_probs(batch.qk[low]).view(b, v, n)
    p_deep = cls_patch_probs(batch.qk[deep]).view(b, v, n).double()
    budgets = _budgets(density.view(b, v), plan, dev)  # [B, V]

    # IQR outliers among each view's valid tokens (invalid ones sort last as +inf)
    ordered = p_deep.masked_fill(~valid, float("inf")).sort(dim=-1).values
    below = ordered.gather(-1, plan.on("below", dev).expand(b, v, 2))
    above = ordered.gather(-1, plan.on("above", dev).expand(b, v, 2))
    q1, q3 = torch.lerp(below, above, plan.on("weight", dev)).unbind(-1)
    fence = (q3 + config.iqr_k * (q3 - q1))[..., None]
    outliers = (p_deep > fence) & valid & plan.on("has_units", dev)[:, None]
    # global tokens: the budget's highest deep scores among the outliers
    glob_rank = p_deep.masked_fill(~outliers, float("-inf")).argsort(dim=-1, descending=True, stable=True)
    keep_glob = outliers & (glob_rank.argsort(dim=-1) < budgets[..., None])
    n_local = (budgets - keep_glob.sum(-1))[..., None]
    # local draws among the other valid tokens
    candidates = valid & ~outliers
    p = p_low.double().masked_fill(~candidates, 0)
    if config.sampling == "sample":
        mass = p.sum(-1, keepdim=True)
        p = torch.where(mass > 0, p / mass, 1.0)
        j = (candidates.cumsum(-1) - 1).clamp_min(0)  # each candidate's place among its view's
        u = plan.on("uniforms", dev).expand(b, v, n).gather(-1, j)
        key = (-torch.log1p(-u) / p).masked_fill(~candidates, float("nan"))  # NaN sorts last
        order = key.argsort(dim=-1, stable=True)
    else:
        order = p.masked_fill(~candidates, float("-inf")).argsort(dim=-1, descending=True, stable=True)
    keep_local = candidates & (order.argsort(dim=-1) < n_local)
    compressed = plan.on("compressed", dev)[:, None]
    keep = torch.where(compressed, keep_glob | keep_local, valid)
    features = batch.features.view(b, v, n, -1)
    info = _Info(plan, density.view(b, v), redundant.view(b, v, n), budgets, keep_glob)
    return SelectedBatch(layout, features, keep, plan["total"], info=info)


def _budgets(density: Tensor, plan: Plan, dev: torch.device) -> Tensor:
    """[B, V] long: each view's n_c (all its valid tokens when left whole), as ``exact_budgets``."""
    b = density.shape[0]
    chosen = plan.on("chosen", dev)
    units = plan.on("units", dev)
    weights = density[:, chosen].double() * units[chosen].double()
    extra = split_budget_rows(weights, plan.on("caps", dev), plan["rest"], plan["rounds"])
    return units.expand(b, -1).scatter(1, chosen.expand(b, -1), plan.on("floor", dev) + extra)


class _Info:
    """The per-view stats of the per-image path (``ViewSelection.info``), built when read."""

    def __init__(self, plan: Plan, density: Tensor, redundant: Tensor, budgets: Tensor, glob: Tensor) -> None:
        self.plan, self.density, self.redundant, self.budgets, self.glob = (
            plan,
            density,
            redundant,
            budgets,
            glob,
        )

    def __call__(self, row: int, keep: Tensor) -> list[dict]:
        """Per view of image ``row``, from its CPU keep mask [V, N]."""
        plan = self.plan
        density, redundant = self.density[row].tolist(), self.redundant[row].sum(-1).tolist()
        budgets, glob = self.budgets[row].tolist(), self.glob[row].cpu()
        device = self.density.device
        empty = torch.empty(0, dtype=torch.long, device=device)
        out = []
        for v in range(keep.shape[0]):
            compressed = bool(plan["compressed"][v])
            kept = keep[v].nonzero().squeeze(1)
            g = glob[v].nonzero().squeeze(1) if compressed else None
            out.append(
                {
                    "density": density[v],
                    "redundant": int(redundant[v]),
                    "tokens": int(plan["units"][v]),
                    "budget": budgets[v] if compressed else int(plan["units"][v]),
                    "kept": int(kept.numel()),
                    "global": g.to(device) if compressed else empty,
                    "sampled": kept[~glob[v][kept]].to(device) if compressed else empty,
                    "compressed": compressed,
                }
            )
        return out
